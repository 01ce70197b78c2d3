"""Reservations, claims, releases and restores: the `Inventory` callers use."""

import logging
import random
from dataclasses import dataclass

import redis

from flashcart import deadlines
from flashcart.errors import Busy
from flashcart.redis_wire import exec_and_wait, exec_packed, query, watch_and_read
from flashcart.sales.engine.errors import (
    InsufficientStock,
    LimitExceeded,
    NotReplicated,
    ReservationExpired,
    ReservationNotFound,
    SoldOut,
)
from flashcart.sales.engine.keys import (
    CLOSED,
    LIVE,
    Keys,
    new_reservation_id,
    product_of,
    stripe_keys,
)
from flashcart.sales.engine.records import (
    META,
    Hold,
    SaleSnapshot,
    check_open,
    cover,
    hold_from,
    ints,
    is_open,
    status_at,
)
from flashcart.sales.engine.sale_state import SaleLifecycle
from flashcart.sales.engine.transactions import LOOK_AGAIN

log = logging.getLogger(__name__)

RESTORED_MARK_SECONDS = 7 * 24 * 3600
EXPIRED_MARK_SECONDS = 24 * 3600


@dataclass
class _Reservation:
    """One reservation under way: what it asks for, and what its looks learned."""

    product_id: str
    user_id: str
    quantity: int
    id: str
    keys: Keys
    stripe_count: int  # the sale's, as last read
    next_stripes: list | None = None  # stripes seen with the units: tried next
    returned_expired: bool = False  # expired holds were returned (once)
    returned_own: bool = False  # the user's own expired holds were returned (once)
    replicas_acked: int = 0  # replicas that confirmed the hold (WAIT), when asked

    def stripes_to_try(self, hints):
        chosen, self.next_stripes = self.next_stripes, None
        return chosen or [hints.pick_stripe(self.product_id, self.stripe_count)]


class Inventory(SaleLifecycle):
    """Reservations, claims, expiry and restores for products on sale."""

    # -- reading --------------------------------------------------------------

    def _read_stock(self, product_id):
        """(the sale's `META` fields, available, expired holds) in one round trip."""
        keys = Keys(product_id)
        meta, stock, expired = query(
            self.redis,
            [
                ("HMGET", keys.sale, *META),
                ("MGET", *stripe_keys(keys.prefix, self.stripes)),
                ("ZCOUNT", keys.deadlines, "-inf", self.clock()),
            ],
        )
        stripes = meta[2]
        if stripes is not None and int(stripes) > self.stripes:
            stock += self.redis.mget(keys.stripes(int(stripes))[self.stripes :])
        return meta, sum(ints(stock)), expired

    def snapshot(self, product_id):
        """What Redis says about the sale now (expired holds are not yet returned)."""
        (status, limit, *_), available, _ = self._read_stock(product_id)
        sold = self.redis.get(Keys(product_id).sold)
        held = sum(hold.quantity for hold in self.holds(product_id))
        return SaleSnapshot(status, available, held, int(sold or 0), int(limit or 0))

    def counts(self, product_id):
        """(holds, units sold) as Redis counts them now, in one round trip. Holds are
        the live ones and the expired ones not yet returned."""
        keys = Keys(product_id)
        holds, sold = query(self.redis, [("ZCARD", keys.deadlines), ("GET", keys.sold)])
        return int(holds), int(sold or 0)

    def available(self, product_id, max_age=0.0):
        """(status as of now, available units), returning expired holds first.

        With `max_age` (seconds), an answer this process read that recently, with
        no change to the sale through this process since, is given again.
        """
        if max_age:
            seen = self.hints.stock_reads.get(product_id, max_age)
            if seen is not None:
                return seen
        meta, available, expired = self._read_stock(product_id)
        if expired:
            self.release_expired(product_id)
            meta, available, _ = self._read_stock(product_id)
        answer = (status_at(meta, self.clock()), available)
        if max_age:
            self.hints.stock_reads.put(product_id, answer)
        return answer

    def all_taken(self, product_id, total):
        """Whether the live sale has no unit available and `total` held or sold: a
        sell-out of `total` units. One consistent look: every key a unit moves
        through is WATCHed, and a change while it reads makes it read again."""
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.sale, keys.sold, keys.deadlines)
            status, stripes = pipe.hmget(keys.sale, "status", "stripes")
            if status != LIVE or stripes is None:
                pipe.unwatch()
                return False
            stripes = keys.stripes(int(stripes))
            pipe.watch(*stripes)
            if sum(ints(pipe.mget(stripes))):
                pipe.unwatch()
                return False  # units on sale: no need to read the holds
            sold = int(pipe.get(keys.sold) or 0)
            held = sum(hold.quantity for hold in self._holds(pipe, product_id))
            # EXEC fails (WatchError: read again) if any of it changed meanwhile.
            pipe.multi()
            pipe.exists(keys.sale)
            return held + sold >= total

        return self._transaction(body, product_id)

    def refuse_if_sold_out(self, product_id, quantity=1):
        """The sold-out fast path: raise SoldOut, without a transaction, while this
        process saw the product sold out moments ago.

        Within SOLD_OUT_TRUST_SECONDS of a read that found it sold out it answers from
        memory; later, up to SOLD_OUT_HINT_SECONDS, one plain read confirms it. Units
        that come back through this process clear the mark at once; through another,
        they are seen within SOLD_OUT_TRUST_SECONDS. Otherwise returns quietly.
        """
        age = self.hints.sold_out.age(product_id)
        if age is None:
            return
        if age < self.hints.sold_out_trust_seconds:
            raise SoldOut()
        meta, total, expired = self._read_stock(product_id)
        # A sale no longer open takes the full path, which says what became of it.
        if is_open(meta, self.clock()) and not expired and total < quantity:
            raise self._refusal(product_id, total, quantity)
        self.hints.sold_out.pop(product_id)

    def _refusal(self, product_id, total, quantity):
        """The error for too few units; sold out is remembered for the fast path."""
        if total <= 0:
            self.hints.sold_out.put(product_id)
            return SoldOut()
        return InsufficientStock(f"Only {total} units are available.")

    # -- reservations ---------------------------------------------------------

    def reserve(self, product_id, user_id, quantity=1):
        """Take `quantity` units into a new hold for `user_id`; returns the Hold.

        One round trip WATCHes and reads the sale, the user's count and one stripe
        (chosen at random among those last seen with units); a second runs
        MULTI/EXEC. Only when that stripe lacks units does it read them all and
        choose again.
        """
        self.refuse_if_sold_out(product_id, quantity)
        reservation = _Reservation(
            product_id,
            user_id,
            quantity,
            new_reservation_id(product_id),
            Keys(product_id),
            stripe_count=self.stripes,
        )
        hold = self._transaction(lambda pipe: self._try_reserve(pipe, reservation), product_id)
        if reservation.replicas_acked < self.ack_replicas:
            self._withdraw(reservation)
        return hold

    def _withdraw(self, reservation):
        """Take back a hold too few replicas confirmed (REDIS_ACK_REPLICAS), and refuse:
        a failover now could lose it, so it is never reported made. If the release
        fails too, the hold expires like any other."""
        try:
            self.release(reservation.id, only_if_expired=False, order_placed=False)
        except (redis.RedisError, Busy) as error:
            log.warning("engine: could not release unreplicated hold %s: %s", reservation.id, error)
        raise NotReplicated(
            f"{reservation.replicas_acked} of {self.ack_replicas} Redis replicas confirmed "
            f"the reservation within {self.ack_timeout_ms} ms; nothing was reserved."
        )

    def _try_reserve(self, pipe, reservation):
        """One look: the Hold, or LOOK_AGAIN when what it read says where else to look."""
        keys, quantity = reservation.keys, reservation.quantity
        user_key = keys.user(reservation.user_id)
        chosen_keys = [keys.stripe(i) for i in reservation.stripes_to_try(self.hints)]
        meta, (owned, *stock_here) = watch_and_read(
            pipe,
            [keys.sale, user_key, *chosen_keys],
            [("HMGET", keys.sale, *META), ("MGET", user_key, *chosen_keys)],
        )
        limit, stripes = check_open(meta, self.clock())
        if stripes != reservation.stripe_count:
            reservation.stripe_count = stripes
            return LOOK_AGAIN
        owned, stock_here = int(owned or 0), ints(stock_here)
        if owned + quantity > limit:
            return self._over_limit(reservation, owned, limit)
        if sum(stock_here) < quantity:
            return self._short_of_units(reservation)
        expires_at = self.clock() + self.hold_seconds
        writes = _hold_writes(reservation, chosen_keys, stock_here, expires_at)
        deadlines.check()
        if self.ack_replicas:
            reservation.replicas_acked = exec_and_wait(
                pipe, writes, self.ack_replicas, self.ack_timeout_ms, keys.acked
            )
        else:
            exec_packed(pipe, writes)
        return Hold(
            reservation.id, reservation.product_id, reservation.user_id, quantity, expires_at
        )

    def _over_limit(self, reservation, owned, limit):
        """The user's count is at the limit: if some of it is their own expired holds,
        return those and look again (their deadline passed, whoever sweeps), else refuse."""
        if not reservation.returned_own:
            reservation.returned_own = True
            if self._release_expired_of(reservation.product_id, reservation.user_id, owned):
                return LOOK_AGAIN
        raise LimitExceeded(
            f"The limit is {limit} per customer and you already hold or bought {owned}."
        )

    def _short_of_units(self, reservation):
        """The chosen stripes lack units: read them all and choose ones that have them,
        return expired holds once, or say sold out."""
        keys, quantity = reservation.keys, reservation.quantity
        stock, expired = query(
            self.redis,
            [
                ("MGET", *stripe_keys(keys.prefix, reservation.stripe_count)),
                ("ZCOUNT", keys.deadlines, "-inf", self.clock()),
            ],
        )
        stock = ints(stock)
        self.hints.remember_stock(reservation.product_id, stock)
        total = sum(stock)
        if total >= quantity:
            reservation.next_stripes = cover(stock, quantity)
            return LOOK_AGAIN
        if expired and not reservation.returned_expired:
            reservation.returned_expired = True
            self.release_expired(reservation.product_id)
            return LOOK_AGAIN
        raise self._refusal(reservation.product_id, total, quantity)

    # -- holds: checkout, expiry, release ---------------------------------------

    def get_hold(self, reservation_id):
        """The live or expired-but-not-yet-returned hold, or None."""
        product_id = product_of(reservation_id)
        data = self.redis.hgetall(Keys(product_id).hold(reservation_id))
        return hold_from(reservation_id, product_id, data)

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
            hold = hold_from(reservation_id, product_id, pipe.hgetall(hold_key))
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
            hold = hold_from(reservation_id, product_id, pipe.hgetall(hold_key))
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

        return self._units_may_be_back(self._transaction(body, product_id), product_id)

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

        return self._units_may_be_back(self._transaction(body, product_id), product_id)


def _hold_writes(reservation, chosen_keys, stock_here, expires_at):
    """The commands that take the units from the chosen stripes into a new hold."""
    keys, user_id, quantity = reservation.keys, reservation.user_id, reservation.quantity
    writes, remaining = [], quantity
    for key, units in zip(chosen_keys, stock_here, strict=True):
        take = min(units, remaining)
        if take:
            writes.append(("DECRBY", key, take))
            remaining -= take
    deadline = repr(expires_at)
    hold = ("HSET", keys.hold(reservation.id), "user", user_id, "quantity", quantity)
    return [
        *writes,
        ("INCRBY", keys.user(user_id), quantity),
        ("SADD", keys.buyers, user_id),
        (*hold, "expires_at", deadline),
        ("ZADD", keys.deadlines, deadline, reservation.id),
    ]
