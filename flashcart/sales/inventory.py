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


class SaleNotOpen(Conflict):
    """The sale for this product has not opened yet."""

    code = "sale_not_open"


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

    def __init__(
        self, redis_client, hold_seconds=600, max_attempts=64, clock=time.time, on_retry=None
    ):
        self.redis = redis_client
        self.hold_seconds = hold_seconds
        self.max_attempts = max_attempts
        self.clock = clock
        # Called once per WatchError retry (metrics, benchmarks).
        self.on_retry = on_retry

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
                    if self.on_retry:
                        self.on_retry()
                    time.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.02)))
        raise Busy()

    # -- sale lifecycle -------------------------------------------------------

    def open_sale(self, product_id, plan):
        """Put a sale live in Redis from `plan`. Returns False if Redis already has it."""
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.sale)
            if pipe.exists(keys.sale):
                return False
            pipe.multi()
            self._write_sale(pipe, keys, plan, plan.total - plan.sold)
            return True

        return self._transaction(body)

    @staticmethod
    def _write_sale(pipe, keys, plan, available, held_by_user=None):
        fields = {"status": plan.status, "limit": plan.limit, "stock": available}
        if plan.opens_at is not None:
            fields["opens_at"] = repr(plan.opens_at)
        if plan.closes_at is not None:
            fields["closes_at"] = repr(plan.closes_at)
        units = dict(plan.sold_by_user)
        for user_id, quantity in (held_by_user or {}).items():
            units[user_id] = units.get(user_id, 0) + quantity
        fields.update({_user_field(u): n for u, n in units.items() if n})
        pipe.delete(keys.sale)
        pipe.hset(keys.sale, mapping=fields)
        pipe.set(keys.sold, plan.sold)

    def rebuild(self, product_id, make_plan):
        """Rewrite the sale's Redis state from the durable truth in `plan`.

        Live holds are kept (their units stay held); everything else is derived:
        available = total - sold - held. `make_plan()` is called after the WATCH,
        so a checkout or cancel racing the repair makes it start over. Returns the
        snapshot written. Used by `flask audit --repair`, e.g. after Redis lost data.
        """
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.sale, keys.sold, keys.deadlines, keys.claimed, keys.restored)
            plan = make_plan()
            holds = self._holds(pipe, product_id)
            held_by_user = {}
            for hold in holds:
                held_by_user[hold.user_id] = held_by_user.get(hold.user_id, 0) + hold.quantity
            held = sum(held_by_user.values())
            available = plan.total - plan.sold - held
            if available < 0:
                raise Conflict(
                    f"Holds ({held}) and sales ({plan.sold}) exceed the stock ({plan.total}); "
                    "release holds before repairing."
                )
            pipe.multi()
            self._write_sale(pipe, keys, plan, available, held_by_user)
            return SaleSnapshot(plan.status, available, held, plan.sold, plan.limit)

        return self._transaction(body)

    def end_sale(self, product_id):
        """No new reservations; live holds may still check out until their deadline."""
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.sale)
            if not pipe.exists(keys.sale):
                return False
            pipe.multi()
            pipe.hset(keys.sale, "status", ENDED)
            return True

        return self._transaction(body)

    def restock(self, product_id, quantity):
        """Add units to a sale in Redis. Returns False if the sale is not in Redis."""
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.sale)
            if not pipe.exists(keys.sale):
                return False
            pipe.multi()
            pipe.hincrby(keys.sale, "stock", quantity)
            return True

        return self._transaction(body)

    def drop_sale(self, product_id):
        """Forget a finished sale's keys (after its figures are written to MongoDB)."""
        keys = Keys(product_id)
        self.redis.delete(keys.sale, keys.sold, keys.deadlines, keys.claimed, keys.restored)

    def holds(self, product_id):
        """Every hold of the product, live or expired but not yet returned."""
        return self._holds(self.redis, product_id)

    @staticmethod
    def _holds(client, product_id):
        keys = Keys(product_id)
        reservation_ids = client.zrange(keys.deadlines, 0, -1)
        holds = []
        for reservation_id in reservation_ids:
            hold = _hold_from(reservation_id, product_id, client.hgetall(keys.hold(reservation_id)))
            if hold is not None:
                holds.append(hold)
        return holds

    def claims(self, product_id):
        """{reservation id: order id} for claims not yet settled in MongoDB."""
        return self.redis.hgetall(Keys(product_id).claimed)

    def restored_orders(self, product_id):
        return self.redis.smembers(Keys(product_id).restored)

    def user_units(self, product_id):
        """{user id: units held or bought} as Redis counts them for the limit."""
        fields = self.redis.hgetall(Keys(product_id).sale)
        return {k[2:]: int(v) for k, v in fields.items() if k.startswith("u:") and int(v)}

    def snapshot(self, product_id):
        """What Redis says about the sale now (expired holds are not yet returned)."""
        keys = Keys(product_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.sale, "status", "limit", "stock")
            pipe.get(keys.sold)
            (status, limit, stock), sold = pipe.execute()
        held = sum(hold.quantity for hold in self.holds(product_id))
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
            status, limit, stock, owned, opens_at, closes_at = pipe.hmget(
                keys.sale, "status", "limit", "stock", user_field, "opens_at", "closes_at"
            )
            _check_open(status, opens_at, closes_at, self.clock())
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


def _check_open(status, opens_at, closes_at, now):
    if status is None:
        raise SaleNotStarted()
    if status != LIVE or (closes_at is not None and now >= float(closes_at)):
        raise SaleEnded()
    if opens_at is not None and now < float(opens_at):
        raise SaleNotOpen()


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
