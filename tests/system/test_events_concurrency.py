"""Events under concurrency: many checkouts and cancels at once make exactly one event
per change, and a consumer paging the feed while many publishers insert misses none.

Redis is the real redis-server. MongoDB is reached with PyMongo (MONGO_TEST_URI's
server, else the stand-in, which runs one command at a time like a server applies
one write to a document at a time; mongomock alone checks a unique index in several
steps, which a real server never exposes).
"""

import collections
import threading
import time

import pytest

from flashcart.checkout import recovery
from flashcart.events import feed, outbox
from flashcart.stores import connect_redis
from tests.support.mongo import fresh_server_database
from tests.support.threads import run_threads


@pytest.fixture
def mongo_db():
    """Overrides conftest's: a fresh database on a MongoDB server (see above)."""
    with fresh_server_database() as db:
        yield db


@pytest.fixture
def redis_client(redis_server):
    """Overrides conftest's: the real redis-server, with a pool wide enough for the threads."""
    if redis_server is None:
        pytest.skip("no redis-server binary: this test needs a real Redis")
    client = connect_redis(redis_server.url, max_connections=1000)
    client.flushdb()
    yield client
    client.close()


def all_events(mongo_db):
    return list(mongo_db.events.find().sort("seq", 1))


def assert_feed_is_whole(mongo_db):
    """Seqs 1..n with no gap, ids unique, and no event left in any outbox."""
    events = all_events(mongo_db)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert len({event["_id"] for event in events}) == len(events)
    for collection in ("orders", "products"):
        assert mongo_db[collection].count_documents({"outbox._id": {"$gt": ""}}) == 0
    return events


def test_concurrent_checkouts_and_cancels_make_exactly_one_event_per_change(
    app, make_product, make_user, headers_for, mongo_db
):
    units, shoppers = 20, 50
    pid = make_product(live=True, stock=units, per_user_limit=1)["id"]
    headers = [headers_for(make_user()) for _ in range(shoppers)]

    def shop(index):
        client = app.test_client()
        reserved = client.post(f"/api/v1/sales/reserve/{pid}", json={}, headers=headers[index])
        if reserved.status_code != 201:
            return None
        placed = client.post(
            "/api/v1/orders", json={"reservation_id": reserved.json["id"]}, headers=headers[index]
        )
        assert placed.status_code == 201, placed.json
        return placed.json["id"]

    bought = [(i, order) for i, order in enumerate(run_threads(shoppers, shop)) if order]
    assert len(bought) == units
    with app.app_context():
        # The sell-out is recorded by a refused reservation, or else by the sweeper
        # (a refusal's check gives up while checkouts keep moving units): once either way.
        recovery.sweep()
    # Half of the buyers cancel, each twice at once (a double click).
    cancels = [pair for pair in bought[::2] for _ in range(2)]

    def cancel(index):
        shopper, order_id = cancels[index]
        response = app.test_client().delete(f"/api/v1/orders/{order_id}", headers=headers[shopper])
        return response.status_code

    statuses = collections.Counter(run_threads(len(cancels), cancel))
    assert statuses == {200: units // 2, 409: units // 2}

    events = assert_feed_is_whole(mongo_db)
    counts = collections.Counter(event["type"] for event in events)
    assert counts == {
        "sale.started": 1,
        "order.placed": units,
        "sale.sold_out": 1,
        "order.cancelled": units // 2,
    }
    placed = [event["resource"]["id"] for event in events if event["type"] == "order.placed"]
    assert sorted(placed) == sorted(order for _, order in bought)
    cancelled = {event["resource"]["id"] for event in events if event["type"] == "order.cancelled"}
    assert cancelled == {order for _, order in bought[::2]}
    placed_at = {
        event["resource"]["id"]: event["seq"] for event in events if event["type"] == "order.placed"
    }
    for event in events:
        if event["type"] == "order.cancelled":
            assert event["seq"] > placed_at[event["resource"]["id"]]


def test_a_reader_paging_while_many_publishers_insert_misses_no_event(app, mongo_db):
    publishers, each = 8, 25
    source = mongo_db.scratch
    docs = []
    for publisher in range(publishers):
        for n in range(each):
            entry = outbox.pending(
                "order.placed", "order", f"{publisher}-{n}", {}, change="placed", at=None
            )
            docs.append({"_id": f"{publisher}-{n}", "publisher": publisher, "outbox": [entry]})
    source.insert_many(docs)
    expected = {doc["outbox"][0]["_id"] for doc in docs}
    read, done = [], threading.Event()

    def consume():
        # A consumer paging as fast as it can, small pages, while the publishers run.
        with app.app_context():
            cursor, deadline = 0, time.monotonic() + 30
            while len(read) < len(expected) and time.monotonic() < deadline:
                page = feed.events_after(cursor, limit=3)
                read.extend(page)
                if page:
                    cursor = page[-1]["seq"]
            done.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()

    def publish(index, barrier):
        mine = [doc for doc in docs if doc["publisher"] == index]
        with app.app_context():
            barrier.wait()
            return sum(outbox.publish(source, doc) for doc in mine)

    inserted = run_threads(publishers, publish, pass_barrier=True)
    assert done.wait(30), "the reader never saw every event"

    assert sum(inserted) == len(expected)
    seqs = [event["seq"] for event in read]
    assert seqs == list(range(1, len(expected) + 1)), "the reader skipped or repeated a seq"
    assert {event["_id"] for event in read} == expected
    assert source.count_documents({"outbox._id": {"$gt": ""}}) == 0


def test_publishers_of_the_same_outbox_at_once_insert_each_event_once(app, mongo_db):
    entries = [
        outbox.pending("order.placed", "order", f"o{n}", {}, change="placed", at=None)
        for n in range(10)
    ]
    mongo_db.scratch.insert_one({"_id": "shared", "outbox": entries})
    doc = mongo_db.scratch.find_one({"_id": "shared"})

    def publish(_):
        with app.app_context():
            return outbox.publish(mongo_db.scratch, doc)

    inserted = run_threads(8, publish)

    assert sum(inserted) == len(entries)
    events = assert_feed_is_whole(mongo_db)
    assert [event["_id"] for event in events] == [entry["_id"] for entry in entries]
    assert mongo_db.scratch.find_one({"_id": "shared"})["outbox"] == []
