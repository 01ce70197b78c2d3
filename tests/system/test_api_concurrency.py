"""The drop through the Flask app under concurrency: many shoppers, duplicate requests.

Each thread has its own `app.test_client()`; Redis is the real redis-server. MongoDB
makes every single-document write atomic, and mongomock checks unique indexes and
conditional updates in several steps, so these tests reach MongoDB with PyMongo:
MONGO_TEST_URI's server, else the stand-in, which runs one command at a time.
"""

import collections

import pytest

from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.keys import Keys
from flashcart.stores import connect_redis
from tests.support.mongo import fresh_server_database
from tests.support.threads import run_threads

ORDERS = "/api/v1/orders"


@pytest.fixture
def mongo_db():
    """Overrides conftest's: a fresh database on a MongoDB server (see above)."""
    with fresh_server_database() as db:
        yield db


@pytest.fixture
def app_config(real_redis_url):
    """Every test here runs on one redis-server and again on the Redis Cluster."""
    return {"REDIS_URL": real_redis_url}


@pytest.fixture
def redis_client(real_redis_url):
    """Overrides conftest's: a real Redis, with a pool wide enough for 100+ threads.

    (redis-py 8 caps a pool at 100 connections and raises MaxConnectionsError past it.)
    """
    client = connect_redis(real_redis_url, max_connections=1000)
    yield client
    client.close()


def placed_orders(mongo_db, product_id):
    return list(mongo_db.orders.find({"product_id": product_id, "status": "placed"}))


def sale_figures(redis_client, product_id):
    snapshot = Inventory(redis_client).snapshot(product_id)
    return snapshot.available, snapshot.held, snapshot.sold


def reserve_and_checkout(app, headers, product_id):
    client = app.test_client()
    reserved = client.post(f"/api/v1/sales/reserve/{product_id}", json={}, headers=headers)
    if reserved.status_code != 201:
        return reserved.status_code, reserved.json["code"], None
    order = client.post(ORDERS, json={"reservation_id": reserved.json["id"]}, headers=headers)
    return 201, "reserved", order.status_code


def test_120_shoppers_reserving_and_checking_out_30_units_place_exactly_30_orders(
    app, make_product, make_user, headers_for, mongo_db, redis_client
):
    total, shoppers = 30, 120
    product_id = make_product(live=True, stock=total, per_user_limit=1)["id"]
    headers = [headers_for(make_user()) for _ in range(shoppers)]

    results = run_threads(shoppers, lambda i: reserve_and_checkout(app, headers[i], product_id))

    outcomes = collections.Counter((status, code) for status, code, _ in results)
    assert outcomes == {(201, "reserved"): total, (409, "sold_out"): shoppers - total}, outcomes
    assert collections.Counter(checkout for *_, checkout in results) == {
        201: total,
        None: shoppers - total,
    }
    orders = placed_orders(mongo_db, product_id)
    assert len(orders) == total
    assert mongo_db.orders.count_documents({}) == total  # no pending or failed leftovers
    assert len({order["user_id"] for order in orders}) == total
    assert sum(order["quantity"] for order in orders) == total
    assert int(redis_client.get(Keys(product_id).sold)) == total
    assert sale_figures(redis_client, product_id) == (0, 0, total)
    assert redis_client.hlen(Keys(product_id).claimed) == 0  # every claim was settled


@pytest.fixture
def checked_out_twice(client, make_product, user, headers_for):
    """A live product (10 units, limit 5) and one shopper holding a reservation for 2."""
    product_id = make_product(live=True, stock=10, per_user_limit=5)["id"]
    headers = headers_for(user)
    reserved = client.post(
        f"/api/v1/sales/reserve/{product_id}", json={"quantity": 2}, headers=headers
    )
    assert reserved.status_code == 201
    return product_id, user, headers, reserved.json["id"]


def checkout_20_times(app, headers, reservation_id, extra_headers=None):
    def checkout(_):
        response = app.test_client().post(
            ORDERS,
            json={"reservation_id": reservation_id},
            headers=headers | (extra_headers or {}),
        )
        return response.status_code, response.json

    return run_threads(20, checkout)


def test_20_concurrent_checkouts_of_one_reservation_create_one_order_and_sell_once(
    app, checked_out_twice, mongo_db, redis_client
):
    product_id, user, headers, reservation_id = checked_out_twice

    checkout_20_times(app, headers, reservation_id)

    orders = list(mongo_db.orders.find({"reservation_id": reservation_id}))
    assert len(orders) == 1
    assert orders[0]["status"] == "placed"
    assert orders[0]["quantity"] == 2
    assert sale_figures(redis_client, product_id) == (8, 0, 2)
    assert Inventory(redis_client).user_units(product_id) == {user["id"]: 2}


def test_20_concurrent_checkouts_of_one_reservation_all_answer_with_that_one_order(
    app, checked_out_twice, mongo_db
):
    """Exactly one 201 (the creation); every duplicate gets 200 and the same order."""
    _, _, headers, reservation_id = checked_out_twice

    answers = checkout_20_times(app, headers, reservation_id)

    statuses = collections.Counter(status for status, _ in answers)
    codes = collections.Counter(body.get("code") for status, body in answers if status >= 400)
    assert statuses == {201: 1, 200: 19}, (statuses, codes)
    order_id = str(mongo_db.orders.find_one({"reservation_id": reservation_id})["_id"])
    assert {body["id"] for _, body in answers} == {order_id}


def test_20_concurrent_checkouts_with_one_idempotency_key_make_one_order(
    app, checked_out_twice, mongo_db, redis_client
):
    product_id, _, headers, reservation_id = checked_out_twice

    answers = checkout_20_times(app, headers, reservation_id, {"Idempotency-Key": "checkout-1"})

    statuses = collections.Counter(status for status, _ in answers)
    assert statuses[201] >= 1
    assert set(statuses) <= {201, 409}, statuses
    conflicts = {body["code"] for status, body in answers if status == 409}
    assert conflicts <= {"idempotency_key_in_progress"}
    assert mongo_db.orders.count_documents({"reservation_id": reservation_id}) == 1
    assert sale_figures(redis_client, product_id) == (8, 0, 2)


@pytest.fixture
def placed_order(client, checked_out_twice):
    product_id, user, headers, reservation_id = checked_out_twice
    order = client.post(ORDERS, json={"reservation_id": reservation_id}, headers=headers)
    assert order.status_code == 201
    return product_id, user, headers, order.json["id"]


def cancel_20_times(app, headers, order_id):
    def cancel(_):
        response = app.test_client().delete(f"{ORDERS}/{order_id}", headers=headers)
        return response.status_code, response.json

    return run_threads(20, cancel)


def test_20_concurrent_cancels_of_one_order_restore_its_units_exactly_once(
    app, placed_order, mongo_db, redis_client
):
    product_id, user, headers, order_id = placed_order
    assert sale_figures(redis_client, product_id) == (8, 0, 2)

    answers = cancel_20_times(app, headers, order_id)

    assert all(status < 500 for status, _ in answers), answers
    assert sale_figures(redis_client, product_id) == (10, 0, 0)
    assert Inventory(redis_client).user_units(product_id).get(user["id"], 0) == 0
    assert redis_client.smembers(Keys(product_id).restored) == {order_id}
    statuses = {order["status"] for order in mongo_db.orders.find({"product_id": product_id})}
    assert statuses == {"cancelled"}


def test_20_concurrent_cancels_of_one_order_answer_one_200_and_nineteen_409s(app, placed_order):
    _, _, headers, order_id = placed_order

    answers = cancel_20_times(app, headers, order_id)

    statuses = collections.Counter(status for status, _ in answers)
    assert statuses == {200: 1, 409: 19}, statuses
    assert {body["code"] for status, body in answers if status == 409} == {
        "order_already_cancelled"
    }
