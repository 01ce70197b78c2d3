"""The workers beside the API: the sweeper and the webhook deliverer, as loops.

`flask sweep --every 5` and `flask deliver --every 1` run these loops as processes of
their own. On the embedded in-memory stores no other process can reach the data, so
the serving process runs the same loops in threads (`bootstrap.start_embedded_workers`).
"""

import logging
import time

import pymongo.errors

from flashcart.checkout import recovery
from flashcart.redis_cluster import UNAVAILABLE as REDIS_UNAVAILABLE
from flashcart.webhooks import deliverer

log = logging.getLogger("flashcart.companions")

# The stores being away: a loop logs them in one line, and a single pass's command
# turns them into a plain error message (anything else is a bug: its traceback).
SWEEP_ERRORS = (*REDIS_UNAVAILABLE, pymongo.errors.ConnectionFailure)
DELIVER_ERRORS = (pymongo.errors.PyMongoError,)
# The embedded threads' intervals: what compose runs the commands with.
SWEEP_EVERY = 5.0
DELIVER_EVERY = 1.0


def sweep_pass():
    """One sweeper pass, then its report to /metrics; counts of what it did."""
    done = recovery.sweep()
    recovery.report_pass()
    return done


def deliver_pass(threads=None):
    """One deliverer pass over every active endpoint; counts of the outcomes."""
    return deliverer.run_pass(threads=threads)


def summary(name, done):
    """`name: key=n, ...` (or `name: idle`), as the commands print a pass."""
    return f"{name}: " + (", ".join(f"{k}={v}" for k, v in sorted(done.items())) or "idle")


def run(name, one_pass, *, every, errors, report, stop=None):
    """Run `one_pass` once (its errors raised), or with `every` one pass every `every`
    seconds until `stop` (a threading.Event) is set, if ever. A loop outlives a failed
    pass (a store away, a transaction kept busy, a bug in one step): it logs it, an
    error in `errors` in one line, and tries again. `report` gets each pass's counts."""
    while True:
        try:
            report(one_pass())
        except errors as error:
            if not every:
                raise
            log.error("%s failed, retrying: %s", name, error)
        except Exception:
            if not every:
                raise
            log.exception("%s failed, retrying", name)
        if not every:
            return
        if stop is None:
            time.sleep(every)
        elif stop.wait(every):
            return
