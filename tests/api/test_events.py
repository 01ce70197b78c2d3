"""Order and sale events: each change recorded exactly once with the resource as the
API showed it, published by the request or, after a crash, by the sweeper, and read
through the admin's pull feed (GET /api/v1/events)."""

import hashlib
import time
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from prometheus_client import REGISTRY

from flashcart.checkout import recovery
from flashcart.events import outbox
from flashcart.sales.engine.inventory import Inventory
from tests.support.http import assert_problem

EVENTS = "/api/v1/events"


@pytest.fixture
def app_config(app_config):
    # The sweeper may finish any half-done order at once (no grace for live requests).
    return {**app_config, "SWEEP_GRACE_SECONDS": 0}


class Crash(RuntimeError):
    """The process 'died' here."""


def crash_once(monkeypatch, owner, name, after=False):
    """Make owner.name raise Crash the first time it is called (after running it, with
    `after`); later calls run as usual."""
    original = getattr(owner, name)
    state = {"crashed": 0}

    def step(*args, **kwargs):
        if state["crashed"]:
            return original(*args, **kwargs)
        state["crashed"] += 1
        if after:
            original(*args, **kwargs)
        raise Crash(f"crashed in {name}")

    monkeypatch.setattr(owner, name, step)
    return state


def reserve(client, pid, headers, quantity=1):
    return client.post(f"/api/v1/sales/reserve/{pid}", json={"quantity": quantity}, headers=headers)


def checkout(client, rid, headers):
    return client.post("/api/v1/orders", json={"reservation_id": rid}, headers=headers)


def bought(client, pid, headers, quantity=1):
    reserved = reserve(client, pid, headers, quantity)
    assert reserved.status_code == 201, reserved.json
    placed = checkout(client, reserved.json["id"], headers)
    assert placed.status_code == 201, placed.json
    return placed.json


def run_sweep(app):
    with app.app_context():
        return recovery.sweep()


def read_feed(client, headers, limit=2, **query):
    """Every event, paging with `next` (`limit` at a time); checks the paging itself."""
    events, after = [], "0"
    while True:
        response = client.get(
            EVENTS, query_string={"after": after, "limit": limit, **query}, headers=headers
        )
        assert response.status_code == 200, response.json
        page = response.json
        assert len(page["items"]) <= limit
        if not page["items"]:
            assert page["next"] == after
            return events
        assert page["next"] == page["items"][-1]["cursor"]
        events += page["items"]
        after = page["next"]


def of_type(events, event_type):
    return [event for event in events if event["type"] == event_type]


def the_one(events, event_type):
    found = of_type(events, event_type)
    assert len(found) == 1, [event["type"] for event in events]
    return found[0]


def published_count(event_type):
    """flashcart_events_published_total for the type, as /metrics would show it."""
    sample = REGISTRY.get_sample_value("flashcart_events_published_total", {"type": event_type})
    return sample or 0.0


def outbox_of(mongo_db, collection, doc_id):
    return mongo_db[collection].find_one({"_id": ObjectId(doc_id)}).get("outbox", [])


# -- the catalogue, through a drop --------------------------------------------------------


def test_a_drop_records_each_change_once_with_the_resource_as_the_api_showed_it(
    client, make_product, make_user, headers_for, admin_headers
):
    product = make_product(stock=2, per_user_limit=2)
    pid = product["id"]
    started = client.post(f"/api/v1/sales/start/{pid}", headers=admin_headers)
    assert started.status_code == 200
    shown_live = client.get(f"/api/v1/products/{pid}").json
    first, second, late = (headers_for(make_user()) for _ in range(3))
    placed = bought(client, pid, first)
    assert reserve(client, pid, second).status_code == 201  # the last unit, held
    assert_problem(reserve(client, pid, late), 409, "sold_out")
    cancelled = client.delete(f"/api/v1/orders/{placed['id']}", headers=first)
    assert cancelled.status_code == 200
    restocked = client.post(
        f"/api/v1/sales/restock/{pid}", json={"quantity": 3}, headers=admin_headers
    )
    assert restocked.status_code == 200
    assert client.post(f"/api/v1/sales/end/{pid}", headers=admin_headers).status_code == 200

    events = read_feed(client, admin_headers)

    assert [event["type"] for event in events] == [
        "sale.started",
        "order.placed",
        "sale.sold_out",
        "order.cancelled",
        "sale.restocked",
        "sale.ended",
    ]
    cursors = [int(event["cursor"]) for event in events]
    assert cursors == sorted(set(cursors))
    assert len({event["id"] for event in events}) == len(events)
    assert all(event["id"].startswith("evt_") for event in events)
    sale, order = {"type": "sale", "id": pid}, {"type": "order", "id": placed["id"]}
    assert [event["resource"] for event in events] == [sale, order, sale, order, sale, sale]
    by_type = {event["type"]: event for event in events}
    assert by_type["sale.started"]["data"] == shown_live
    assert by_type["order.placed"]["data"] == placed
    assert by_type["order.cancelled"]["data"] == cancelled.json
    assert by_type["sale.sold_out"]["data"] == shown_live  # 2 units, live
    assert by_type["sale.restocked"]["data"] == {**shown_live, "stock": 5}
    assert by_type["sale.ended"]["data"] == {**shown_live, "stock": 5, "sale_status": "ended"}
    assert by_type["order.placed"]["created_at"] == placed["updated_at"]
    assert by_type["order.cancelled"]["created_at"] == cancelled.json["updated_at"]


def test_an_event_id_is_derived_from_the_change_it_records(
    client, make_product, user_headers, admin_headers
):
    pid = make_product(live=True)["id"]
    placed = bought(client, pid, user_headers)

    event = the_one(read_feed(client, admin_headers), "order.placed")

    key = f"order:{placed['id']}:order.placed:placed"
    assert event["id"] == "evt_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def test_retries_and_repeats_record_nothing_twice(
    app, client, make_product, user_headers, admin_headers
):
    pid = make_product(live=True, stock=5)["id"]
    reserved = reserve(client, pid, user_headers).json["id"]
    assert checkout(client, reserved, user_headers).status_code == 201
    retried = checkout(client, reserved, user_headers)
    assert retried.status_code == 200
    order_id = retried.json["id"]
    assert client.delete(f"/api/v1/orders/{order_id}", headers=user_headers).status_code == 200
    assert_problem(client.delete(f"/api/v1/orders/{order_id}", headers=user_headers), 409)
    assert_problem(client.post(f"/api/v1/sales/start/{pid}", headers=admin_headers), 409)
    for _ in range(2):
        assert client.post(f"/api/v1/sales/end/{pid}", headers=admin_headers).status_code == 200
    run_sweep(app)
    run_sweep(app)

    events = read_feed(client, admin_headers)

    assert sorted(event["type"] for event in events) == [
        "order.cancelled",
        "order.placed",
        "sale.ended",
        "sale.started",
    ]


def test_a_failed_checkout_and_a_draft_restock_are_not_events(
    short_holds, client, make_product, user_headers, admin_headers
):
    draft = make_product(stock=3)["id"]
    restocked = client.post(
        f"/api/v1/sales/restock/{draft}", json={"quantity": 2}, headers=admin_headers
    )
    assert restocked.status_code == 200
    pid = make_product(live=True)["id"]
    reserved = reserve(client, pid, user_headers).json["id"]
    time.sleep(1.2)
    assert_problem(checkout(client, reserved, user_headers), 410, "reservation_expired")

    events = read_feed(client, admin_headers)

    assert [(event["type"], event["resource"]["id"]) for event in events] == [("sale.started", pid)]


# -- sold out: in Redis, recorded once per stock level --------------------------------------


def test_the_sweeper_records_a_sell_out_no_request_was_refused_for_once_per_stock_level(
    app, client, make_product, user_headers, admin_headers
):
    pid = make_product(live=True, stock=2, per_user_limit=5)["id"]
    assert reserve(client, pid, user_headers, 2).status_code == 201

    assert run_sweep(app)["sold_out_recorded"] == 1
    assert "sold_out_recorded" not in run_sweep(app)
    client.post(f"/api/v1/sales/restock/{pid}", json={"quantity": 1}, headers=admin_headers)
    assert "sold_out_recorded" not in run_sweep(app)  # one unit on sale again
    assert reserve(client, pid, user_headers).status_code == 201
    assert run_sweep(app)["sold_out_recorded"] == 1

    sold_out = of_type(read_feed(client, admin_headers), "sale.sold_out")
    assert [event["data"]["stock"] for event in sold_out] == [2, 3]
    assert sold_out[0]["id"] != sold_out[1]["id"]


def test_units_coming_back_and_selling_again_do_not_announce_a_second_sell_out(
    app, client, make_product, make_user, headers_for, admin_headers
):
    pid = make_product(live=True, stock=1)["id"]
    first, second, late = (headers_for(make_user()) for _ in range(3))
    order = bought(client, pid, first)
    assert_problem(reserve(client, pid, late), 409, "sold_out")
    assert client.delete(f"/api/v1/orders/{order['id']}", headers=first).status_code == 200
    bought(client, pid, second)
    time.sleep(1.1)  # past the worker's once-a-second check
    assert_problem(reserve(client, pid, late), 409, "sold_out")
    run_sweep(app)

    assert len(of_type(read_feed(client, admin_headers), "sale.sold_out")) == 1


def test_a_restock_whose_units_have_not_reached_redis_is_not_a_sell_out(
    app, client, make_product, user_headers, mongo_db, admin_headers
):
    pid = make_product(live=True, stock=1)["id"]
    assert reserve(client, pid, user_headers).status_code == 201
    # A restock that wrote MongoDB and has not yet reached Redis.
    mongo_db.products.update_one({"_id": ObjectId(pid)}, {"$inc": {"stock": 4}})

    assert "sold_out_recorded" not in run_sweep(app)
    assert of_type(read_feed(client, admin_headers), "sale.sold_out") == []


# -- crashes: the sweeper publishes what is left, never twice ------------------------------


def test_a_crash_between_the_change_and_its_publish_leaves_it_for_the_sweeper(
    app, client, make_product, user_headers, admin_headers, mongo_db, monkeypatch
):
    pid = make_product(live=True)["id"]
    reserved = reserve(client, pid, user_headers).json["id"]
    crash_once(monkeypatch, outbox, "publish_soon")
    before = published_count("order.placed")

    assert checkout(client, reserved, user_headers).status_code == 500
    order = mongo_db.orders.find_one({"reservation_id": reserved})
    assert order["status"] == "placed"
    assert [event["type"] for event in order["outbox"]] == ["order.placed"]
    assert of_type(read_feed(client, admin_headers), "order.placed") == []

    assert run_sweep(app)["events_published"] == 1
    assert "events_published" not in run_sweep(app)
    assert outbox_of(mongo_db, "orders", order["_id"]) == []
    event = the_one(read_feed(client, admin_headers), "order.placed")
    assert event["resource"] == {"type": "order", "id": str(order["_id"])}
    assert event["data"]["status"] == "placed"
    assert published_count("order.placed") == before + 1


def test_a_crash_after_the_copy_before_the_outbox_forgets_it_makes_no_second_event(
    app, client, make_product, user_headers, admin_headers, mongo_db, monkeypatch
):
    pid = make_product(live=True)["id"]
    reserved = reserve(client, pid, user_headers).json["id"]
    crash_once(monkeypatch, outbox, "_insert_once", after=True)

    assert checkout(client, reserved, user_headers).status_code == 500
    order = mongo_db.orders.find_one({"reservation_id": reserved})
    assert len(order["outbox"]) == 1
    assert len(of_type(read_feed(client, admin_headers), "order.placed")) == 1

    assert "events_published" not in run_sweep(app)
    assert outbox_of(mongo_db, "orders", order["_id"]) == []
    assert len(of_type(read_feed(client, admin_headers), "order.placed")) == 1


def test_publishing_an_outbox_again_inserts_nothing(
    app, client, make_product, user_headers, admin_headers, mongo_db
):
    pid = make_product(live=True)["id"]
    placed = bought(client, pid, user_headers)
    doc = mongo_db.orders.find_one({"_id": ObjectId(placed["id"])})
    assert doc["outbox"] == []
    event = the_one(read_feed(client, admin_headers), "order.placed")
    stored = mongo_db.events.find_one({"_id": event["id"]})
    replayed = {key: stored[key] for key in ("_id", "type", "created_at", "resource", "data")}

    with app.app_context():
        assert outbox.publish(mongo_db.orders, {**doc, "outbox": [replayed]}) == 0

    assert mongo_db.events.count_documents({"_id": event["id"]}) == 1
    assert mongo_db.events.count_documents({}) == 2  # started, placed


def test_a_checkout_the_sweeper_finishes_is_placed_with_its_event_once(
    app, client, make_product, user_headers, admin_headers, monkeypatch
):
    pid = make_product(live=True)["id"]
    reserved = reserve(client, pid, user_headers).json["id"]
    crash_once(monkeypatch, Inventory, "claim")
    assert checkout(client, reserved, user_headers).status_code == 500

    assert run_sweep(app)["checkouts_placed"] == 1
    run_sweep(app)

    event = the_one(read_feed(client, admin_headers), "order.placed")
    assert event["data"]["reservation_id"] == reserved
    assert event["data"]["status"] == "placed"


def test_a_cancel_the_sweeper_finishes_is_recorded_once(
    app, client, make_product, user_headers, admin_headers, monkeypatch
):
    pid = make_product(live=True)["id"]
    placed = bought(client, pid, user_headers)
    crash_once(monkeypatch, Inventory, "restore")
    assert client.delete(f"/api/v1/orders/{placed['id']}", headers=user_headers).status_code == 500
    assert of_type(read_feed(client, admin_headers), "order.cancelled") == []

    assert run_sweep(app)["cancels_finished"] == 1
    run_sweep(app)

    event = the_one(read_feed(client, admin_headers), "order.cancelled")
    assert event["resource"] == {"type": "order", "id": placed["id"]}
    assert event["data"]["status"] == "cancelled"


def test_the_sweeper_ending_a_sale_past_its_window_records_it_once(
    app, client, make_product, admin_headers, mongo_db
):
    ends_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    pid = make_product(live=True, ends_at=ends_at)["id"]
    past = datetime.now(UTC) - timedelta(seconds=1)
    mongo_db.products.update_one({"_id": ObjectId(pid)}, {"$set": {"ends_at": past}})

    run_sweep(app)
    run_sweep(app)

    event = the_one(read_feed(client, admin_headers), "sale.ended")
    assert event["data"]["sale_status"] == "ended"


# -- the feed -------------------------------------------------------------------------------


def test_the_feed_filters_by_type_keeping_the_order(
    client, make_product, user_headers, admin_headers
):
    pid = make_product(live=True, stock=5, per_user_limit=5)["id"]
    orders = [bought(client, pid, user_headers) for _ in range(3)]
    client.post(f"/api/v1/sales/end/{pid}", headers=admin_headers)
    everything = read_feed(client, admin_headers)

    placed = read_feed(client, admin_headers, type="order.placed")
    sales = read_feed(client, admin_headers, limit=1, type=["sale.started", "sale.ended"])

    assert [event["data"]["id"] for event in placed] == [order["id"] for order in orders]
    assert [event["type"] for event in sales] == ["sale.started", "sale.ended"]
    assert sorted(placed + sales, key=lambda event: int(event["cursor"])) == everything


def test_an_empty_feed_answers_no_items_and_the_same_cursor(client, admin_headers):
    response = client.get(EVENTS, query_string={"after": "41"}, headers=admin_headers)

    assert response.status_code == 200
    assert response.json == {"items": [], "next": "41"}
    assert client.get(EVENTS, headers=admin_headers).json == {"items": [], "next": "0"}


@pytest.mark.parametrize(
    "query, field",
    [
        ({"after": "abc"}, "after"),
        ({"after": "-1"}, "after"),
        ({"after": "1e3"}, "after"),
        ({"after": " 5"}, "after"),
        ({"after": "١٢"}, "after"),  # digits, but not ASCII ones
        ({"after": "1" * 19}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"type": "order.shipped"}, "type"),
    ],
)
def test_a_bad_query_is_a_validation_error_naming_the_parameter(
    client, admin_headers, query, field
):
    body = assert_problem(client.get(EVENTS, query_string=query, headers=admin_headers), 422)

    assert body["code"] == "validation_error"
    assert field in str(body["errors"])


def test_an_unknown_parameter_is_refused(client, admin_headers):
    assert_problem(client.get(EVENTS, query_string={"since": "1"}, headers=admin_headers), 422)


def test_the_feed_is_for_admins_only(client, make_product, user_headers):
    make_product(live=True)

    assert_problem(client.get(EVENTS, headers=user_headers), 403, "admin_only")
    assert_problem(client.get(EVENTS), 401)
