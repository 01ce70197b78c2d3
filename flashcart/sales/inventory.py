"""The inventory engine: the only code that touches stock and reservation keys.

Every change is one Redis WATCH/MULTI/EXEC transaction with a bounded, jittered
retry (a product decision: no Lua). All keys of one product share the hash tag
`{p:<id>}`, so each transaction touches a single hash slot and runs on Redis Cluster.

Keys of product P (prefix `fc:{p:P}:`):
  sale        hash: status (live|ended|closed), limit, stripes, opens_at, closes_at,
              restocks (a counter a restock bumps, so a racing rebuild starts over)
  stock:<i>   available units, striped over `stripes` keys: concurrent reservations
              WATCH one stripe each, so they rarely collide on the same key
  user:<u>    units user u holds or bought (the per-user limit); `buyers` lists them
  sold        units claimed by orders
  hold:<rid>  hash: user, quantity, expires_at (a live reservation)
  deadlines   sorted set: reservation id -> expires_at (finds expired holds)
  claimed     hash: reservation id -> order id, for claims whose order is not yet
              confirmed in MongoDB (the sweeper settles them after a crash)
  restored    set of cancelled order ids whose units came back (restore exactly once)
  expired:<rid>  the user of a hold that expired and went back on sale (for a day), so
              a late checkout is told "expired", not "unknown"

Invariant while a sale is live: total = sum(stock:*) + held + sold.
"""

import functools
import os
import random
import secrets
import threading
import time
import weakref
from dataclasses import dataclass

import redis

from flashcart.errors import Busy, Conflict, DomainError, NotFound
from flashcart.redis_wire import query, round_trip

LIVE = "live"
ENDED = "ended"
CLOSED = "closed"
DEFAULT_STRIPES = 128
RESTORED_MARK_SECONDS = 7 * 24 * 3600
EXPIRED_MARK_SECONDS = 24 * 3600
MAX_STRIPES = 256


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

    __slots__ = ("prefix", "sale", "sold", "deadlines", "claimed", "restored", "buyers")

    def __init__(self, product_id):
        self.prefix = product_prefix(product_id)
        self.sale = self.prefix + "sale"
        self.sold = self.prefix + "sold"
        self.deadlines = self.prefix + "deadlines"
        self.claimed = self.prefix + "claimed"
        self.restored = self.prefix + "restored"
        self.buyers = self.prefix + "buyers"

    def hold(self, reservation_id):
        return f"{self.prefix}hold:{reservation_id}"

    def expired(self, reservation_id):
        return f"{self.prefix}expired:{reservation_id}"

    def stripe(self, index):
        return f"{self.prefix}stock:{index}"

    def stripes(self, count):
        return list(_stripe_keys(self.prefix, count))

    def user(self, user_id):
        return f"{self.prefix}user:{user_id}"


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


@functools.lru_cache(maxsize=4096)
def _stripe_keys(prefix, count):
    # Hot reads (stock, sold out) name every stripe: build the keys once per sale.
    return tuple(f"{prefix}stock:{i}" for i in range(count))


def new_reservation_id(product_id):
    # The product id travels inside the reservation id so that checkout can find
    # the product's keys without a cross-slot index.
    return f"{product_id}.{secrets.token_urlsafe(12)}"


def product_of(reservation_id):
    return reservation_id.split(".", 1)[0]


def _split(units, parts):
    """`units` spread as evenly as possible over `parts` stripes."""
    return [units // parts + (1 if i < units % parts else 0) for i in range(parts)]


def _ints(values):
    return [int(v or 0) for v in values]


def _exec_packed(pipe, commands):
    """MULTI, `commands`, EXEC in one round trip on the watching connection.

    The hot path's twin of `_watch_and_read`: it skips redis-py's generic
    transaction bookkeeping. Raises WatchError if a watched key changed.
    """
    if not isinstance(pipe, redis.client.Pipeline) or pipe.connection is None:
        pipe.multi()
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()
    try:
        results = round_trip(pipe.connection, [("MULTI",), *commands, ("EXEC",)])[-1]
    finally:
        pipe.watching = False
    if results is None:
        raise redis.WatchError("a watched key changed")
    for result in results:
        if isinstance(result, redis.ResponseError):
            raise result
    return results


class _LookAgain(Exception):
    """The chosen stripes lack units: choose again now (not contention, no backoff)."""


def _watch_and_read(pipe, watch_keys, reads):
    """WATCH `watch_keys` and run the read commands in one round trip.

    redis-py sends WATCH and each read separately once a pipeline is watching;
    packing them saves round trips on the hot path. Other pipelines (Redis
    Cluster's) take the ordinary path.
    """
    if not isinstance(pipe, redis.client.Pipeline):
        pipe.watch(*watch_keys)
        return [pipe.execute_command(*command) for command in reads]
    connection = pipe.connection or pipe.connection_pool.get_connection()
    pipe.connection = connection
    replies = round_trip(connection, [("WATCH", *watch_keys), *reads])
    pipe.watching = True  # so that leaving without EXEC sends UNWATCH
    return replies[1:]


class Inventory:
    """Reservations, claims, expiry and restores for products on sale."""

    def __init__(
        self,
        redis_client,
        hold_seconds=600,
        max_attempts=64,
        clock=time.time,
        on_retry=None,
        stripes=DEFAULT_STRIPES,
        placed_orders=None,
    ):
        if not 1 <= stripes <= MAX_STRIPES:
            raise ValueError(f"stripes must be 1..{MAX_STRIPES}")
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

    def _transaction(self, body, product_id):
        """Run `body(pipe)` under WATCH/MULTI with bounded, jittered retries.

        `body` WATCHes what it reads, checks it, then queues writes after
        `pipe.multi()`. A WatchError means another client changed a watched key:
        wait a little (full jitter, growing) and run the whole body again.
        Afterwards this process's remembered stock read of the product is stale.
        """
        attempt = looks = 0
        while attempt < self.max_attempts and looks <= MAX_STRIPES:
            # transaction=True: RedisCluster's pipelines default to no MULTI/WATCH.
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    result = body(pipe)
                    if len(pipe):  # writes the body queued (on any kind of pipeline)
                        pipe.execute()
                    _stock_reads(self.redis).pop(product_id, None)
                    return result
                except _LookAgain:
                    looks += 1  # a fresh choice, not contention: no backoff, no attempt used
                    continue
                except redis.WatchError:
                    _draw_probe()
                    if self.on_retry:
                        self.on_retry()
                    time.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.02)))
                    attempt += 1
        raise Busy()

    # -- sale lifecycle -------------------------------------------------------

    def open_sale(self, product_id, plan):
        """Put a sale live in Redis from `plan` (a SalePlan, or a function making one
        after the WATCH, so a cancel racing the start makes it look again).
        Returns False if Redis already has the sale."""
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.sale, keys.restored, keys.claimed)
            if pipe.exists(keys.sale):
                return False
            plan_now = plan() if callable(plan) else plan
            pipe.multi()
            self._write_sale(pipe, keys, plan_now, plan_now.total - plan_now.sold, old_buyers=())
            return True

        return _forget_sold_out_if(self._transaction(body, product_id), product_id)

    def _write_sale(self, pipe, keys, plan, available, old_buyers, held_by_user=None):
        meta = {"status": plan.status, "limit": plan.limit, "stripes": self.stripes}
        if plan.opens_at is not None:
            meta["opens_at"] = repr(plan.opens_at)
        if plan.closes_at is not None:
            meta["closes_at"] = repr(plan.closes_at)
        units = dict(plan.sold_by_user)
        for user_id, quantity in (held_by_user or {}).items():
            units[user_id] = units.get(user_id, 0) + quantity
        units = {user_id: n for user_id, n in units.items() if n}
        pipe.delete(keys.sale, keys.buyers, *keys.stripes(MAX_STRIPES))
        if old_buyers:
            pipe.delete(*(keys.user(u) for u in old_buyers))
        pipe.hset(keys.sale, mapping=meta)
        stripes = keys.stripes(self.stripes)
        for key, units_here in zip(stripes, _split(available, self.stripes), strict=True):
            pipe.set(key, units_here)
        for user_id, n in units.items():
            pipe.set(keys.user(user_id), n)
        if units:
            pipe.sadd(keys.buyers, *units)
        pipe.set(keys.sold, plan.sold)

    def rebuild(self, product_id, make_plan, already_sold=lambda reservation_ids: ()):
        """Rewrite the sale's Redis state from the durable truth in `plan`.

        Live holds are kept (their units stay held); everything else is derived:
        available = total - sold - held. `make_plan()` is called after the WATCH,
        so a checkout or cancel racing the repair makes it start over. Returns the
        snapshot written. Used by `flask audit --repair`, e.g. after Redis lost data.

        `already_sold(reservation_ids)` names holds whose orders were placed: their
        claim was lost (a Redis failover to a replica that had not received it), so
        they are dropped, their units counted as sold and never returned.
        """
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(
                keys.sale, keys.sold, keys.deadlines, keys.claimed, keys.restored, keys.buyers
            )
            plan = make_plan()
            holds = self._holds(pipe, product_id)
            sold_holds = set(already_sold([hold.id for hold in holds]))
            held_by_user = {}
            for hold in holds:
                if hold.id in sold_holds:
                    continue
                held_by_user[hold.user_id] = held_by_user.get(hold.user_id, 0) + hold.quantity
            held = sum(held_by_user.values())
            available = plan.total - plan.sold - held
            if available < 0:
                raise Conflict(
                    f"Holds ({held}) and sales ({plan.sold}) exceed the stock ({plan.total}); "
                    "release holds before repairing."
                )
            old_buyers = pipe.smembers(keys.buyers)
            pipe.multi()
            if sold_holds:
                pipe.delete(*(keys.hold(reservation_id) for reservation_id in sold_holds))
                pipe.zrem(keys.deadlines, *sold_holds)
            self._write_sale(pipe, keys, plan, available, old_buyers, held_by_user)
            return SaleSnapshot(plan.status, available, held, plan.sold, plan.limit)

        return _forget_sold_out_if(self._transaction(body, product_id), product_id)

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

        return _forget_sold_out_if(self._transaction(body, product_id), product_id)

    def restock(self, product_id, quantity):
        """Add units to a sale in Redis. Returns False if the sale is not in Redis."""
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.sale)
            stripes = pipe.hget(keys.sale, "stripes")
            if stripes is None:
                return False
            pipe.multi()
            count = int(stripes)
            for key, units in zip(keys.stripes(count), _split(quantity, count), strict=True):
                if units:
                    pipe.incrby(key, units)
            # Touch the sale hash: a rebuild racing this restock then starts over.
            pipe.hincrby(keys.sale, "restocks", 1)
            return True

        return _forget_sold_out_if(self._transaction(body, product_id), product_id)

    def close_sale(self, product_id):
        """Stop the sale's stock from moving, once no hold or claim is left.

        Returns False while one is. After this a cancel no longer restores units
        into Redis: the figures written to MongoDB take them instead.
        """
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.sale, keys.deadlines, keys.claimed)
            if pipe.zcard(keys.deadlines) or pipe.hlen(keys.claimed):
                return False
            if pipe.exists(keys.sale):
                pipe.multi()
                pipe.hset(keys.sale, "status", CLOSED)
            return True

        return _forget_sold_out_if(self._transaction(body, product_id), product_id)

    def drop_sale(self, product_id):
        """Forget a finished sale's keys (after its figures are written to MongoDB)."""
        keys = Keys(product_id)
        buyers = self.redis.smembers(keys.buyers)
        self.redis.delete(
            keys.sale,
            keys.sold,
            keys.deadlines,
            keys.claimed,
            keys.restored,
            keys.buyers,
            *keys.stripes(MAX_STRIPES),
            *(keys.user(u) for u in buyers),
        )
        _forget_sold_out(product_id)
        _stock_reads(self.redis).pop(product_id, None)

    def holds(self, product_id):
        """Every hold of the product, live or expired but not yet returned."""
        return self._holds(self.redis, product_id)

    def _holds(self, client, product_id):
        """The holds, read in one batch (`client` may be a watching pipeline)."""
        keys = Keys(product_id)
        reservation_ids = client.zrange(keys.deadlines, 0, -1)
        if not reservation_ids:
            return []
        with self.redis.pipeline(transaction=False) as batch:
            for reservation_id in reservation_ids:
                batch.hgetall(keys.hold(reservation_id))
            found = batch.execute()
        holds = (
            _hold_from(rid, product_id, data)
            for rid, data in zip(reservation_ids, found, strict=True)
        )
        return [hold for hold in holds if hold is not None]

    def claims(self, product_id):
        """{reservation id: order id} for claims not yet settled in MongoDB."""
        return self.redis.hgetall(Keys(product_id).claimed)

    def restored_orders(self, product_id):
        return self.redis.smembers(Keys(product_id).restored)

    def user_units(self, product_id):
        """{user id: units held or bought} as Redis counts them for the limit."""
        keys = Keys(product_id)
        buyers = sorted(self.redis.smembers(keys.buyers))
        if not buyers:
            return {}
        counts = self.redis.mget([keys.user(u) for u in buyers])
        return {u: int(n) for u, n in zip(buyers, counts, strict=True) if n and int(n)}

    # -- reading --------------------------------------------------------------

    def _read_stock(self, product_id):
        """(the sale's `_META` fields, available, expired holds) in one round trip."""
        keys = Keys(product_id)
        meta, stock, expired = query(
            self.redis,
            [
                ("HMGET", keys.sale, *_META),
                ("MGET", *_stripe_keys(keys.prefix, self.stripes)),
                ("ZCOUNT", keys.deadlines, "-inf", self.clock()),
            ],
        )
        stripes = meta[2]
        if stripes is not None and int(stripes) > self.stripes:
            stock += self.redis.mget(keys.stripes(int(stripes))[self.stripes :])
        return meta, sum(_ints(stock)), expired

    def snapshot(self, product_id):
        """What Redis says about the sale now (expired holds are not yet returned)."""
        (status, limit, *_), available, _ = self._read_stock(product_id)
        sold = self.redis.get(Keys(product_id).sold)
        held = sum(hold.quantity for hold in self.holds(product_id))
        return SaleSnapshot(status, available, held, int(sold or 0), int(limit or 0))

    def available(self, product_id, max_age=0.0):
        """(status as of now, available units), returning expired holds first.

        With `max_age` (seconds), an answer this process read that recently, with
        no change to the sale through this process since, is given again.
        """
        reads = _stock_reads(self.redis)
        if max_age:
            seen = reads.get(product_id)
            if seen is not None and time.monotonic() - seen[0] < max_age:
                return seen[1]
        meta, available, expired = self._read_stock(product_id)
        if expired:
            self.release_expired(product_id)
            meta, available, _ = self._read_stock(product_id)
        answer = (_status_at(meta, self.clock()), available)
        if max_age:
            if len(reads) > 10_000:
                reads.clear()
            reads[product_id] = (time.monotonic(), answer)
        return answer

    # -- reservations ---------------------------------------------------------

    def reserve(self, product_id, user_id, quantity=1):
        """Take `quantity` units into a new hold for `user_id`; returns the Hold.

        One round trip WATCHes and reads the sale, the user's count and one stripe
        (chosen at random among those last seen with units); a second runs
        MULTI/EXEC. Only when that stripe lacks units does it read them all and
        choose again.
        """
        self.refuse_if_sold_out(product_id, quantity)
        keys = Keys(product_id)
        user_key = keys.user(user_id)
        reservation_id = new_reservation_id(product_id)
        plan = {
            "stripes": None,
            "count": self.stripes,
            "returned_expired": False,
            "returned_own": False,
        }

        def body(pipe):
            count = plan["count"]
            chosen = plan.pop("stripes", None) or [_pick_stripe(product_id, count)]
            chosen_keys = [keys.stripe(i) for i in chosen]
            meta, (owned, *stock_here) = _watch_and_read(
                pipe,
                [keys.sale, user_key, *chosen_keys],
                [("HMGET", keys.sale, *_META), ("MGET", user_key, *chosen_keys)],
            )
            limit, stripes = _check_open(meta, self.clock())
            if stripes != count:
                plan["count"] = stripes
                raise _LookAgain()
            owned, stock_here = int(owned or 0), _ints(stock_here)
            if owned + quantity > limit:
                self._refuse_over_limit(plan, product_id, user_id, owned, limit)
            if sum(stock_here) < quantity:
                stock, expired = query(
                    self.redis,
                    [
                        ("MGET", *_stripe_keys(keys.prefix, count)),
                        ("ZCOUNT", keys.deadlines, "-inf", self.clock()),
                    ],
                )
                stock = _ints(stock)
                _remember_stripes(product_id, stock)
                self._choose_again(plan, product_id, stock, quantity, expired)
            writes, remaining = [], quantity
            for key, units in zip(chosen_keys, stock_here, strict=True):
                take = min(units, remaining)
                if take:
                    writes.append(("DECRBY", key, take))
                    remaining -= take
            expires_at = self.clock() + self.hold_seconds
            deadline = repr(expires_at)
            writes += [
                ("INCRBY", user_key, quantity),
                ("SADD", keys.buyers, user_id),
                (
                    "HSET",
                    keys.hold(reservation_id),
                    "user",
                    user_id,
                    "quantity",
                    quantity,
                    "expires_at",
                    deadline,
                ),
                ("ZADD", keys.deadlines, deadline, reservation_id),
            ]
            _exec_packed(pipe, writes)
            return Hold(reservation_id, product_id, user_id, quantity, expires_at)

        return self._transaction(body, product_id)

    def _refuse_over_limit(self, plan, product_id, user_id, owned, limit):
        """The user's count is at the limit: if some of it is their own expired holds,
        return those and look again (their deadline passed, whoever sweeps), else refuse."""
        if not plan["returned_own"]:
            plan["returned_own"] = True
            if self._release_expired_of(product_id, user_id, owned):
                raise _LookAgain()
        raise LimitExceeded(
            f"The limit is {limit} per customer and you already hold or bought {owned}."
        )

    def _choose_again(self, plan, product_id, stock, quantity, expired):
        """The chosen stripes lack units: pick ones that have them, or say sold out."""
        total = sum(stock)
        if total >= quantity:
            plan["stripes"] = _cover(stock, quantity)
            raise _LookAgain()
        if expired and not plan["returned_expired"]:
            plan["returned_expired"] = True
            self.release_expired(product_id)
            raise _LookAgain()
        _refuse(product_id, total, quantity)

    def refuse_if_sold_out(self, product_id, quantity=1):
        """The sold-out fast path: raise SoldOut, without a transaction, while this
        process saw the product sold out moments ago.

        Within SOLD_OUT_TRUST_SECONDS of a read that found it sold out it answers from
        memory; later, up to SOLD_OUT_HINT_SECONDS, one plain read confirms it. Units
        that come back through this process clear the mark at once; through another,
        they are seen within SOLD_OUT_TRUST_SECONDS. Otherwise returns quietly.
        """
        seen = _SOLD_OUT.get(product_id)
        if seen is None:
            return
        age = time.monotonic() - seen
        if age < SOLD_OUT_TRUST_SECONDS:
            raise SoldOut()
        if age >= SOLD_OUT_HINT_SECONDS:
            _forget_sold_out(product_id)
            return
        meta, total, expired = self._read_stock(product_id)
        # A sale no longer open takes the full path, which says what became of it.
        if _is_open(meta, self.clock()) and not expired and total < quantity:
            _refuse(product_id, total, quantity)
        _forget_sold_out(product_id)

    def get_hold(self, reservation_id):
        """The live or expired-but-not-yet-returned hold, or None."""
        product_id = product_of(reservation_id)
        data = self.redis.hgetall(Keys(product_id).hold(reservation_id))
        return _hold_from(reservation_id, product_id, data)

    def expired_for(self, reservation_id, user_id):
        """Whether `user_id`'s reservation expired and its units went back on sale."""
        key = Keys(product_of(reservation_id)).expired(reservation_id)
        return self.redis.get(key) == user_id

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
                if pipe.get(keys.expired(reservation_id)) == user_id:
                    raise ReservationExpired()
                raise ReservationNotFound()
            if hold.expires_at <= self.clock():
                raise ReservationExpired()
            pipe.multi()
            pipe.delete(hold_key)
            pipe.zrem(keys.deadlines, reservation_id)
            pipe.hset(keys.claimed, reservation_id, order_id)
            pipe.incrby(keys.sold, hold.quantity)
            return True

        return self._transaction(body, product_id)

    def settle_claim(self, reservation_id):
        """Forget a claim once its order is confirmed in MongoDB."""
        self.redis.hdel(Keys(product_of(reservation_id)).claimed, reservation_id)

    def claimed_order(self, reservation_id):
        """The order id a hold was claimed for, while the claim is unsettled."""
        return self.redis.hget(Keys(product_of(reservation_id)).claimed, reservation_id)

    def _give_back(self, pipe, keys, stripes, user_id, quantity):
        """Queue the writes that return units to stock (inside MULTI)."""
        pipe.incrby(keys.stripe(random.randrange(int(stripes))), quantity)
        pipe.decrby(keys.user(user_id), quantity)

    def release(self, reservation_id, only_if_expired=True, order_placed=None):
        """Return a hold's units to stock. Returns the quantity returned (0 if none).

        A hold whose order was placed all the same (Redis lost the claim, e.g. in a
        failover) is settled as sold instead: its units never go back on sale.
        `order_placed` says so when the caller already knows; else MongoDB is asked.
        """
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
            stripes = pipe.hget(keys.sale, "stripes")
            sold = order_placed
            if sold is None:
                sold = reservation_id in self._placed(product_id, [reservation_id])
            pipe.multi()
            pipe.delete(hold_key)
            pipe.zrem(keys.deadlines, reservation_id)
            if sold:
                pipe.incrby(keys.sold, hold.quantity)
                return 0
            if hold.expires_at <= self.clock():
                pipe.set(keys.expired(reservation_id), hold.user_id, ex=EXPIRED_MARK_SECONDS)
            if stripes is not None:
                self._give_back(pipe, keys, stripes, hold.user_id, hold.quantity)
            return hold.quantity

        return _forget_sold_out_if(self._transaction(body, product_id), product_id)

    def release_expired(self, product_id, batch=100):
        """Return the units of up to `batch` expired holds. Returns units returned."""
        keys = Keys(product_id)
        expired = self.redis.zrangebyscore(keys.deadlines, "-inf", self.clock(), 0, batch)
        placed = self._placed(product_id, expired)  # one lookup for the whole batch
        return sum(self.release(rid, order_placed=rid in placed) for rid in expired)

    def _release_expired_of(self, product_id, user_id, owned):
        """Return `user_id`'s expired holds on the product. Returns whether their count
        may now be below `owned` (what the caller read): this call, or another
        request of theirs meanwhile, returned some."""
        keys = Keys(product_id)
        expired, owned_now = query(
            self.redis,
            [("ZRANGEBYSCORE", keys.deadlines, "-inf", self.clock()), ("GET", keys.user(user_id))],
        )
        mine = []
        if expired:
            owners = query(self.redis, [("HGET", keys.hold(rid), "user") for rid in expired])
            mine = [rid for rid, owner in zip(expired, owners, strict=True) if owner == user_id]
        placed = self._placed(product_id, mine)
        for reservation_id in mine:
            self.release(reservation_id, order_placed=reservation_id in placed)
        return bool(mine) or int(owned_now or 0) < owned

    def _placed(self, product_id, reservation_ids):
        if self.placed_orders is None or not reservation_ids:
            return set()
        return self.placed_orders(product_id, reservation_ids)

    # -- cancellation ---------------------------------------------------------

    def restore(self, product_id, order_id, user_id, quantity):
        """Put a cancelled order's units back on sale, exactly once per order.

        Returns True only when the units went back into a live sale. With no sale
        in Redis (closed, or lost) it leaves the order in `restored` all the same:
        a rebuild racing this cancel then starts over, and every later rebuild
        counts the units as returned.
        """
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.restored, keys.sale)
            if pipe.sismember(keys.restored, order_id):
                return False
            status, stripes = pipe.hmget(keys.sale, "status", "stripes")
            pipe.multi()
            pipe.sadd(keys.restored, order_id)
            if stripes is None or status == CLOSED:
                # Only orders still `cancelling` need the mark; let a closed sale's go.
                pipe.expire(keys.restored, RESTORED_MARK_SECONDS)
                return False
            self._give_back(pipe, keys, stripes, user_id, quantity)
            pipe.decrby(keys.sold, quantity)
            return True

        return _forget_sold_out_if(self._transaction(body, product_id), product_id)


def _cover(stock, quantity):
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


_META = ("status", "limit", "stripes", "opens_at", "closes_at")
# Per process: when a read last found each product sold out (Inventory.refuse_if_sold_out).
_SOLD_OUT = {}
SOLD_OUT_TRUST_SECONDS = 0.1
SOLD_OUT_HINT_SECONDS = 1.0


# Per process and Redis client: product id -> (when, (status, available)) of its
# last stock read (Inventory.available's max_age); a transaction on it here drops it.
_STOCK_READS = weakref.WeakKeyDictionary()


def _stock_reads(client):
    reads = _STOCK_READS.get(client)
    if reads is None:
        reads = _STOCK_READS[client] = {}
    return reads


# Per process: the stripes each product last had units in, to choose from first.
_STRIPES_WITH_UNITS = {}
# Per thread: a random number that picks the stripe a reservation tries first. It is
# kept while transactions go through and drawn again after a conflict, so concurrent
# clients settle on different stripes instead of meeting by chance on every try
# (the way Java's LongAdder spreads threads over its cells).
_probe = threading.local()


def _draw_probe():
    _probe.value = random.getrandbits(32)
    return _probe.value


def _forget_probe():
    _probe.__dict__.pop("value", None)


# A forked worker draws its own (a thread's locals survive fork).
os.register_at_fork(after_in_child=_forget_probe)


def _pick_stripe(product_id, count):
    probe = getattr(_probe, "value", None)
    if probe is None:
        probe = _draw_probe()
    candidates = [i for i in _STRIPES_WITH_UNITS.get(product_id, ()) if i < count]
    return candidates[probe % len(candidates)] if candidates else probe % count


def _remember_stripes(product_id, stock):
    if len(_STRIPES_WITH_UNITS) > 10_000:
        _STRIPES_WITH_UNITS.clear()
    _STRIPES_WITH_UNITS[product_id] = [i for i, units in enumerate(stock) if units > 0]


def _forget_sold_out(product_id):
    _SOLD_OUT.pop(product_id, None)


def _forget_sold_out_if(changed, product_id):
    """After a transaction that may bring units back or change the sale's status."""
    if changed:
        _forget_sold_out(product_id)
    return changed


def _refuse(product_id, total, quantity):
    if total <= 0:
        if len(_SOLD_OUT) > 10_000:
            _SOLD_OUT.clear()
        _SOLD_OUT[product_id] = time.monotonic()
        raise SoldOut()
    raise InsufficientStock(f"Only {total} units are available.")


def _check_open(meta, now):
    """Raise unless the sale (`_META` fields) takes reservations now; (limit, stripes)."""
    status, limit, stripes, opens_at, closes_at = meta
    if status is None:
        raise SaleNotStarted()
    if status != LIVE or (closes_at is not None and now >= float(closes_at)):
        raise SaleEnded()
    if opens_at is not None and now < float(opens_at):
        raise SaleNotOpen()
    return int(limit), int(stripes)


def _status_at(meta, now):
    """The sale's status as of `now`: a live sale past `closes_at` has ended, even
    before the sweeper writes that down."""
    status, closes_at = meta[0], meta[4]
    if status == LIVE and closes_at is not None and now >= float(closes_at):
        return ENDED
    return status


def _is_open(meta, now):
    try:
        _check_open(meta, now)
    except DomainError:
        return False
    return True


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
