"""The inventory engine: the only code that touches stock and reservation keys.

Every change is one Redis WATCH/MULTI/EXEC transaction with a bounded, jittered
retry (a product decision: no Lua). All keys of one product share the hash tag
`{p:<id>}`, so each transaction touches a single hash slot and runs on Redis Cluster.

Keys of product P (prefix `fc:{p:P}:`):
  sale        hash: status (live|ended), limit, stock (available units),
              u:<user id> (units the user holds or bought, for the per-user limit)
  sold        units claimed by orders
  hold:<rid>  hash: user, quantity, expires_at (a live reservation)
  deadlines   sorted set: reservation id -> expires_at (finds expired holds)
  claimed     hash: reservation id -> order id, for claims whose order is not yet
              confirmed in MongoDB (the sweeper settles them after a crash)
  restored    set of cancelled order ids whose units came back (restore exactly once)

Invariant while a sale is live: total = stock + held + sold.
"""

import random
import secrets
import time
from dataclasses import dataclass

import redis

from flashcart.errors import Busy, Conflict, DomainError, NotFound

LIVE = "live"
ENDED = "ended"


class SaleNotStarted(Conflict):
    """The sale for this product has not started."""

    code = "sale_not_started"


class SaleEnded(Conflict):
    """The sale for this product has ended."""

    code = "sale_ended"


class SoldOut(Conflict):
    """Sold out: no units are available (held units may return if their reservations expire)."""

    code = "sold_out"


class InsufficientStock(Conflict):
    """Fewer units are available than requested."""

    code = "insufficient_stock"


class LimitExceeded(Conflict):
    """This would take you over the per-user limit for this product."""

    code = "limit_exceeded"


class ReservationNotFound(NotFound):
    """No live reservation with this id (it may have expired)."""

    code = "reservation_not_found"


class ReservationExpired(DomainError):
    """The reservation expired before checkout; its units went back on sale."""

    status = 410
    code = "reservation_expired"


def product_prefix(product_id):
    return f"fc:{{p:{product_id}}}:"


class Keys:
    """The Redis keys of one product's sale."""

    __slots__ = ("prefix", "sale", "sold", "deadlines", "claimed", "restored")

    def __init__(self, product_id):
        self.prefix = product_prefix(product_id)
        self.sale = self.prefix + "sale"
        self.sold = self.prefix + "sold"
        self.deadlines = self.prefix + "deadlines"
        self.claimed = self.prefix + "claimed"
        self.restored = self.prefix + "restored"

    def hold(self, reservation_id):
        return f"{self.prefix}hold:{reservation_id}"


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


def new_reservation_id(product_id):
    # The product id travels inside the reservation id so that checkout can find
    # the product's keys without a cross-slot index.
    return f"{product_id}.{secrets.token_urlsafe(12)}"


def product_of(reservation_id):
    return reservation_id.split(".", 1)[0]


def _user_field(user_id):
    return f"u:{user_id}"


class Inventory:
    """Reservations, claims, expiry and restores for products on sale."""

    def __init__(self, redis_client, hold_seconds=600, max_attempts=64, clock=time.time):
        self.redis = redis_client
        self.hold_seconds = hold_seconds
        self.max_attempts = max_attempts
        self.clock = clock

    def _transaction(self, body):
        """Run `body(pipe)` under WATCH/MULTI with bounded, jittered retries.

        `body` WATCHes what it reads, checks it, then queues writes after
        `pipe.multi()`. A WatchError means another client changed a watched key:
        wait a little (full jitter, growing) and run the whole body again.
        """
        for attempt in range(self.max_attempts):
            with self.redis.pipeline() as pipe:
                try:
                    result = body(pipe)
                    if pipe.explicit_transaction:
                        pipe.execute()
                    return result
                except redis.WatchError:
                    time.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.02)))
        raise Busy()

    # -- sale lifecycle -------------------------------------------------------

    def open_sale(self, product_id, available, sold, limit, user_units=None):
        """Put a sale live in Redis. Returns False if Redis already has it."""
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.sale)
            if pipe.exists(keys.sale):
                return False
            pipe.multi()
            fields = {"status": LIVE, "limit": limit, "stock": available}
            fields.update({_user_field(u): n for u, n in (user_units or {}).items() if n})
            pipe.hset(keys.sale, mapping=fields)
            pipe.set(keys.sold, sold)
            return True

        return self._transaction(body)

    def snapshot(self, product_id):
        """The sale's live figures, after returning any expired holds."""
        keys = Keys(product_id)
        self.release_expired(product_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.sale, "status", "limit", "stock")
            pipe.get(keys.sold)
            pipe.zrange(keys.deadlines, 0, -1)
            (status, limit, stock), sold, holds = pipe.execute()
        held = 0
        if holds:
            with self.redis.pipeline(transaction=False) as pipe:
                for reservation_id in holds:
                    pipe.hget(keys.hold(reservation_id), "quantity")
                held = sum(int(q or 0) for q in pipe.execute())
        return SaleSnapshot(status, int(stock or 0), held, int(sold or 0), int(limit or 0))

    def available(self, product_id):
        """(status, available units) from one round trip, returning expired holds first."""
        keys = Keys(product_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.sale, "status", "stock")
            pipe.zcount(keys.deadlines, "-inf", self.clock())
            (status, stock), expired = pipe.execute()
        if expired:
            self.release_expired(product_id)
            status, stock = self.redis.hmget(keys.sale, "status", "stock")
        return status, int(stock or 0)

    # -- reservations ---------------------------------------------------------

    def reserve(self, product_id, user_id, quantity=1):
        """Take `quantity` units into a new hold for `user_id`; returns the Hold."""
        keys = Keys(product_id)
        user_field = _user_field(user_id)
        reservation_id = new_reservation_id(product_id)
        returned_expired = False

        def body(pipe):
            nonlocal returned_expired
            pipe.watch(keys.sale)
            status, limit, stock, owned = pipe.hmget(
                keys.sale, "status", "limit", "stock", user_field
            )
            if status is None:
                raise SaleNotStarted()
            if status != LIVE:
                raise SaleEnded()
            stock, owned = int(stock), int(owned or 0)
            if owned + quantity > int(limit):
                raise LimitExceeded(
                    f"The limit is {limit} per customer and you already hold or bought {owned}."
                )
            if stock < quantity:
                if not returned_expired:
                    returned_expired = True
                    pipe.unwatch()
                    if self.release_expired(product_id):
                        raise redis.WatchError("expired holds returned; look again")
                raise (
                    SoldOut()
                    if stock <= 0
                    else InsufficientStock(f"Only {stock} units are available.")
                )
            expires_at = self.clock() + self.hold_seconds
            pipe.multi()
            pipe.hincrby(keys.sale, "stock", -quantity)
            pipe.hincrby(keys.sale, user_field, quantity)
            pipe.hset(
                keys.hold(reservation_id),
                mapping={"user": user_id, "quantity": quantity, "expires_at": repr(expires_at)},
            )
            pipe.zadd(keys.deadlines, {reservation_id: expires_at})
            return Hold(reservation_id, product_id, user_id, quantity, expires_at)

        return self._transaction(body)

    def get_hold(self, reservation_id):
        """The live or expired-but-not-yet-returned hold, or None."""
        product_id = product_of(reservation_id)
        data = self.redis.hgetall(Keys(product_id).hold(reservation_id))
        return _hold_from(reservation_id, product_id, data)

    def claim(self, reservation_id, user_id, order_id):
        """Atomically turn a live hold into sold units for `order_id`.

        The hold is the arbiter between checkout and expiry: exactly one of claim
        and release wins. Claiming again for the same order is a no-op.
        """
        product_id = product_of(reservation_id)
        keys = Keys(product_id)
        hold_key = keys.hold(reservation_id)

        def body(pipe):
            pipe.watch(hold_key)
            hold = _hold_from(reservation_id, product_id, pipe.hgetall(hold_key))
            if hold is None or hold.user_id != user_id:
                if pipe.hget(keys.claimed, reservation_id) == order_id:
                    return True
                raise ReservationNotFound()
            if hold.expires_at <= self.clock():
                raise ReservationExpired()
            pipe.multi()
            pipe.delete(hold_key)
            pipe.zrem(keys.deadlines, reservation_id)
            pipe.hset(keys.claimed, reservation_id, order_id)
            pipe.incrby(keys.sold, hold.quantity)
            return True

        return self._transaction(body)

    def settle_claim(self, reservation_id):
        """Forget a claim once its order is confirmed in MongoDB."""
        self.redis.hdel(Keys(product_of(reservation_id)).claimed, reservation_id)

    def claimed_order(self, reservation_id):
        """The order id a hold was claimed for, while the claim is unsettled."""
        return self.redis.hget(Keys(product_of(reservation_id)).claimed, reservation_id)

    def release(self, reservation_id, only_if_expired=True):
        """Return a hold's units to stock. Returns the quantity returned (0 if none)."""
        product_id = product_of(reservation_id)
        keys = Keys(product_id)
        hold_key = keys.hold(reservation_id)

        def body(pipe):
            pipe.watch(hold_key, keys.sale)
            hold = _hold_from(reservation_id, product_id, pipe.hgetall(hold_key))
            if hold is None:
                pipe.unwatch()
                pipe.zrem(keys.deadlines, reservation_id)
                return 0
            if only_if_expired and hold.expires_at > self.clock():
                return 0
            sale_in_redis = pipe.exists(keys.sale)
            pipe.multi()
            pipe.delete(hold_key)
            pipe.zrem(keys.deadlines, reservation_id)
            if sale_in_redis:
                pipe.hincrby(keys.sale, "stock", hold.quantity)
                pipe.hincrby(keys.sale, _user_field(hold.user_id), -hold.quantity)
            return hold.quantity

        return self._transaction(body)

    def release_expired(self, product_id, batch=100):
        """Return the units of up to `batch` expired holds. Returns units returned."""
        keys = Keys(product_id)
        expired = self.redis.zrangebyscore(keys.deadlines, "-inf", self.clock(), 0, batch)
        return sum(self.release(reservation_id) for reservation_id in expired)

    # -- cancellation ---------------------------------------------------------

    def restore(self, product_id, order_id, user_id, quantity):
        """Put a cancelled order's units back on sale, exactly once per order.

        Returns False if they were already restored or the sale is not in Redis
        (then MongoDB is the truth and `flask audit --repair` rebuilds Redis).
        """
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.restored, keys.sale)
            if pipe.sismember(keys.restored, order_id) or not pipe.exists(keys.sale):
                return False
            pipe.multi()
            pipe.sadd(keys.restored, order_id)
            pipe.hincrby(keys.sale, "stock", quantity)
            pipe.hincrby(keys.sale, _user_field(user_id), -quantity)
            pipe.decrby(keys.sold, quantity)
            return True

        return self._transaction(body)


def _hold_from(reservation_id, product_id, data):
    if not data:
        return None
    return Hold(
        reservation_id,
        product_id,
        data["user"],
        int(data["quantity"]),
        float(data["expires_at"]),
    )
