"""A sale's life: its window (starts_at/ends_at), ending it, the sweeper closing it
once the last hold is settled, restocking a live sale, and who may do these things."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from flashcart.checkout import recovery
from flashcart.sales.engine.inventory import EXPIRED_MARK_SECONDS
from flashcart.sales.engine.keys import Keys
from tests.support.http import assert_problem

JOIN_TIMEOUT = 30


@pytest.fixture
def app_config(app_config):
    return {**app_config, "SWEEP_GRACE_SECONDS": 0}


def iso(delta):
    return (datetime.now(UTC) + delta).isoformat()


def reserve(client, pid, headers, quantity=1):
    return client.post(f"/api/v1/sales/reserve/{pid}", json={"quantity": quantity}, headers=headers)


def checkout(client, rid, headers):
    return client.post("/api/v1/orders", json={"reservation_id": rid}, headers=headers)


def end(client, pid, headers):
    return client.post(f"/api/v1/sales/end/{pid}", headers=headers)


def restock(client, pid, quantity, headers):
    return client.post(f"/api/v1/sales/restock/{pid}", json={"quantity": quantity}, headers=headers)


def product_doc(mongo_db, pid):
    return mongo_db.products.find_one({"_id": ObjectId(pid)})


def run_sweep(app):
    with app.app_context():
        return recovery.sweep()


def audit_ok(app, pid):
    with app.app_context():
        row = recovery.audit(product_id=pid)[0]
    assert row["ok"], row
    return row


# -- the window ---------------------------------------------------------------------------


def test_reserving_before_starts_at_is_refused_as_not_open(
    make_product, client, user_headers, sale_state
):
    pid = make_product(live=True, stock=5, starts_at=iso(timedelta(hours=1)))["id"]

    response = reserve(client, pid, user_headers)

    assert response.status_code == 409
    assert response.json["code"] == "sale_not_open"
    state = sale_state(pid)
    assert (state["available"], state["held"], state["users"]) == (5, 0, {})


def test_reserving_after_ends_at_is_refused_as_ended(
    make_product, client, user_headers, sale_state
):
    pid = make_product(
        live=True,
        stock=5,
        starts_at=iso(-timedelta(hours=2)),
        ends_at=iso(timedelta(seconds=1)),
    )["id"]
    time.sleep(1.1)

    response = reserve(client, pid, user_headers)

    assert response.status_code == 409
    assert response.json["code"] == "sale_ended"
    state = sale_state(pid)
    assert (state["available"], state["held"], state["users"]) == (5, 0, {})


def test_reserving_inside_the_window_works(make_product, client, user_headers, sale_state):
    pid = make_product(
        live=True,
        stock=5,
        starts_at=iso(-timedelta(minutes=1)),
        ends_at=iso(timedelta(hours=1)),
    )["id"]

    response = reserve(client, pid, user_headers, 2)

    assert response.status_code == 201
    assert sale_state(pid)["available"] == 3


def test_past_ends_at_stock_and_product_pages_say_ended_before_any_sweep(
    make_product, client, mongo_db, sale_state
):
    pid = make_product(live=True, stock=5, ends_at=iso(timedelta(seconds=1)))["id"]
    # Warm every cache of the product page and the stock read while the sale is live.
    assert client.get(f"/api/v1/sales/stock/{pid}").json["status"] == "live"
    assert client.get(f"/api/v1/products/{pid}").json["sale_status"] == "live"
    time.sleep(1.1)

    stock = client.get(f"/api/v1/sales/stock/{pid}")
    page = client.get(f"/api/v1/products/{pid}")
    listed = client.get("/api/v1/products").json["items"]

    assert stock.status_code == 200
    assert stock.json == {"product_id": pid, "status": "ended", "available": 5}
    assert page.json["sale_status"] == "ended"
    assert [item["sale_status"] for item in listed if item["id"] == pid] == ["ended"]
    # Nothing was swept: the state is derived from the window, not written.
    assert product_doc(mongo_db, pid)["sale_status"] == "live"
    assert sale_state(pid)["status"] == "live"


def test_a_sale_whose_ends_at_has_passed_cannot_be_started(
    make_product, client, admin_headers, mongo_db, redis_client
):
    ends_at = datetime.now(UTC) - timedelta(minutes=1)
    pid = make_product(stock=5, ends_at=ends_at.isoformat())["id"]

    response = client.post(f"/api/v1/sales/start/{pid}", headers=admin_headers)

    body = assert_problem(response, 409, "sale_ended")
    assert "ends_at" in body["detail"]
    assert product_doc(mongo_db, pid)["sale_status"] == "draft"
    assert redis_client.keys(Keys(pid).prefix + "*") == []
    assert client.get(f"/api/v1/sales/stock/{pid}").json["code"] == "sale_not_started"


@pytest.mark.parametrize("gap", [timedelta(hours=-1), timedelta(0)], ids=["before", "equal"])
def test_a_window_ending_before_it_starts_is_refused_on_create(
    client, admin_headers, mongo_db, gap
):
    starts_at = datetime.now(UTC) + timedelta(days=1)
    body = {
        "name": "Backwards",
        "price": "10.00",
        "stock": 5,
        "starts_at": starts_at.isoformat(),
        "ends_at": (starts_at + gap).isoformat(),
    }

    response = client.post("/api/v1/products", json=body, headers=admin_headers)

    assert response.status_code == 422
    assert response.json["code"] == "validation_error"
    assert "ends_at" in response.json["errors"]
    assert mongo_db.products.count_documents({"name": "Backwards"}) == 0


# -- ending and closing ---------------------------------------------------------------------


def test_ending_a_sale_refuses_new_reservations_but_an_earlier_hold_checks_out(
    make_product, client, make_user, headers_for, admin_headers, mongo_db, sale_state
):
    pid = make_product(live=True, stock=10, per_user_limit=2)["id"]
    early, late = headers_for(make_user()), headers_for(make_user())
    rid = reserve(client, pid, early, 2).json["id"]

    ended = end(client, pid, admin_headers)
    refused = reserve(client, pid, late)
    order = checkout(client, rid, early)

    assert ended.status_code == 200
    assert ended.json["status"] == "ended"
    assert ended.json["available"] == 8
    assert product_doc(mongo_db, pid)["sale_status"] == "ended"
    assert refused.status_code == 409
    assert refused.json["code"] == "sale_ended"
    assert order.status_code == 201
    assert order.json["status"] == "placed"
    state = sale_state(pid)
    assert (state["status"], state["available"], state["held"], state["sold"]) == (
        "ended",
        8,
        0,
        2,
    )


def test_ending_a_sale_that_never_started_is_refused(make_product, client, admin_headers):
    pid = make_product(stock=5)["id"]

    response = end(client, pid, admin_headers)

    assert response.status_code == 409
    assert response.json["code"] == "sale_not_started"


def test_sweeper_closes_an_ended_sale_only_after_its_last_hold_is_settled(
    app, make_product, client, make_user, headers_for, admin_headers, mongo_db, redis_client
):
    pid = make_product(live=True, stock=10, per_user_limit=3)["id"]
    buyer, holder = headers_for(make_user()), headers_for(make_user())
    assert checkout(client, reserve(client, pid, buyer, 2).json["id"], buyer).status_code == 201
    rid = reserve(client, pid, holder, 3).json["id"]
    assert end(client, pid, admin_headers).status_code == 200

    early = run_sweep(app)

    assert "sales_closed" not in early
    assert product_doc(mongo_db, pid)["sale_status"] == "ended"
    assert redis_client.exists(Keys(pid).sale) == 1

    assert checkout(client, rid, holder).status_code == 201
    done = run_sweep(app)

    assert done["sales_closed"] == 1
    doc = product_doc(mongo_db, pid)
    assert doc["sale_status"] == "closed"
    assert (doc["sold"], doc["unsold"]) == (5, 5)
    assert doc["stock"] == 10
    assert redis_client.keys(Keys(pid).prefix + "*") == []
    assert run_sweep(app) == {}  # closed once, not again
    assert product_doc(mongo_db, pid)["sold"] == 5


def test_a_hold_expiring_after_the_end_closes_the_sale_with_its_units_unsold(
    short_holds, app, make_product, client, user_headers, admin_headers, mongo_db, redis_client
):
    pid = make_product(live=True, stock=10, per_user_limit=3)["id"]
    rid = reserve(client, pid, user_headers, 3).json["id"]
    assert end(client, pid, admin_headers).status_code == 200
    time.sleep(1.2)

    done = run_sweep(app)

    assert done["units_returned"] == 3
    assert done["sales_closed"] == 1
    doc = product_doc(mongo_db, pid)
    assert doc["sale_status"] == "closed"
    assert (doc["sold"], doc["unsold"]) == (0, 10)
    # Only the mark that tells a late checkout "expired" is left, and it goes by itself.
    assert redis_client.keys(Keys(pid).prefix + "*") == [Keys(pid).expired(rid)]
    assert 0 < redis_client.ttl(Keys(pid).expired(rid)) <= EXPIRED_MARK_SECONDS
    late = checkout(client, rid, user_headers)
    assert_problem(late, 410, "reservation_expired")
    assert mongo_db.orders.count_documents({"status": "placed"}) == 0


def test_reserving_after_the_sale_closed_is_refused_as_ended(
    app, make_product, client, user_headers, admin_headers
):
    pid = make_product(live=True, stock=5)["id"]
    assert end(client, pid, admin_headers).status_code == 200
    assert run_sweep(app)["sales_closed"] == 1

    response = reserve(client, pid, user_headers)

    assert response.status_code == 409
    assert response.json["code"] == "sale_ended"


# -- restock --------------------------------------------------------------------------------


def test_restocking_a_live_sale_adds_exactly_the_units(
    app, make_product, client, user_headers, admin_headers, mongo_db, sale_state
):
    pid = make_product(live=True, stock=10, per_user_limit=3)["id"]
    checkout(client, reserve(client, pid, user_headers, 2).json["id"], user_headers)
    reserve(client, pid, user_headers, 1)
    before = sale_state(pid)

    response = restock(client, pid, 7, admin_headers)

    assert response.status_code == 200
    assert response.json == {"product_id": pid, "stock": 17, "available": before["available"] + 7}
    after = sale_state(pid)
    assert after["available"] == before["available"] + 7 == 14
    assert (after["held"], after["sold"]) == (before["held"], before["sold"]) == (1, 2)
    assert product_doc(mongo_db, pid)["stock"] == 17
    assert client.get(f"/api/v1/sales/stock/{pid}").json["available"] == 14
    audit_ok(app, pid)


def test_concurrent_restocks_add_exactly_their_sum(
    app, make_product, admin_headers, mongo_db, sale_state
):
    pid = make_product(live=True, stock=10)["id"]
    quantities = list(range(1, 11))
    barrier = threading.Barrier(len(quantities), timeout=JOIN_TIMEOUT)
    statuses = []

    def worker(quantity):
        client = app.test_client()
        barrier.wait()
        statuses.append(restock(client, pid, quantity, admin_headers).status_code)

    threads = [threading.Thread(target=worker, args=(q,)) for q in quantities]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)

    assert statuses == [200] * len(quantities)
    assert sale_state(pid)["available"] == 10 + sum(quantities)
    assert product_doc(mongo_db, pid)["stock"] == 10 + sum(quantities)
    audit_ok(app, pid)


def test_restocking_after_the_end_is_refused(
    app, make_product, client, admin_headers, mongo_db, sale_state
):
    pid = make_product(live=True, stock=5)["id"]
    assert end(client, pid, admin_headers).status_code == 200

    ended = restock(client, pid, 3, admin_headers)

    assert ended.status_code == 409
    assert ended.json["code"] == "sale_ended"
    assert product_doc(mongo_db, pid)["stock"] == 5
    assert sale_state(pid)["available"] == 5

    assert run_sweep(app)["sales_closed"] == 1
    closed = restock(client, pid, 3, admin_headers)
    assert closed.status_code == 409
    assert product_doc(mongo_db, pid)["stock"] == 5
    assert product_doc(mongo_db, pid)["unsold"] == 5


# -- who may ------------------------------------------------------------------------------


ADMIN_CALLS = {
    "end": ("post", "/api/v1/sales/end/{pid}", None),
    "restock": ("post", "/api/v1/sales/restock/{pid}", {"quantity": 5}),
    "audit": ("get", "/api/v1/sales/audit/{pid}", None),
}


@pytest.mark.parametrize("call", sorted(ADMIN_CALLS))
def test_sale_admin_endpoints_refuse_users_and_anonymous_callers(
    call, make_product, client, user_headers, mongo_db, sale_state
):
    pid = make_product(live=True, stock=5)["id"]
    method, url, body = ADMIN_CALLS[call]
    send = getattr(client, method)

    as_user = send(url.format(pid=pid), json=body, headers=user_headers)
    anonymous = send(url.format(pid=pid), json=body)

    assert as_user.status_code == 403
    assert as_user.json["code"] == "admin_only"
    assert anonymous.status_code == 401
    doc = product_doc(mongo_db, pid)
    assert (doc["sale_status"], doc["stock"]) == ("live", 5)
    state = sale_state(pid)
    assert (state["status"], state["available"]) == ("live", 5)


def test_cancelling_after_the_close_moves_the_units_to_unsold_once(
    app, make_product, client, user_headers, admin_headers, mongo_db, redis_client
):
    pid = make_product(live=True, stock=5, per_user_limit=2)["id"]
    order = checkout(client, reserve(client, pid, user_headers, 2).json["id"], user_headers).json
    end(client, pid, admin_headers)
    assert run_sweep(app)["sales_closed"] == 1
    assert (product_doc(mongo_db, pid)["sold"], product_doc(mongo_db, pid)["unsold"]) == (2, 3)

    assert client.delete(f"/api/v1/orders/{order['id']}", headers=user_headers).status_code == 200
    again = client.delete(f"/api/v1/orders/{order['id']}", headers=user_headers)

    assert again.status_code == 409
    doc = product_doc(mongo_db, pid)
    assert (doc["sale_status"], doc["sold"], doc["unsold"]) == ("closed", 0, 5)


def test_a_sale_whose_window_closed_is_ended_and_closed_by_the_sweeper(
    app, make_product, client, user_headers, mongo_db
):
    pid = make_product(live=True, stock=3, ends_at=iso(timedelta(seconds=1)))["id"]
    checkout(client, reserve(client, pid, user_headers).json["id"], user_headers)
    time.sleep(1.1)

    assert run_sweep(app)["sales_closed"] == 1

    doc = product_doc(mongo_db, pid)
    assert (doc["sale_status"], doc["sold"], doc["unsold"]) == ("closed", 1, 2)
