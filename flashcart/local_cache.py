"""A process's own bounded, time-limited memory, emptied in a forked child.

The one per-process cache helper (engine hints, verified tokens). Whatever a
process remembers here describes moments a forked gunicorn worker never saw, so
every store registered with `forget_at_fork` starts empty in the child. A leaf:
it imports nothing from flashcart.
"""

import os
import time
import weakref

MAX_ENTRIES = 10_000

# Every store alive in this process, emptied in a forked child (below).
_FORGOTTEN_AT_FORK = weakref.WeakSet()


def forget_at_fork(store):
    """Have `store.clear()` called in a forked child; returns `store`."""
    _FORGOTTEN_AT_FORK.add(store)
    return store


class LocalCache:
    """A bounded map of this process's entries, each kept with when it was put.

    An entry older than `max_age` seconds (or the `max_age` a read names) is gone.
    Full (`max_entries`) means forget everything: entries are cheap to learn again,
    and a working set is small. Each step is one dict operation, atomic under the
    GIL, so a gthread worker's threads share one without a lock: a race may lose an
    entry, never corrupt one.
    """

    def __init__(self, max_age=None, max_entries=MAX_ENTRIES):
        self.max_age = max_age
        self.max_entries = max_entries
        self._entries = {}
        forget_at_fork(self)

    def get(self, key, max_age=None):
        """The value put under `key` if it is younger than `max_age` (else the
        cache's own), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        limit = self.max_age if max_age is None else max_age
        if limit is not None and time.monotonic() - entry[0] >= limit:
            return None
        return entry[1]

    def age(self, key):
        """Seconds since `key` was put, or None if it is absent or past `max_age`."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = time.monotonic() - entry[0]
        if self.max_age is not None and age >= self.max_age:
            self._entries.pop(key, None)
            return None
        return age

    def put(self, key, value=True):
        if len(self._entries) >= self.max_entries and key not in self._entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), value)

    def replace(self, key, value):
        """Put `value` in place of `key`'s, as old as the entry it replaces (nothing if
        there is none)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (entry[0], value)

    def pop(self, key):
        self._entries.pop(key, None)

    def clear(self):
        self._entries.clear()

    def __len__(self):
        return len(self._entries)


def _forget_in_child():
    for store in list(_FORGOTTEN_AT_FORK):
        store.clear()


os.register_at_fork(after_in_child=_forget_in_child)
