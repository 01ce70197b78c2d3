"""The retry loop every change to a sale runs in, and what an engine is built from."""

import random
import time

import redis

from flashcart import deadlines
from flashcart.errors import Busy
from flashcart.sales.engine.hints import EngineHints
from flashcart.sales.engine.keys import DEFAULT_STRIPES, MAX_STRIPES

# A transaction body's answer when what it read says to choose again at once (other
# stripes, or after returning expired holds): not contention, so no backoff and no
# attempt used. Bounded all the same, by MAX_STRIPES looks.
LOOK_AGAIN = object()


class Transactions:
    """An engine's Redis client, settings and hints, and its transaction loop."""

    def __init__(
        self,
        redis_client,
        hold_seconds=600,
        max_attempts=64,
        clock=time.time,
        on_retry=None,
        stripes=DEFAULT_STRIPES,
        placed_orders=None,
        hints=None,
        ack_replicas=0,
        ack_timeout_ms=250,
    ):
        if not 1 <= stripes <= MAX_STRIPES:
            raise ValueError(f"stripes must be 1..{MAX_STRIPES}")
        if ack_replicas < 0 or (ack_replicas and ack_timeout_ms <= 0):
            # WAIT 0 would block until the replicas answer, however long that takes.
            raise ValueError("ack_replicas must be >= 0, and ack_timeout_ms > 0 with replicas")
        self.redis = redis_client
        self.stripes = stripes
        self.hold_seconds = hold_seconds
        self.max_attempts = max_attempts
        self.clock = clock
        # Called once per WatchError retry (metrics, benchmarks).
        self.on_retry = on_retry
        # (product id, reservation ids) -> those whose order was placed; asked (of
        # MongoDB) before expired holds' units go back on sale.
        self.placed_orders = placed_orders
        # The app's hints, which outlive this engine (a request's); without, its own.
        self.hints = EngineHints() if hints is None else hints
        # Replicas that must have a reservation (WAIT, within ack_timeout_ms) before
        # it counts as made; 0 = the primary's word (docs/operations.md).
        self.ack_replicas = ack_replicas
        self.ack_timeout_ms = ack_timeout_ms

    def _transaction(self, body, product_id):
        """Run `body(pipe)` under WATCH/MULTI with bounded, jittered retries.

        `body` WATCHes what it reads, checks it, then queues writes after
        `pipe.multi()` (or returns LOOK_AGAIN). A WatchError means another client
        changed a watched key: wait a little (full jitter, growing) and run the whole
        body again. Afterwards this process's remembered stock read is stale. Nothing
        is sent past the request's deadline (flashcart/deadlines.py).
        """
        attempt = looks = 0
        while attempt < self.max_attempts and looks <= MAX_STRIPES:
            # transaction=True: RedisCluster's pipelines default to no MULTI/WATCH.
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    result = body(pipe)
                    if len(pipe):  # writes the body queued (on any kind of pipeline)
                        deadlines.check()
                        pipe.execute()
                except redis.WatchError:
                    self._back_off(attempt)
                    attempt += 1
                    continue
            if result is LOOK_AGAIN:
                looks += 1
                continue
            self.hints.sale_changed(product_id, units_may_be_back=False)
            return result
        raise Busy()

    def _back_off(self, attempt):
        """After a conflict: another stripe next time, and a growing, jittered pause."""
        self.hints.probe.draw()
        if self.on_retry:
            self.on_retry()
        time.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.02)))

    def _units_may_be_back(self, changed, product_id):
        """After a transaction that may bring units back or change the sale's status."""
        if changed:
            self.hints.sale_changed(product_id)
        return changed

    def _placed(self, product_id, reservation_ids):
        if self.placed_orders is None or not reservation_ids:
            return set()
        return self.placed_orders(product_id, reservation_ids)
