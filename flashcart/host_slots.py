"""A bound on work in flight on this host, across its worker processes.

Each slot is a lock file held with flock(2) while the work runs. Every process and
thread opens its own descriptor, so slots exclude one another however the workers
were started, and the kernel frees the slot of a process that dies holding it: a
worker killed mid-request can never leak one.
"""

import contextlib
import fcntl
import os
import stat
import tempfile
import time

# flock(2) cannot wait for any one of several locks, so a waiter looks again this often.
POLL_SECONDS = 0.005


class NoSlotFree(Exception):
    """Every slot is taken at this moment."""


class HostSlots:
    """At most `count` holders at once among every process on this host that names
    the same `name` (and runs as the same user)."""

    def __init__(self, name, count, directory=None):
        if count < 1:
            raise ValueError("a host needs at least one slot")
        self.count = count
        root = directory or os.path.join(tempfile.gettempdir(), f"flashcart-{os.getuid()}")
        self._paths = [os.path.join(root, f"{name}.{n}.lock") for n in range(count)]
        self._root = root
        self._checked = False

    def _private_directory(self):
        if self._checked:
            return
        os.makedirs(self._root, mode=0o700, exist_ok=True)
        info = os.lstat(self._root)
        # In a shared /tmp, someone else's directory (or a link to one) must not be used.
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise PermissionError(f"{self._root} is not a directory owned by this user")
        self._checked = True

    def _open(self, path):
        self._private_directory()
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)

    def _try_each(self):
        for path in self._paths:
            descriptor = self._open(path)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            return descriptor
        return None

    def take(self, wait_seconds=0.0):
        """A free slot, looked for again every POLL_SECONDS for up to `wait_seconds`;
        NoSlotFree if none came free. Give it back with `release()`."""
        deadline = time.monotonic() + wait_seconds
        while (descriptor := self._try_each()) is None:
            if time.monotonic() >= deadline:
                raise NoSlotFree()
            time.sleep(POLL_SECONDS)
        return Slot(descriptor)

    @contextlib.contextmanager
    def held(self, wait_seconds=0.0):
        """Hold one free slot for the duration (see `take`)."""
        slot = self.take(wait_seconds)
        try:
            yield
        finally:
            slot.release()


class Slot:
    """One slot held; the kernel frees it with the process if `release` never runs."""

    def __init__(self, descriptor):
        self._descriptor = descriptor

    def release(self):
        if self._descriptor is not None:
            os.close(self._descriptor)  # releases the lock
            self._descriptor = None
