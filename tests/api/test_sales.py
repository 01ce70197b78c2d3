"""Sales: starting a drop, live stock, reservations, their limits and their expiry."""

import re
import time
from datetime import UTC, datetime

import pytest
from bson import ObjectId

from tests.support.http import assert_problem
from tests.support.snapshots import redis_state


def sale_key(product_id):
    return f"fc:{{p:{product_id}}}:sale"


def start(client, product_id, headers):
    return client.post(f"/api/v1/sales/start/{product_id}", headers=headers)


def reserve(client, product_id, headers, quantity=None):
    body = None if quantity is None else {"quantity": quantity}
    return client.post(f"/api/v1/sales/reserve/{product_id}", json=body, headers=headers)


def available(client, product_id):
    response = client.get(f"/api/v1/sales/stock/{product_id}")
    assert response.status_code == 200, response.json
    return response.json["available"]


# -- starting a sale -----------------------------------------------------------


def test_admin_starts_a_sale_and_its_stock_goes_to_redis(
    client, make_product, admin_headers, redis_client, mongo_db, sale_state
):
    product = make_product(stock=10, per_user_limit=3)

    response = start(client, product["id"], admin_headers)

    assert response.status_code == 200
    assert response.json == {"product_id": product["id"], "status": "live", "available": 10}
    assert redis_client.type(sale_key(product["id"])) == "hash"
    assert sale_state(product["id"]) == {
        "status": "live",
        "available": 10,
        "held": 0,
        "sold": 0,
        "limit": 3,
        "users": {},
    }
    stored = mongo_db.products.find_one({"_id": ObjectId(product["id"])})
    assert stored["sale_status"] == "live"


def test_a_user_cannot_start_a_sale(client, make_product, user_headers, redis_client, mongo_db):
    product = make_product()

    response = start(client, product["id"], user_headers)

    assert_problem(response, 403, "admin_only")
    assert not redis_client.exists(sale_key(product["id"]))
    assert mongo_db.products.find_one()["sale_status"] == "draft"


def test_an_anonymous_caller_cannot_start_a_sale(client, make_product, redis_client):
    product = make_product()

    response = client.post(f"/api/v1/sales/start/{product['id']}")

    assert response.status_code == 401
    assert not redis_client.exists(sale_key(product["id"]))


def test_starting_a_sale_twice_is_409_and_does_not_reset_the_stock(
    client, make_product, admin_headers, user, user_headers, redis_client, sale_state
):
    product = make_product(live=True, stock=10, per_user_limit=3)
    assert reserve(client, product["id"], user_headers, 2).status_code == 201
    before = redis_state(redis_client)

    response = start(client, product["id"], admin_headers)

    assert_problem(response, 409, "sale_already_started")
    state = sale_state(product["id"])
    assert (state["available"], state["held"], state["users"]) == (8, 2, {user["id"]: 2})
    assert redis_state(redis_client) == before
    assert available(client, product["id"]) == 8


UNKNOWN_PRODUCT_IDS = [str(ObjectId()), "not-an-id", "0" * 23, "0" * 25, "g" * 24]


def test_starting_an_unknown_product_is_404(client, admin_headers, redis_client):
    before = sorted(redis_client.keys("*"))  # the admin's login session
    for product_id in UNKNOWN_PRODUCT_IDS:
        assert_problem(start(client, product_id, admin_headers), 404, "product_not_found")

    assert sorted(redis_client.keys("*")) == before


# -- stock -----------------------------------------------------------------------


def test_stock_read_reports_the_live_units(client, make_product, user_headers):
    product = make_product(live=True, stock=7, per_user_limit=3)
    reserve(client, product["id"], user_headers, 3)

    response = client.get(f"/api/v1/sales/stock/{product['id']}")

    assert response.status_code == 200
    assert response.json == {"product_id": product["id"], "status": "live", "available": 4}


def test_stock_of_a_product_whose_sale_has_not_started_is_409(client, make_product, redis_client):
    product = make_product()

    response = client.get(f"/api/v1/sales/stock/{product['id']}")

    assert_problem(response, 409, "sale_not_started")
    assert not redis_client.exists(sale_key(product["id"]))


def test_stock_of_an_unknown_product_is_404(client, redis_client):
    for product_id in UNKNOWN_PRODUCT_IDS:
        response = client.get(f"/api/v1/sales/stock/{product_id}")

        assert_problem(response, 404, "product_not_found")

    assert redis_client.keys("*") == []


# -- reservations ------------------------------------------------------------------


def test_a_reservation_defaults_to_one_unit_and_holds_it_in_redis(
    client, make_product, user, user_headers, sale_state
):
    product = make_product(live=True, stock=10)
    pid = product["id"]

    response = client.post(f"/api/v1/sales/reserve/{pid}", headers=user_headers)

    assert response.status_code == 201
    reservation = response.json
    assert reservation["quantity"] == 1
    assert reservation["product_id"] == pid
    assert reservation["expires_in"] == 600
    assert re.fullmatch(rf"{pid}\.[A-Za-z0-9_-]{{16}}", reservation["id"])
    expires_at = datetime.fromisoformat(reservation["expires_at"])
    assert abs((expires_at - datetime.now(UTC)).total_seconds() - 600) < 5
    state = sale_state(pid)
    assert (state["available"], state["held"], state["sold"]) == (9, 1, 0)
    assert state["users"] == {user["id"]: 1}


def test_an_empty_json_body_also_reserves_one_unit(client, make_product, user_headers):
    product = make_product(live=True, stock=10)

    response = reserve(client, product["id"], user_headers, quantity=None)
    with_empty_object = client.post(
        f"/api/v1/sales/reserve/{product['id']}", json={}, headers=user_headers
    )

    assert response.status_code == 201
    assert with_empty_object.status_code == 201
    assert with_empty_object.json["quantity"] == 1
    assert available(client, product["id"]) == 8


def test_reserving_the_maximum_quantity_of_100_is_allowed(client, make_product, user_headers):
    product = make_product(live=True, stock=150, per_user_limit=100)

    response = reserve(client, product["id"], user_headers, 100)

    assert response.status_code == 201
    assert available(client, product["id"]) == 50


def test_reserving_before_the_sale_starts_is_409_and_writes_nothing(
    client, make_product, user_headers, redis_client
):
    product = make_product()

    response = reserve(client, product["id"], user_headers, 1)

    assert_problem(response, 409, "sale_not_started")
    assert redis_client.keys(f"fc:{{p:{product['id']}}}:*") == []


def test_reserving_when_no_unit_is_left_is_409_sold_out(
    client, make_product, make_user, headers_for, user, user_headers, sale_state
):
    product = make_product(live=True, stock=1, per_user_limit=1)
    assert reserve(client, product["id"], user_headers).status_code == 201
    other = headers_for(make_user())

    response = reserve(client, product["id"], other)

    assert_problem(response, 409, "sold_out")
    state = sale_state(product["id"])
    assert (state["available"], state["held"]) == (0, 1)
    assert state["users"] == {user["id"]: 1}


def test_once_seen_sold_out_a_reservation_is_refused_before_authentication(
    client, make_product, user_headers, make_user, headers_for, redis_client
):
    product = make_product(live=True, stock=1, per_user_limit=1)
    assert reserve(client, product["id"], user_headers).status_code == 201
    assert_problem(reserve(client, product["id"], headers_for(make_user())), 409, "sold_out")
    commands_before = redis_client.info("stats")["total_commands_processed"]

    response = reserve(client, product["id"], {})  # no token at all

    assert_problem(response, 409, "sold_out")
    # Answered from memory: the only command since is the INFO reading the count.
    assert redis_client.info("stats")["total_commands_processed"] == commands_before + 1


def test_a_sale_another_worker_closed_is_explained_not_answered_sold_out(
    client, make_product, user_headers, make_user, headers_for, redis_client, mongo_db, monkeypatch
):
    from flashcart.sales.service import engine_hints

    product = make_product(live=True, stock=1, per_user_limit=1)
    assert reserve(client, product["id"], user_headers).status_code == 201
    assert_problem(reserve(client, product["id"], headers_for(make_user())), 409, "sold_out")
    # Elsewhere the sale closed: its figures went to MongoDB, its keys left Redis.
    mongo_db.products.update_one(
        {"_id": ObjectId(product["id"])}, {"$set": {"sale_status": "closed"}}
    )
    redis_client.delete(sale_key(product["id"]))
    monkeypatch.setattr(engine_hints(client.application), "sold_out_trust_seconds", 0)  # old mark

    response = reserve(client, product["id"], headers_for(make_user()))

    assert_problem(response, 409, "sale_ended")


def test_with_an_idempotency_key_a_sold_out_reservation_still_goes_the_whole_way(
    client, make_product, user_headers, make_user, headers_for
):
    product = make_product(live=True, stock=1, per_user_limit=1)
    keyed = {**user_headers, "Idempotency-Key": "first-click"}
    first = reserve(client, product["id"], keyed)
    assert first.status_code == 201
    assert_problem(reserve(client, product["id"], headers_for(make_user())), 409, "sold_out")

    replay = reserve(client, product["id"], keyed)
    unauthenticated = reserve(client, product["id"], {"Idempotency-Key": "other"})

    assert (replay.status_code, replay.json) == (201, first.json)
    assert_problem(unauthenticated, 401)


def test_reserving_more_than_is_left_is_409_insufficient_stock(
    client, make_product, user_headers, sale_state
):
    product = make_product(live=True, stock=3, per_user_limit=5)

    response = reserve(client, product["id"], user_headers, 4)

    body = assert_problem(response, 409, "insufficient_stock")
    assert "3" in body["detail"]
    state = sale_state(product["id"])
    assert (state["available"], state["held"], state["users"]) == (3, 0, {})


def test_reserving_past_the_per_user_limit_is_409_limit_exceeded(
    client, make_product, user, user_headers, sale_state
):
    product = make_product(live=True, stock=10, per_user_limit=2)
    assert reserve(client, product["id"], user_headers, 2).status_code == 201

    response = reserve(client, product["id"], user_headers, 1)

    assert_problem(response, 409, "limit_exceeded")
    state = sale_state(product["id"])
    assert (state["available"], state["held"]) == (8, 2)
    assert state["users"] == {user["id"]: 2}


def test_one_reservation_above_the_per_user_limit_is_refused_whole(
    client, make_product, user_headers, sale_state
):
    product = make_product(live=True, stock=10, per_user_limit=2)

    response = reserve(client, product["id"], user_headers, 3)

    assert_problem(response, 409, "limit_exceeded")
    state = sale_state(product["id"])
    assert (state["available"], state["held"], state["users"]) == (10, 0, {})


def test_the_per_user_limit_counts_units_already_bought(
    client, make_product, user_headers, redis_client
):
    product = make_product(live=True, stock=10, per_user_limit=2)
    held = reserve(client, product["id"], user_headers, 2).json
    order = client.post("/api/v1/orders", json={"reservation_id": held["id"]}, headers=user_headers)
    assert order.status_code == 201

    response = reserve(client, product["id"], user_headers, 1)

    assert_problem(response, 409, "limit_exceeded")
    assert available(client, product["id"]) == 8


def test_the_per_user_limit_does_not_stop_other_users(
    client, make_product, make_user, headers_for, user_headers
):
    product = make_product(live=True, stock=10, per_user_limit=2)
    assert reserve(client, product["id"], user_headers, 2).status_code == 201

    response = reserve(client, product["id"], headers_for(make_user()), 2)

    assert response.status_code == 201
    assert available(client, product["id"]) == 6


def test_reserving_an_unknown_product_is_404(client, user_headers, redis_client):
    before = sorted(redis_client.keys("*"))  # the user's login session
    for product_id in UNKNOWN_PRODUCT_IDS:
        response = reserve(client, product_id, user_headers, 1)

        assert_problem(response, 404, "product_not_found")

    assert sorted(redis_client.keys("*")) == before


def test_reserving_needs_a_token(client, make_product, sale_state):
    product = make_product(live=True, stock=5)

    response = client.post(f"/api/v1/sales/reserve/{product['id']}", json={"quantity": 1})

    assert response.status_code == 401
    assert sale_state(product["id"])["available"] == 5


INVALID_QUANTITIES = [0, -1, 101, "abc", 1.5, "1", True, None, [1], {"$gt": 0}, 10**30]


def test_invalid_quantities_are_422_and_change_nothing_in_redis(
    client, make_product, user_headers, redis_client
):
    product = make_product(live=True, stock=200, per_user_limit=200)
    before = redis_state(redis_client)

    for quantity in INVALID_QUANTITIES:
        response = client.post(
            f"/api/v1/sales/reserve/{product['id']}",
            json={"quantity": quantity},
            headers=user_headers,
        )

        body = assert_problem(response, 422, "validation_error")
        assert "quantity" in body["errors"], quantity
        assert redis_state(redis_client) == before, quantity


# -- expiry ------------------------------------------------------------------------


class TestExpiredHolds:
    """With one-second holds, an abandoned reservation gives its units back."""

    @pytest.fixture
    def app_config(self, app_config):
        return app_config | {"HOLD_SECONDS": 1}

    def test_an_expired_hold_returns_its_units_on_the_next_stock_read(
        self, client, make_product, user, user_headers, sale_state
    ):
        product = make_product(live=True, stock=5, per_user_limit=5)
        pid = product["id"]
        reservation = reserve(client, pid, user_headers, 2).json
        assert reservation["expires_in"] == 1
        assert available(client, pid) == 3

        time.sleep(1.2)

        assert available(client, pid) == 5
        state = sale_state(pid)
        assert (state["available"], state["held"], state["sold"]) == (5, 0, 0)
        assert state["users"] == {}

    def test_an_expired_hold_returns_its_units_to_a_new_reservation(
        self, client, make_product, make_user, headers_for, user, user_headers, sale_state
    ):
        product = make_product(live=True, stock=1, per_user_limit=1)
        pid = product["id"]
        reserve(client, pid, user_headers)
        other = headers_for(make_user())
        assert_problem(reserve(client, pid, other), 409, "sold_out")

        time.sleep(1.2)
        response = reserve(client, pid, other)

        assert response.status_code == 201
        state = sale_state(pid)
        assert (state["available"], state["held"]) == (0, 1)
        # The first shopper's units no longer count against their limit.
        assert user["id"] not in state["users"]
        assert list(state["users"].values()) == [1]

    def test_an_expired_reservation_cannot_become_an_order(
        self, client, make_product, user_headers, mongo_db, sale_state
    ):
        product = make_product(live=True, stock=5, per_user_limit=5)
        pid = product["id"]
        reservation = reserve(client, pid, user_headers, 2).json

        time.sleep(1.2)
        response = client.post(
            "/api/v1/orders", json={"reservation_id": reservation["id"]}, headers=user_headers
        )

        assert_problem(response, 410, "reservation_expired")
        assert mongo_db.orders.count_documents({"status": {"$ne": "failed"}}) == 0
        assert available(client, pid) == 5
        assert sale_state(pid)["sold"] == 0
        retry = client.post(
            "/api/v1/orders", json={"reservation_id": reservation["id"]}, headers=user_headers
        )
        assert_problem(retry, 410, "reservation_expired")
        assert mongo_db.orders.count_documents({"status": {"$ne": "failed"}}) == 0
        assert available(client, pid) == 5

    def test_an_expired_hold_no_longer_counts_against_its_owners_limit(
        self, client, make_product, user, user_headers, sale_state
    ):
        product = make_product(live=True, stock=5, per_user_limit=1)
        pid = product["id"]
        first = reserve(client, pid, user_headers).json
        assert_problem(reserve(client, pid, user_headers), 409, "limit_exceeded")

        time.sleep(1.2)  # nothing reads the stock or sweeps meanwhile
        again = reserve(client, pid, user_headers)

        assert again.status_code == 201, again.json
        state = sale_state(pid)
        assert (state["available"], state["held"], state["sold"]) == (4, 1, 0)
        assert state["users"] == {user["id"]: 1}
        checkout = client.post(
            "/api/v1/orders", json={"reservation_id": first["id"]}, headers=user_headers
        )
        assert_problem(checkout, 410, "reservation_expired")

    @pytest.mark.parametrize("returned_by", ["stock read", "sweeper", "reservation"])
    def test_a_checkout_after_the_deadline_is_410_whoever_returned_the_hold(
        self,
        app,
        client,
        make_product,
        make_user,
        headers_for,
        user_headers,
        returned_by,
        sale_state,
    ):
        from flashcart.checkout import recovery

        product = make_product(live=True, stock=5, per_user_limit=1)
        pid = product["id"]
        reservation = reserve(client, pid, user_headers).json

        time.sleep(1.2)
        if returned_by == "stock read":
            assert available(client, pid) == 5
        elif returned_by == "sweeper":
            with app.app_context():
                assert recovery.sweep()["units_returned"] == 1
        else:
            assert reserve(client, pid, user_headers).status_code == 201
        assert sale_state(pid)["held"] == (1 if returned_by == "reservation" else 0)
        body = {"reservation_id": reservation["id"]}

        response = client.post("/api/v1/orders", json=body, headers=user_headers)

        assert_problem(response, 410, "reservation_expired")
        # Another user learns nothing about the reservation: it is unknown to them.
        stranger = client.post("/api/v1/orders", json=body, headers=headers_for(make_user()))
        assert_problem(stranger, 404, "reservation_not_found")
        state = sale_state(pid)
        assert state["sold"] == 0
        assert state["available"] + state["held"] + state["sold"] == 5
