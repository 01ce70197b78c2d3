"""Password hashing on threads of low CPU priority.

An argon2id check is some 20-25 ms of pure CPU, and in the minutes before a drop a
storm of logins would take the cores from the reservations being made on the same
host. So each process hashes and verifies on threads of its own whose niceness is
raised (PASSWORD_CHECK_NICENESS): the kernel runs every other thread of the host
first and gives password checks the CPU they leave idle. argon2 releases the GIL
while it works, so the request's thread only waits for the answer.
"""

import concurrent.futures
import os
import threading

from argon2 import PasswordHasher


def _lower_priority(niceness):
    # On Linux a thread's niceness is its own: only these threads are lowered.
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class Hasher:
    """argon2id `hash`, `verify` and `check_needs_rehash`, with the CPU-bound two run
    at `niceness` (0: on the caller's thread, as PasswordHasher itself does)."""

    def __init__(self, *, time_cost, memory_kib, parallelism, niceness=0, threads=1):
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self.niceness = niceness if hasattr(os, "setpriority") else 0
        self._threads = threads
        self._pool = None
        self._pool_pid = None
        self._lock = threading.Lock()

    def _executor(self):
        # Threads do not survive fork: a process forked after the first check (a
        # gunicorn worker from a preloading master) starts its own.
        with self._lock:
            if self._pool_pid != os.getpid():
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self._threads,
                    thread_name_prefix="password-checks",
                    initializer=_lower_priority,
                    initargs=(self.niceness,),
                )
                self._pool_pid = os.getpid()
            return self._pool

    def _run(self, work, *args):
        if not self.niceness:
            return work(*args)
        return self._executor().submit(work, *args).result()

    def hash(self, password):
        return self._run(self._hasher.hash, password)

    def verify(self, stored, password):
        """True, or argon2's VerificationError / InvalidHashError."""
        return self._run(self._hasher.verify, stored, password)

    def check_needs_rehash(self, stored):
        return self._hasher.check_needs_rehash(stored)
