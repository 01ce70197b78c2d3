"""Password hashing on threads of low CPU priority (flashcart/auth/hashing.py)."""

import os
import signal
import threading

import pytest
from argon2.exceptions import VerificationError

from flashcart.auth.hashing import Hasher

CHEAP = {"time_cost": 1, "memory_kib": 1024, "parallelism": 1}


def _checking_threads():
    return [t for t in threading.enumerate() if t.name.startswith("password-checks")]


def _niceness(thread):
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


def test_checks_run_on_threads_of_their_own_made_nicer_and_the_caller_keeps_its_priority():
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    others = set(_checking_threads())
    hasher = Hasher(**CHEAP, niceness=7)

    stored = hasher.hash("correct horse")
    assert hasher.verify(stored, "correct horse")
    with pytest.raises(VerificationError):
        hasher.verify(stored, "wrong horse")

    ours = set(_checking_threads()) - others
    assert [_niceness(t) for t in ours] == [min(19, before + 7)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_with_niceness_zero_the_caller_checks_on_its_own_thread():
    hasher = Hasher(**CHEAP, niceness=0)
    threads = {t.ident for t in _checking_threads()}
    assert hasher.verify(hasher.hash("correct horse"), "correct horse")
    assert {t.ident for t in _checking_threads()} == threads


def test_a_process_forked_after_a_check_checks_on_threads_of_its_own():
    hasher = Hasher(**CHEAP, niceness=5)
    stored = hasher.hash("correct horse")  # the parent's pool exists now
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        signal.alarm(20)  # a check sent to the parent's (absent) threads would never end
        try:
            ok = hasher.verify(stored, "correct horse")
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
