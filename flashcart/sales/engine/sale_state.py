"""A sale's lifecycle in Redis: open, rebuild, end, restock, close and drop, and
the reads an audit makes of it."""

from collections import Counter

from flashcart.errors import Conflict
from flashcart.sales.engine.keys import CLOSED, ENDED, MAX_STRIPES, Keys
from flashcart.sales.engine.records import SaleSnapshot, hold_from, ints, split
from flashcart.sales.engine.transactions import Transactions


class SaleLifecycle(Transactions):
    """Putting a sale in Redis, changing its status or stock, and taking it out."""

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

        return self._units_may_be_back(self._transaction(body, product_id), product_id)

    def _write_sale(self, pipe, keys, plan, available, old_buyers, held_by_user=None):
        # `total`: the stock level these units count, so a restock racing a rebuild
        # adds only what the rebuild did not count (see `restock`).
        meta = {
            "status": plan.status,
            "limit": plan.limit,
            "stripes": self.stripes,
            "total": plan.total,
        }
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
        for key, units_here in zip(stripes, split(available, self.stripes), strict=True):
            pipe.set(key, units_here)
        for user_id, n in units.items():
            pipe.set(keys.user(user_id), n)
        if units:
            pipe.sadd(keys.buyers, *units)
        pipe.set(keys.sold, plan.sold)

    def rebuild(
        self,
        product_id,
        make_plan,
        already_sold=lambda reservation_ids: (),
        only_if_missing=False,
        only_if_drifted=False,
    ):
        """Rewrite the sale's Redis state from the durable truth in `plan`.

        Live holds are kept (their units stay held); everything else is derived:
        available = total - sold - held. `make_plan()` is called after the WATCH,
        so a reservation, checkout, cancel or restock racing the rebuild makes it
        start over; it returns None when the sale should not be in Redis (closed
        meanwhile): then nothing is written. With `only_if_missing`, a sale Redis
        has is left alone (another sweeper, a restock or a start put it back). With
        `only_if_drifted`, a sale whose Redis state already is what the rebuild would
        write is left alone: this look is consistent (every key a unit moves through
        is watched), so a checkout or cancel in flight is never taken for drift.
        Returns the snapshot written, or None. Used by the sweeper when Redis lost a
        sale or drifted, by a restock that finds no sale, and by `flask audit --repair`.

        `already_sold(reservation_ids)` names holds whose orders were placed: their
        claim was lost (a Redis failover to a replica that had not received it), so
        they are dropped, their units counted as sold and never returned.
        """
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(
                keys.sale, keys.sold, keys.deadlines, keys.claimed, keys.restored, keys.buyers
            )
            if only_if_missing and pipe.exists(keys.sale):
                pipe.unwatch()
                return None
            plan = make_plan()
            if plan is None:
                pipe.unwatch()
                return None
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
            if only_if_drifted and not sold_holds:
                units = dict(Counter(plan.sold_by_user) + Counter(held_by_user))
                if self._already(pipe, keys, plan, available, units, old_buyers):
                    pipe.unwatch()
                    return None
            pipe.multi()
            if sold_holds:
                pipe.delete(*(keys.hold(reservation_id) for reservation_id in sold_holds))
                pipe.zrem(keys.deadlines, *sold_holds)
            self._write_sale(pipe, keys, plan, available, old_buyers, held_by_user)
            return SaleSnapshot(plan.status, available, held, plan.sold, plan.limit)

        return self._units_may_be_back(self._transaction(body, product_id), product_id)

    def _already(self, pipe, keys, plan, available, units, buyers):
        """Whether the sale in Redis already is what a rebuild from `plan` writes
        (read under the rebuild's WATCH). A sale closing is left to the sweeper."""
        status, limit, stripes, total = pipe.hmget(keys.sale, "status", "limit", "stripes", "total")
        if stripes is None:
            return False
        if status == CLOSED:
            return True
        buyers = sorted(buyers)
        counts = ints(pipe.mget([keys.user(u) for u in buyers])) if buyers else []
        return (
            (status, limit, total) == (plan.status, str(plan.limit), str(plan.total))
            and sum(ints(pipe.mget(keys.stripes(int(stripes))))) == available
            and int(pipe.get(keys.sold) or 0) == plan.sold
            and {u: n for u, n in zip(buyers, counts, strict=True) if n} == units
        )

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

        return self._units_may_be_back(self._transaction(body, product_id), product_id)

    def restock(self, product_id, quantity, total):
        """Count a restock of `quantity` units in Redis: bring the sale's units up to
        `total`, MongoDB's stock after the restock. Returns False if the sale is not
        in Redis.

        MongoDB's stock is written first, so a rebuild may read it before this runs:
        its `total` then counts these units already, and nothing is added. A later
        restock's step may have counted them too. Restocks and rebuilds in any
        order count each unit once.
        """
        keys = Keys(product_id)

        def body(pipe):
            pipe.watch(keys.sale)
            stripes, counted = pipe.hmget(keys.sale, "stripes", "total")
            if stripes is None:
                return False
            # A sale written before the hash kept its total counts up to the restock.
            counted = total - quantity if counted is None else int(counted)
            if counted >= total:
                pipe.unwatch()
                return True
            pipe.multi()
            count = int(stripes)
            for key, units in zip(keys.stripes(count), split(total - counted, count), strict=True):
                if units:
                    pipe.incrby(key, units)
            # A change to the sale hash: a rebuild racing this restock starts over.
            pipe.hset(keys.sale, "total", total)
            return True

        return self._units_may_be_back(self._transaction(body, product_id), product_id)

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

        return self._units_may_be_back(self._transaction(body, product_id), product_id)

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
        self.hints.sale_changed(product_id)

    # -- what an audit reads ----------------------------------------------------

    def has_sale(self, product_id):
        """Whether Redis has the sale (its hash); a restart without persistence loses it."""
        return bool(self.redis.exists(Keys(product_id).sale))

    def counted_total(self, product_id):
        """The stock level the sale's units in Redis count (MongoDB's stock when they
        were last written), or None."""
        total = self.redis.hget(Keys(product_id).sale, "total")
        return None if total is None else int(total)

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
            hold_from(rid, product_id, data)
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
