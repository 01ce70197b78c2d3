"""The inventory engine's own rules, on the real redis-server: stripes and fast paths."""

import os
import time

import pytest
import redis
from bson import ObjectId

from flashcart.errors import Busy
from flashcart.sales.engine.errors import (
    InsufficientStock,
    LimitExceeded,
    ReservationExpired,
    ReservationNotFound,
    SaleEnded,
    SoldOut,
)
from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.keys import Keys
from flashcart.sales.engine.records import SalePlan


def open_sale(engine, stock, limit=100):
    product_id = str(ObjectId())
    engine.open_sale(product_id, SalePlan("live", limit, stock, {}))
    return product_id


def test_units_are_spread_over_the_stripes(redis_client):
    engine = Inventory(redis_client, stripes=4)
    product_id = open_sale(engine, 10)
    stripes = [int(redis_client.get(k)) for k in Keys(product_id).stripes(4)]
    assert stripes == [3, 3, 2, 2]
    assert engine.available(product_id) == ("live", 10)


def test_a_reservation_larger_than_any_stripe_takes_from_several(redis_client):
    engine = Inventory(redis_client, stripes=8)
    product_id = open_sale(engine, 8)  # one unit per stripe

    hold = engine.reserve(product_id, "ana", 5)

    assert hold.quantity == 5
    assert engine.available(product_id) == ("live", 3)
    with pytest.raises(InsufficientStock):
        engine.reserve(product_id, "ben", 4)
    engine.reserve(product_id, "ben", 3)
    with pytest.raises(SoldOut):
        engine.reserve(product_id, "cy", 1)


def test_units_coming_back_after_a_sell_out_are_sold_again_at_once(redis_client):
    engine = Inventory(redis_client, stripes=4)
    product_id = open_sale(engine, 1)
    hold = engine.reserve(product_id, "ana")
    for _ in range(3):  # the sold-out fast path is now in use
        with pytest.raises(SoldOut):
            engine.reserve(product_id, "ben")

    assert engine.release(hold.id, only_if_expired=False) == 1

    assert engine.reserve(product_id, "ben").quantity == 1


def test_units_another_process_returns_are_seen_once_the_sold_out_mark_is_old(redis_client):
    engine = Inventory(redis_client, stripes=4)
    product_id = open_sale(engine, 1)
    engine.reserve(product_id, "ana")
    with pytest.raises(SoldOut):
        engine.reserve(product_id, "ben")
    redis_client.incr(Keys(product_id).stripe(0))  # a unit another worker returned

    with pytest.raises(SoldOut):  # within the trust window: answered from memory
        engine.reserve(product_id, "ben")
    engine.hints.sold_out_trust_seconds = 0  # the mark is old

    assert engine.reserve(product_id, "ben").quantity == 1


def test_the_sold_out_fast_path_still_reports_an_ended_sale(redis_client):
    engine = Inventory(redis_client, stripes=4)
    product_id = open_sale(engine, 1)
    engine.reserve(product_id, "ana")
    with pytest.raises(SoldOut):
        engine.reserve(product_id, "ben")

    engine.end_sale(product_id)

    with pytest.raises(SaleEnded):
        engine.reserve(product_id, "ben")


def test_a_sale_keeps_its_stripe_count_when_the_setting_changes(redis_client):
    product_id = open_sale(Inventory(redis_client, stripes=8), 16)
    engine = Inventory(redis_client, stripes=2)

    holds = [engine.reserve(product_id, f"user-{i}") for i in range(16)]

    assert len(holds) == 16
    with pytest.raises(SoldOut):
        engine.reserve(product_id, "late")


def test_restock_spreads_the_new_units_and_clears_a_sell_out(redis_client):
    engine = Inventory(redis_client, stripes=4)
    product_id = open_sale(engine, 1)
    engine.reserve(product_id, "ana")
    with pytest.raises(SoldOut):
        engine.reserve(product_id, "ben")

    assert engine.restock(product_id, 6, total=7)

    stripes = [int(redis_client.get(k)) for k in Keys(product_id).stripes(4)]
    assert sum(stripes) == 6 and max(stripes) - min(stripes) <= 1
    assert engine.reserve(product_id, "ben").quantity == 1


def test_restock_adds_only_the_units_redis_does_not_count_yet(redis_client):
    engine = Inventory(redis_client, stripes=4)
    product_id = open_sale(engine, 10)

    # Two restocks of MongoDB (10 -> 13 -> 18) reach Redis in the other order.
    assert engine.restock(product_id, 5, total=18)
    assert engine.restock(product_id, 3, total=13)
    assert engine.snapshot(product_id).available == 18
    # A rebuild that read MongoDB after a restock counts its units already.
    engine.rebuild(product_id, lambda: SalePlan("live", 3, 20, {}))
    assert engine.restock(product_id, 2, total=20)
    assert engine.snapshot(product_id).available == 20
    assert engine.counted_total(product_id) == 20
    # No sale in Redis: nothing is written.
    assert not engine.restock("f" * 24, 2, total=4)
    assert not engine.has_sale("f" * 24)


def test_exhausted_retries_are_busy_not_a_hang(redis_client, monkeypatch):
    from flashcart.sales.engine import inventory

    engine = Inventory(redis_client, stripes=1, max_attempts=3)
    product_id = open_sale(engine, 5)
    real_exec, attempts = inventory.exec_packed, []

    def exec_after_a_rival_write(pipe, commands):
        attempts.append(1)
        redis_client.incr(Keys(product_id).stripe(0))  # another client wrote the stripe
        return real_exec(pipe, commands)

    monkeypatch.setattr(inventory, "exec_packed", exec_after_a_rival_write)

    with pytest.raises(Busy):
        engine.reserve(product_id, "ana")
    assert len(attempts) == 3
    assert not redis_client.exists(Keys(product_id).user("ana"))


def test_a_client_keeps_its_stripe_until_another_client_commits_there_first(
    redis_client, monkeypatch
):
    # So concurrent clients settle on different stripes instead of meeting by chance.
    from flashcart.sales.engine import hints, inventory

    engine = Inventory(redis_client, stripes=64)
    product_id = open_sale(engine, 64 * 100, limit=1000)
    stripe_keys = Keys(product_id).stripes(64)

    def units():
        return [int(redis_client.get(key)) for key in stripe_keys]

    for _ in range(20):
        engine.reserve(product_id, "ana")
    [mine] = [i for i, left in enumerate(units()) if left < 100]
    assert units()[mine] == 80

    real_exec, rivals = inventory.exec_packed, []

    def exec_after_a_rival_write(pipe, commands):
        if not rivals:
            rivals.append(1)
            redis_client.decr(stripe_keys[mine])  # another client took a unit there
        return real_exec(pipe, commands)

    monkeypatch.setattr(inventory, "exec_packed", exec_after_a_rival_write)
    next_stripe = (mine + 1) % 64
    monkeypatch.setattr(hints.random, "getrandbits", lambda bits: next_stripe)
    for _ in range(10):
        engine.reserve(product_id, "ana")

    after = units()
    assert after[mine] == 79  # the rival's unit only
    assert after[next_stripe] == 90
    assert sum(after) == 64 * 100 - 31


def test_a_forked_worker_draws_its_own_stripe_probe():
    from flashcart.sales.engine.hints import StripeProbe

    probe = StripeProbe()
    drawn = probe.value()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(writer, b"1" if probe.value() != drawn else b"0")
        os._exit(0)
    os.close(writer)
    assert os.read(reader, 1) == b"1"
    os.waitpid(child, 0)
    os.close(reader)
    assert probe.value() == drawn  # the parent keeps its own


def test_an_error_reply_midway_does_not_leave_replies_for_the_next_caller(redis_server):
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    # One pooled connection: whatever the failed call leaves unread, the next one reads.
    pool = redis.BlockingConnectionPool.from_url(
        redis_server.url, max_connections=1, decode_responses=True
    )
    client = redis.Redis(connection_pool=pool)
    client.flushdb()
    engine = Inventory(client, stripes=2)
    broken, fine = open_sale(engine, 5), open_sale(engine, 5)
    client.delete(Keys(broken).sale)
    client.set(Keys(broken).sale, "not a hash")  # HMGET fails before the other reads

    with pytest.raises(redis.ResponseError):
        engine.reserve(broken, "ana")

    assert engine.reserve(fine, "ana").quantity == 1
    assert client.get(Keys(fine).user("ana")) == "1"
    pool.disconnect()


def test_a_recent_stock_read_is_reused_until_this_process_changes_the_sale(
    redis_client, monkeypatch
):
    engine = Inventory(redis_client, stripes=4)
    product_id = open_sale(engine, 10)
    assert engine.available(product_id, max_age=60) == ("live", 10)
    redis_client.decr(Keys(product_id).stripe(0))  # another worker sold a unit

    assert engine.available(product_id, max_age=60) == ("live", 10)  # remembered
    assert engine.available(product_id) == ("live", 9)  # no max_age: Redis
    engine.reserve(product_id, "ana")  # a change through this process
    assert engine.available(product_id, max_age=60) == ("live", 8)
    redis_client.decr(Keys(product_id).stripe(1))
    clock = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: clock + 61)
    assert engine.available(product_id, max_age=60) == ("live", 7)  # too old


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


def test_a_users_own_expired_hold_is_returned_before_the_limit_refuses(redis_client):
    clock = Clock()
    engine = Inventory(redis_client, stripes=4, hold_seconds=10, clock=clock)
    product_id = open_sale(engine, 10, limit=1)
    first = engine.reserve(product_id, "ana")
    engine.reserve(product_id, "ben")
    with pytest.raises(LimitExceeded):
        engine.reserve(product_id, "ana")

    clock.now += 10  # both deadlines pass; nobody sweeps
    second = engine.reserve(product_id, "ana")

    assert engine.get_hold(first.id) is None
    assert engine.get_hold(second.id) is not None
    assert engine.user_units(product_id) == {"ana": 1, "ben": 1}  # ben's is not ana's to return
    snapshot = engine.snapshot(product_id)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (8, 2, 0)
    with pytest.raises(ReservationExpired):
        engine.claim(first.id, "ana", "order-1")
    with pytest.raises(ReservationNotFound):
        engine.claim(first.id, "ben", "order-1")
    assert engine.expired_for(first.id, "ana") and not engine.expired_for(first.id, "ben")


def test_an_expired_hold_whose_order_was_placed_still_counts_against_the_limit(redis_client):
    # Redis lost the claim (a failover), MongoDB has the order: the units are sold.
    clock = Clock()
    placed = set()
    engine = Inventory(
        redis_client,
        stripes=4,
        hold_seconds=10,
        clock=clock,
        placed_orders=lambda product_id, ids: placed & set(ids),
    )
    product_id = open_sale(engine, 10, limit=1)
    hold = engine.reserve(product_id, "ana")
    placed.add(hold.id)
    clock.now += 10

    with pytest.raises(LimitExceeded):
        engine.reserve(product_id, "ana")

    snapshot = engine.snapshot(product_id)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (9, 0, 1)
    assert engine.user_units(product_id) == {"ana": 1}
    assert not engine.expired_for(hold.id, "ana")
