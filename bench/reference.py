"""A single-script (Lua) reservation: a yardstick for the benchmark only.

The app never uses Lua (a product decision); this does the same checks and writes
as `Inventory.reserve` in one server-side script, to show what one round trip per
reservation costs on this machine.
"""

import secrets
import time

import redis

from flashcart.sales.engine.keys import Keys

RESERVE = """
local sale = redis.call('HMGET', KEYS[1], 'status', 'limit', 'stock')
if not sale[1] then return -1 end
local qty = tonumber(ARGV[2])
local owned = tonumber(redis.call('GET', KEYS[2]) or '0')
if owned + qty > tonumber(sale[2]) then return -2 end
if tonumber(sale[3]) < qty then return -3 end
redis.call('HINCRBY', KEYS[1], 'stock', -qty)
redis.call('INCRBY', KEYS[2], qty)
redis.call('HSET', KEYS[3], 'user', ARGV[1], 'quantity', qty, 'expires_at', ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
return 1
"""


class ScriptReservations:
    def __init__(self, redis_client, hold_seconds=600):
        self.redis = redis_client
        self.hold_seconds = hold_seconds
        self.script = redis_client.register_script(RESERVE)

    def open(self, product_id, stock, limit):
        keys = Keys(product_id)
        self.redis.hset(keys.sale, mapping={"status": "live", "limit": limit, "stock": stock})

    def reserve(self, product_id, user_id, quantity=1):
        keys = Keys(product_id)
        reservation_id = f"{product_id}.{secrets.token_urlsafe(12)}"
        result = self.script(
            keys=[
                keys.sale,
                f"{keys.prefix}ref-user:{user_id}",
                keys.hold(reservation_id),
                keys.deadlines,
            ],
            args=[user_id, quantity, repr(time.time() + self.hold_seconds), reservation_id],
        )
        if result != 1:
            raise RuntimeError(f"reference reservation refused: {result}")
        return reservation_id


class NaiveWatchReservations:
    """The first engine's design, kept as the "before" in the benchmark.

    WATCH the one sale hash (stock and per-user counts), read it, MULTI/EXEC the
    writes: every concurrent reservation collides on the same key.
    """

    def __init__(self, redis_client, hold_seconds=600, on_retry=None):
        self.redis = redis_client
        self.hold_seconds = hold_seconds
        self.on_retry = on_retry

    def open(self, product_id, stock, limit):
        ScriptReservations(self.redis).open(product_id, stock, limit)

    def reserve(self, product_id, user_id, quantity=1):
        keys = Keys(product_id)
        reservation_id = f"{product_id}.{secrets.token_urlsafe(12)}"
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(keys.sale)
                    status, limit, stock, owned = pipe.hmget(
                        keys.sale, "status", "limit", "stock", f"u:{user_id}"
                    )
                    if int(owned or 0) + quantity > int(limit) or int(stock) < quantity:
                        raise RuntimeError("naive reservation refused")
                    expires_at = time.time() + self.hold_seconds
                    pipe.multi()
                    pipe.hincrby(keys.sale, "stock", -quantity)
                    pipe.hincrby(keys.sale, f"u:{user_id}", quantity)
                    pipe.hset(
                        keys.hold(reservation_id),
                        mapping={"user": user_id, "quantity": quantity, "expires_at": expires_at},
                    )
                    pipe.zadd(keys.deadlines, {reservation_id: expires_at})
                    pipe.execute()
                    return reservation_id
                except redis.WatchError:
                    if self.on_retry:
                        self.on_retry()
