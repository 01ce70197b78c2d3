"""The values the engine reads from Redis and hands back, and the rules on them."""

import random
from dataclasses import dataclass

from flashcart.errors import DomainError
from flashcart.sales.engine.errors import SaleEnded, SaleNotOpen, SaleNotStarted
from flashcart.sales.engine.keys import ENDED, LIVE

# The sale hash's fields a reservation or a stock read needs, in this order.
META = ("status", "limit", "stripes", "opens_at", "closes_at")


@dataclass(frozen=True)
class Hold:
    id: str
    product_id: str
    user_id: str
    quantity: int
    expires_at: float


@dataclass(frozen=True)
class SaleSnapshot:
    """What Redis says about one product's sale right now."""

    status: str | None
    available: int
    held: int
    sold: int
    limit: int


@dataclass(frozen=True)
class SalePlan:
    """The durable truth a sale's Redis state is built from."""

    status: str
    limit: int
    total: int
    sold_by_user: dict
    opens_at: float | None = None
    closes_at: float | None = None

    @property
    def sold(self):
        return sum(self.sold_by_user.values())


def hold_from(reservation_id, product_id, data):
    """The Hold a hold hash describes, or None for no hash."""
    if not data:
        return None
    return Hold(
        reservation_id,
        product_id,
        data["user"],
        int(data["quantity"]),
        float(data["expires_at"]),
    )


def check_open(meta, now):
    """Raise unless the sale (`META` fields) takes reservations now; (limit, stripes)."""
    status, limit, stripes, opens_at, closes_at = meta
    if status is None:
        raise SaleNotStarted()
    if status != LIVE or (closes_at is not None and now >= float(closes_at)):
        raise SaleEnded()
    if opens_at is not None and now < float(opens_at):
        raise SaleNotOpen()
    return int(limit), int(stripes)


def is_open(meta, now):
    try:
        check_open(meta, now)
    except DomainError:
        return False
    return True


def status_at(meta, now):
    """The sale's status as of `now`: a live sale past `closes_at` has ended, even
    before the sweeper writes that down."""
    status, closes_at = meta[0], meta[4]
    if status == LIVE and closes_at is not None and now >= float(closes_at):
        return ENDED
    return status


def split(units, parts):
    """`units` spread as evenly as possible over `parts` stripes."""
    return [units // parts + (1 if i < units % parts else 0) for i in range(parts)]


def ints(values):
    return [int(v or 0) for v in values]


def cover(stock, quantity):
    """Stripes holding at least `quantity` units: one if any suffices, chosen at random."""
    order = [i for i, units in enumerate(stock) if units > 0]
    random.shuffle(order)
    for i in order:
        if stock[i] >= quantity:
            return [i]
    chosen, units = [], 0
    for i in order:
        chosen.append(i)
        units += stock[i]
        if units >= quantity:
            return chosen
    return chosen
