"""Password hashing on threads of low CPU priority (flashcart/auth/hashing.py)."""

import os
import signal
import threading

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from flashcart.auth.hashing import Hasher

CHEAP = {"time_cost": 1, "memory_kib": 1024, "parallelism": 1}


def _own_niceness():
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.fixture
def checked_on(monkeypatch):
    """(thread id, niceness) of each thread argon2's verify ran on while the test ran."""
    seen = []
    verify = PasswordHasher.verify

    def spy(self, stored, password):
        seen.append((threading.get_native_id(), _own_niceness()))
        return verify(self, stored, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    return seen


def test_checks_run_on_a_thread_of_their_own_made_nicer_and_the_caller_keeps_its_priority(
    checked_on,
):
    before = _own_niceness()
    hasher = Hasher(**CHEAP, niceness=7)

    stored = hasher.hash("correct horse")
    assert hasher.verify(stored, "correct horse")
    with pytest.raises(VerificationError):
        hasher.verify(stored, "wrong horse")

    (thread, niceness), again = checked_on
    assert again == (thread, niceness)  # the same thread both times
    assert thread != threading.get_native_id()
    assert niceness == min(19, before + 7)
    assert _own_niceness() == before


def test_with_niceness_zero_the_caller_checks_on_its_own_thread(checked_on):
    hasher = Hasher(**CHEAP, niceness=0)
    assert hasher.verify(hasher.hash("correct horse"), "correct horse")
    assert checked_on == [(threading.get_native_id(), _own_niceness())]


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
