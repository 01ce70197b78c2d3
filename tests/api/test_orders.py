"""Orders: checkout of a reservation, retries, visibility and cancellation."""

import pytest
from bson import ObjectId

from tests.support.http import assert_problem

ORDERS = "/api/v1/orders"


def reserve(client, product_id, headers, quantity=1):
    response = client.post(
        f"/api/v1/sales/reserve/{product_id}", json={"quantity": quantity}, headers=headers
    )
    assert response.status_code == 201, response.json
    return response.json


def stock_and_sold(sale_state, product):
    """(available, sold) units of the product's sale, as Redis has them."""
    state = sale_state(product["id"])
    return state["available"], state["sold"]


def place(client, reservation_id, headers):
    return client.post(ORDERS, json={"reservation_id": reservation_id}, headers=headers)


@pytest.fixture
def drop(make_product):
    """A live product: 10 units at 12.50, at most 3 per customer."""
    return make_product(live=True, stock=10, per_user_limit=3, price="12.50", name="Drop")


@pytest.fixture
def buy(client, drop):
    """buy(headers, quantity=1) -> a placed order of `drop`."""

    def make(headers, quantity=1):
        reservation = reserve(client, drop["id"], headers, quantity)
        response = place(client, reservation["id"], headers)
        assert response.status_code == 201, response.json
        return response.json

    return make


@pytest.fixture
def other_user(make_user):
    return make_user()


@pytest.fixture
def other_headers(other_user, headers_for):
    return headers_for(other_user)


# -- placing -----------------------------------------------------------------------


def test_placing_an_order_from_a_reservation_stores_it_as_placed(
    client, drop, user, user_headers, mongo_db, sale_state
):
    reservation = reserve(client, drop["id"], user_headers, 2)

    response = place(client, reservation["id"], user_headers)

    assert response.status_code == 201
    order = response.json
    assert order["status"] == "placed"
    assert order["reservation_id"] == reservation["id"]
    assert order["user_id"] == user["id"]
    assert order["product_id"] == drop["id"]
    assert order["product_name"] == "Drop"
    assert order["quantity"] == 2
    assert order["unit_price"] == "12.50"
    assert order["total"] == "25.00"
    stored = mongo_db.orders.find_one({"_id": ObjectId(order["id"])})
    assert stored["status"] == "placed"
    assert stored["reservation_id"] == reservation["id"]
    assert stored["user_id"] == user["id"]
    assert stored["quantity"] == 2
    assert stored["unit_price_cents"] == 1250
    assert stock_and_sold(sale_state, drop) == (8, 2)
    state = sale_state(drop["id"])
    assert state["held"] == 0
    assert state["users"] == {user["id"]: 2}


def test_reservation_id_is_unique_in_the_orders_collection(client, buy, user_headers, mongo_db):
    order = buy(user_headers)

    indexes = mongo_db.orders.index_information().values()
    assert any(index["key"] == [("reservation_id", 1)] and index.get("unique") for index in indexes)
    assert mongo_db.orders.count_documents({"reservation_id": order["reservation_id"]}) == 1


def test_retrying_the_same_reservation_returns_the_same_order(
    client, drop, user_headers, mongo_db, sale_state
):
    reservation = reserve(client, drop["id"], user_headers, 2)
    first = place(client, reservation["id"], user_headers)

    retry = place(client, reservation["id"], user_headers)

    assert first.status_code == 201
    assert retry.status_code == 200
    assert retry.json["id"] == first.json["id"]
    assert retry.json["status"] == "placed"
    assert mongo_db.orders.count_documents({}) == 1
    assert stock_and_sold(sale_state, drop) == (8, 2)


def test_a_user_cannot_order_another_users_reservation(
    client, drop, user, user_headers, other_headers, mongo_db, sale_state
):
    reservation = reserve(client, drop["id"], user_headers, 2)

    response = place(client, reservation["id"], other_headers)

    assert_problem(response, 404, "reservation_not_found")
    assert mongo_db.orders.count_documents({}) == 0
    assert sale_state(drop["id"])["sold"] == 0
    # The owner's hold is untouched and can still be checked out.
    assert place(client, reservation["id"], user_headers).status_code == 201


def test_a_user_cannot_claim_an_order_placed_from_another_users_reservation(
    client, drop, user_headers, other_headers, mongo_db
):
    reservation = reserve(client, drop["id"], user_headers)
    assert place(client, reservation["id"], user_headers).status_code == 201

    response = place(client, reservation["id"], other_headers)

    assert_problem(response, 404, "reservation_not_found")
    assert "id" not in response.json
    assert mongo_db.orders.count_documents({}) == 1


def test_an_unknown_but_well_formed_reservation_is_404(client, drop, user_headers, mongo_db):
    response = place(client, f"{drop['id']}.AAAAAAAAAAAAAAAA", user_headers)

    assert_problem(response, 404, "reservation_not_found")
    assert mongo_db.orders.count_documents({}) == 0


MALFORMED_RESERVATION_IDS = [
    "abc",
    "",
    "0" * 24,
    "0" * 24 + ".short",
    "0" * 24 + "." + "A" * 17,
    "0" * 24 + "." + "A" * 15 + "!",
    "Z" * 24 + "." + "A" * 16,
    {"$ne": None},
    ["0" * 24 + "." + "A" * 16],
    42,
    None,
]


def test_a_malformed_reservation_id_is_422(client, user_headers, mongo_db):
    failures = []
    for reservation_id in MALFORMED_RESERVATION_IDS:
        response = place(client, reservation_id, user_headers)
        if response.status_code != 422 or "reservation_id" not in response.json.get("errors", {}):
            failures.append((reservation_id, response.status_code, response.json))
        assert response.content_type == "application/problem+json"

    assert failures == []
    assert mongo_db.orders.count_documents({}) == 0


def test_a_reservation_id_with_a_trailing_newline_is_422(client, drop, user_headers, mongo_db):
    # The id pattern must match the whole value: "$" alone also matches before a final "\n".
    reservation = reserve(client, drop["id"], user_headers)

    response = place(client, reservation["id"] + "\n", user_headers)

    body = assert_problem(response, 422, "validation_error")
    assert "reservation_id" in body["errors"]
    assert mongo_db.orders.count_documents({}) == 0


def test_placing_an_order_needs_a_token(client, drop, user_headers, mongo_db):
    reservation = reserve(client, drop["id"], user_headers)

    response = client.post(ORDERS, json={"reservation_id": reservation["id"]})

    assert response.status_code == 401
    assert mongo_db.orders.count_documents({}) == 0


# -- reading -----------------------------------------------------------------------


def test_users_list_only_their_own_orders(client, buy, user_headers, other_headers, user):
    mine = [buy(user_headers)["id"], buy(user_headers)["id"]]
    buy(other_headers)

    response = client.get(ORDERS, headers=user_headers)

    assert response.status_code == 200
    assert response.json["total"] == 2
    assert sorted(order["id"] for order in response.json["items"]) == sorted(mine)
    assert {order["user_id"] for order in response.json["items"]} == {user["id"]}


def test_orders_are_listed_newest_first(client, buy, user_headers):
    first, second = buy(user_headers), buy(user_headers)

    items = client.get(ORDERS, headers=user_headers).json["items"]

    assert [order["id"] for order in items] == [second["id"], first["id"]]


def test_an_admin_lists_everyones_orders(client, buy, user_headers, other_headers, admin_headers):
    ids = {buy(user_headers)["id"], buy(other_headers)["id"]}

    response = client.get(ORDERS, headers=admin_headers)

    assert response.status_code == 200
    assert response.json["total"] == 2
    assert {order["id"] for order in response.json["items"]} == ids


def test_the_status_filter_lists_only_orders_in_that_status(client, buy, user_headers):
    kept, cancelled = buy(user_headers), buy(user_headers)
    assert client.delete(f"{ORDERS}/{cancelled['id']}", headers=user_headers).status_code == 200

    placed = client.get(ORDERS, query_string={"status": "placed"}, headers=user_headers).json
    gone = client.get(ORDERS, query_string={"status": "cancelled"}, headers=user_headers).json

    assert [order["id"] for order in placed["items"]] == [kept["id"]]
    assert placed["total"] == 1
    assert [order["id"] for order in gone["items"]] == [cancelled["id"]]
    assert gone["total"] == 1


def test_the_status_filter_still_hides_other_users_orders(client, buy, user_headers, other_headers):
    buy(other_headers)

    response = client.get(ORDERS, query_string={"status": "placed"}, headers=user_headers)

    assert response.json["total"] == 0
    assert response.json["items"] == []


def test_an_unknown_status_filter_is_422(client, user_headers):
    response = client.get(ORDERS, query_string={"status": "shipped"}, headers=user_headers)

    body = assert_problem(response, 422, "validation_error")
    assert "status" in body["errors"]


def test_a_user_reads_their_own_order(client, buy, user_headers):
    order = buy(user_headers, 2)

    response = client.get(f"{ORDERS}/{order['id']}", headers=user_headers)

    assert response.status_code == 200
    assert response.json == order


def test_a_user_cannot_read_another_users_order(client, buy, user_headers, other_headers):
    order = buy(other_headers)

    response = client.get(f"{ORDERS}/{order['id']}", headers=user_headers)

    body = assert_problem(response, 404, "order_not_found")
    assert order["id"] not in response.get_data(as_text=True)
    assert "user_id" not in body


def test_an_admin_reads_any_order(client, buy, user_headers, admin_headers):
    order = buy(user_headers)

    response = client.get(f"{ORDERS}/{order['id']}", headers=admin_headers)

    assert response.status_code == 200
    assert response.json["id"] == order["id"]


def test_a_malformed_order_id_is_404(client, buy, user_headers, mongo_db):
    buy(user_headers)
    for method in ("GET", "DELETE"):
        for order_id in ("abc", "0" * 23, "0" * 25, "g" * 24, "%24ne"):
            response = client.open(f"{ORDERS}/{order_id}", method=method, headers=user_headers)
            assert_problem(response, 404, "order_not_found")

    assert mongo_db.orders.count_documents({"status": "placed"}) == 1


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_an_unknown_order_id_is_404(client, user_headers, method):
    response = client.open(f"{ORDERS}/{ObjectId()}", method=method, headers=user_headers)

    assert_problem(response, 404, "order_not_found")


# -- cancelling ----------------------------------------------------------------------


def test_cancelling_restores_the_stock_exactly_once(
    client, drop, buy, user, user_headers, mongo_db, sale_state
):
    order = buy(user_headers, 2)
    assert stock_and_sold(sale_state, drop) == (8, 2)

    response = client.delete(f"{ORDERS}/{order['id']}", headers=user_headers)

    assert response.status_code == 200
    assert response.json["status"] == "cancelled"
    assert response.json["id"] == order["id"]
    assert mongo_db.orders.find_one({"_id": ObjectId(order["id"])})["status"] == "cancelled"
    assert stock_and_sold(sale_state, drop) == (10, 0)
    assert user["id"] not in sale_state(drop["id"])["users"]
    assert client.get(f"/api/v1/sales/stock/{drop['id']}").json["available"] == 10
    kept = client.get(f"{ORDERS}/{order['id']}", headers=user_headers)
    assert kept.status_code == 200 and kept.json["status"] == "cancelled"


def test_cancelling_twice_is_409_and_leaves_the_stock_alone(
    client, drop, buy, user_headers, mongo_db, sale_state
):
    order = buy(user_headers, 2)
    buy(user_headers, 1)
    assert client.delete(f"{ORDERS}/{order['id']}", headers=user_headers).status_code == 200

    again = client.delete(f"{ORDERS}/{order['id']}", headers=user_headers)

    assert_problem(again, 409, "order_already_cancelled")
    assert stock_and_sold(sale_state, drop) == (9, 1)
    assert mongo_db.orders.find_one({"_id": ObjectId(order["id"])})["status"] == "cancelled"


def test_cancelled_units_can_be_bought_again_within_the_limit(client, drop, buy, user_headers):
    order = buy(user_headers, 3)
    assert client.delete(f"{ORDERS}/{order['id']}", headers=user_headers).status_code == 200

    again = buy(user_headers, 3)

    assert again["status"] == "placed"


def test_a_user_cannot_cancel_another_users_order(
    client, drop, buy, user_headers, other_headers, mongo_db, sale_state
):
    order = buy(other_headers, 2)

    response = client.delete(f"{ORDERS}/{order['id']}", headers=user_headers)

    assert_problem(response, 404, "order_not_found")
    assert mongo_db.orders.find_one({"_id": ObjectId(order["id"])})["status"] == "placed"
    assert stock_and_sold(sale_state, drop) == (8, 2)


def test_an_admin_can_cancel_anyones_order(
    client, drop, buy, user, user_headers, admin_headers, mongo_db, sale_state
):
    order = buy(user_headers, 2)

    response = client.delete(f"{ORDERS}/{order['id']}", headers=admin_headers)

    assert response.status_code == 200
    assert response.json["status"] == "cancelled"
    assert mongo_db.orders.find_one({"_id": ObjectId(order["id"])})["status"] == "cancelled"
    assert stock_and_sold(sale_state, drop) == (10, 0)
    # The units come off the buyer's count, not the admin's.
    assert user["id"] not in sale_state(drop["id"])["users"]


def test_a_cancelled_order_cannot_be_revived_by_retrying_its_reservation(
    client, drop, user_headers, mongo_db, sale_state
):
    reservation = reserve(client, drop["id"], user_headers, 2)
    order = place(client, reservation["id"], user_headers).json
    assert client.delete(f"{ORDERS}/{order['id']}", headers=user_headers).status_code == 200

    retry = place(client, reservation["id"], user_headers)

    assert retry.status_code == 200
    assert retry.json["status"] == "cancelled"
    assert mongo_db.orders.count_documents({}) == 1
    assert stock_and_sold(sale_state, drop) == (10, 0)
