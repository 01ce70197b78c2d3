"""What a process remembers between requests to spare Redis work: hints, never truth.

A hint may be wrong the moment it is read (another worker changed the sale). The
engine uses one only to answer as Redis would moments later (a sold-out mark, a
stock read a fraction of a second old) or to choose where to look first (stripes
seen with units, the per-thread probe). So every hint is bounded, ages out, belongs
to one app (`EngineHints`, which the app hands to each Inventory it builds) and
starts empty in a forked worker: the probe must differ per worker, and the rest
describes moments the child never saw.
"""

import random
import threading

from flashcart.local_cache import MAX_ENTRIES, LocalCache, forget_at_fork

# A read that found a product sold out is trusted for SOLD_OUT_TRUST_SECONDS; until
# SOLD_OUT_HINT_SECONDS one plain read confirms it; after that it is forgotten.
SOLD_OUT_TRUST_SECONDS = 0.1
SOLD_OUT_HINT_SECONDS = 1.0


class StripeProbe:
    """Per thread: a random number that picks the stripe a reservation tries first.

    It is kept while transactions go through and drawn again after a conflict, so
    concurrent clients settle on different stripes instead of meeting by chance on
    every try (the way Java's LongAdder spreads threads over its cells).
    """

    def __init__(self):
        self._local = threading.local()
        forget_at_fork(self)

    def value(self):
        value = getattr(self._local, "value", None)
        return self.draw() if value is None else value

    def draw(self):
        self._local.value = random.getrandbits(32)
        return self._local.value

    def clear(self):
        # A thread's locals survive fork: a forked worker draws its own.
        self._local = threading.local()


class EngineHints:
    """One app's hints, kept across its requests (each Inventory it builds gets them)."""

    def __init__(
        self,
        sold_out_trust_seconds=SOLD_OUT_TRUST_SECONDS,
        sold_out_hint_seconds=SOLD_OUT_HINT_SECONDS,
        max_entries=MAX_ENTRIES,
    ):
        self.sold_out_trust_seconds = sold_out_trust_seconds
        # Product id -> True, put when a read found it sold out (refuse_if_sold_out).
        self.sold_out = LocalCache(sold_out_hint_seconds, max_entries)
        # Product id -> the stripes last seen with units, to choose from first.
        self.stripes_with_units = LocalCache(None, max_entries)
        # Product id -> (status, available) of its last stock read (`available`'s
        # max_age); a transaction on the product through these hints drops it.
        self.stock_reads = LocalCache(None, max_entries)
        self.probe = StripeProbe()

    def marked_sold_out(self, product_id):
        """Whether a read found the product sold out lately (Inventory.refuse_if_sold_out
        says what that mark is worth now)."""
        return self.sold_out.age(product_id) is not None

    def pick_stripe(self, product_id, count):
        """The stripe to try first: this thread's probe among those seen with units."""
        probe = self.probe.value()
        seen = self.stripes_with_units.get(product_id) or ()
        candidates = [i for i in seen if i < count]
        return candidates[probe % len(candidates)] if candidates else probe % count

    def remember_stock(self, product_id, stock):
        """After reading every stripe: where the units are."""
        self.stripes_with_units.put(product_id, [i for i, units in enumerate(stock) if units > 0])

    def sale_changed(self, product_id, units_may_be_back=True):
        """After a change to the sale through this process: its reads are stale."""
        self.stock_reads.pop(product_id)
        if units_may_be_back:
            self.sold_out.pop(product_id)
