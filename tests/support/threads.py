"""Threads released together, with a timeout that fails a hung test instead of hanging it."""

import threading
import time


def run_threads(count, target, timeout=30, pass_barrier=False):
    """Run `count` threads released together and return their results.

    target(index) runs once every thread has started (or target(index, barrier),
    with `pass_barrier`, for tests that line threads up again themselves). A thread
    still running after `timeout` seconds fails the test instead of hanging it, and
    the first error a thread raised is raised here.
    """
    barrier = threading.Barrier(count, timeout=timeout)
    results, errors = [None] * count, []

    def guarded(index):
        try:
            if pass_barrier:
                results[index] = target(index, barrier)
            else:
                barrier.wait()
                results[index] = target(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = sum(thread.is_alive() for thread in threads)
    assert hung == 0, f"{hung} threads still running after {timeout}s (deadlock or livelock?)"
    if errors:
        raise errors[0]
    return results
