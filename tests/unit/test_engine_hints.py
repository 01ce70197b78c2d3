"""The engine's hints: one bounded, time-limited cache per app, empty in a forked child."""

import os
import time

from flashcart import create_app
from flashcart.local_cache import LocalCache
from flashcart.sales import service as sales
from flashcart.sales.engine.hints import EngineHints
from flashcart.sales.engine.keys import Keys
from tests.support.app import app_settings
from tests.support.http import assert_problem


class Clock:
    def __init__(self, monkeypatch):
        self.now = time.monotonic()
        monkeypatch.setattr(time, "monotonic", lambda: self.now)


def test_a_full_cache_starts_over():
    cache = LocalCache(max_entries=3)
    for key in "abc":
        cache.put(key, key.upper())
    cache.put("a", "again")  # a key it has: no room needed
    assert len(cache) == 3

    cache.put("d", "D")

    assert len(cache) == 1 and cache.get("d") == "D" and cache.get("a") is None


def test_entries_age_out(monkeypatch):
    clock = Clock(monkeypatch)
    cache = LocalCache(max_age=1.0)
    cache.put("a", "A")
    clock.now += 0.5
    assert cache.get("a") == "A" and cache.age("a") == 0.5
    assert cache.get("a", max_age=0.5) is None  # a read may ask for younger

    clock.now += 0.5

    assert cache.get("a") is None and cache.age("a") is None
    assert len(cache) == 0  # an aged-out entry found is dropped


def test_without_max_age_entries_stay_until_replaced(monkeypatch):
    clock = Clock(monkeypatch)
    cache = LocalCache()
    cache.put("a", "A")
    clock.now += 10**6
    assert cache.get("a") == "A"
    assert cache.get("a", max_age=1) is None


def test_a_forked_child_starts_with_empty_hints():
    hints = EngineHints()
    hints.sold_out.put("p")
    hints.stock_reads.put("p", ("live", 3))
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        empty = not len(hints.sold_out) and hints.stock_reads.get("p") is None
        os.write(writer, b"1" if empty else b"0")
        os._exit(0)
    os.close(writer)
    assert os.read(reader, 1) == b"1"
    os.waitpid(child, 0)
    os.close(reader)
    assert hints.sold_out.age("p") is not None  # the parent keeps its own


def reserve(client, product_id, headers):
    return client.post(f"/api/v1/sales/reserve/{product_id}", headers=headers)


def test_each_app_keeps_its_own_hints_across_requests(
    app, client, app_config, mongo_db, redis_client, make_product, make_user, headers_for
):
    other = create_app({**app_settings(), **app_config}, db=mongo_db, redis_client=redis_client)
    product = make_product(live=True, stock=1, per_user_limit=1)
    product_id = product["id"]
    assert reserve(client, product_id, headers_for(make_user())).status_code == 201
    assert_problem(reserve(client, product_id, headers_for(make_user())), 409, "sold_out")
    with app.app_context():
        assert sales.inventory().hints is sales.inventory().hints is sales.engine_hints()
    assert sales.engine_hints(app).sold_out.age(product_id) is not None
    assert sales.engine_hints(other).sold_out.age(product_id) is None

    redis_client.incr(Keys(product_id).stripe(0))  # a unit another worker returned

    # This app answers from its fresh mark; the other has none and finds the unit.
    assert_problem(reserve(client, product_id, headers_for(make_user())), 409, "sold_out")
    other_client = other.test_client()
    assert reserve(other_client, product_id, headers_for(make_user())).status_code == 201
