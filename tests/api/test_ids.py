"""Every id has one spelling: 24 lower-case hex digits, as the API hands it out.

bson reads an ObjectId in either case, but Redis keys, caches and counts use the text
as sent, so another spelling of a live product's id once made a second sale of it.
Any other spelling names nothing: 404 on a path, 422 in a body, on every route.
"""

import pytest

from tests.support.http import assert_problem
from tests.support.snapshots import redis_state


def other_spellings(canonical):
    spellings = {canonical.upper(), canonical[:12] + canonical[12:].upper()}
    spellings.discard(canonical)
    assert spellings, "an id of digits only has no other spelling"
    return sorted(spellings)


def mongo_state(mongo_db):
    return {
        name: sorted(map(repr, mongo_db[name].find())) for name in ("users", "products", "orders")
    }


@pytest.fixture
def placed(client, make_product, user_headers):
    """A live product (10 units, 2 per customer) with one placed order of 1 unit."""
    product = make_product(live=True, stock=10, per_user_limit=2)
    reservation = client.post(f"/api/v1/sales/reserve/{product['id']}", headers=user_headers)
    order = client.post(
        "/api/v1/orders", json={"reservation_id": reservation.json["id"]}, headers=user_headers
    )
    assert order.status_code == 201, order.json
    return {"product_id": product["id"], "order_id": order.json["id"]}


def test_a_product_id_in_another_case_is_404_on_every_route_and_changes_nothing(
    client, placed, user, user_headers, admin_headers, mongo_db, redis_client
):
    for spelling in other_spellings(placed["product_id"]):
        for method, path, headers, body in (
            ("POST", f"/api/v1/sales/start/{spelling}", admin_headers, None),
            ("POST", f"/api/v1/sales/restock/{spelling}", admin_headers, {"quantity": 5}),
            ("POST", f"/api/v1/sales/reserve/{spelling}", user_headers, {"quantity": 1}),
            ("POST", f"/api/v1/sales/end/{spelling}", admin_headers, None),
            ("GET", f"/api/v1/sales/stock/{spelling}", {}, None),
            ("GET", f"/api/v1/sales/audit/{spelling}", admin_headers, None),
            ("GET", f"/api/v1/products/{spelling}", {}, None),
        ):
            mongo_before, redis_before = mongo_state(mongo_db), redis_state(redis_client)

            response = client.open(path, method=method, json=body, headers=headers)

            assert_problem(response, 404, "product_not_found")
            assert mongo_state(mongo_db) == mongo_before, path
            assert redis_state(redis_client) == redis_before, path

    # The one sale is untouched: live, 9 units left, and the audit finds no drift.
    stock = client.get(f"/api/v1/sales/stock/{placed['product_id']}")
    assert stock.json == {"product_id": placed["product_id"], "status": "live", "available": 9}
    audit = client.get(f"/api/v1/sales/audit/{placed['product_id']}", headers=admin_headers)
    assert audit.json["ok"] is True and audit.json["total"] == 10


def test_no_redis_key_is_made_for_another_spelling_of_a_product(
    client, make_product, user_headers, admin_headers, redis_client
):
    product = make_product(stock=10, per_user_limit=2)
    spelling = product["id"].upper()
    client.post(f"/api/v1/sales/start/{spelling}", headers=admin_headers)
    client.post(f"/api/v1/sales/start/{product['id']}", headers=admin_headers)
    client.post(f"/api/v1/sales/restock/{spelling}", json={"quantity": 5}, headers=admin_headers)
    client.post(f"/api/v1/sales/reserve/{spelling}", json={"quantity": 2}, headers=user_headers)
    client.get(f"/api/v1/products/{spelling}")
    client.post(f"/api/v1/sales/end/{spelling}", headers=admin_headers)

    keys = redis_client.keys("*")
    assert keys and not [key for key in keys if spelling in key]
    assert redis_client.zrange("fc:trending", 0, -1) in ([], [product["id"]])
    stock = client.get(f"/api/v1/sales/stock/{product['id']}").json
    assert stock == {"product_id": product["id"], "status": "live", "available": 10}


def test_an_order_id_in_another_case_is_404_and_cancels_nothing(
    client, placed, user_headers, mongo_db
):
    for spelling in other_spellings(placed["order_id"]):
        assert_problem(
            client.get(f"/api/v1/orders/{spelling}", headers=user_headers), 404, "order_not_found"
        )
        assert_problem(
            client.delete(f"/api/v1/orders/{spelling}", headers=user_headers),
            404,
            "order_not_found",
        )
    order = client.get(f"/api/v1/orders/{placed['order_id']}", headers=user_headers)
    assert order.json["status"] == "placed"


def test_a_reservation_id_in_another_case_is_refused_at_checkout(
    client, make_product, user_headers, mongo_db, sale_state
):
    product = make_product(live=True, stock=10, per_user_limit=2)
    reservation_id = client.post(
        f"/api/v1/sales/reserve/{product['id']}", headers=user_headers
    ).json["id"]
    product_part, token = reservation_id.split(".")

    response = client.post(
        "/api/v1/orders",
        json={"reservation_id": f"{product_part.upper()}.{token}"},
        headers=user_headers,
    )

    body = assert_problem(response, 422, "validation_error")
    assert "reservation_id" in body["errors"]
    assert mongo_db.orders.count_documents({}) == 0
    assert sale_state(product["id"])["held"] == 1


def test_a_user_id_in_another_case_is_404_and_changes_no_role(
    client, user, admin_headers, mongo_db
):
    for spelling in other_spellings(user["id"]):
        response = client.put(
            f"/api/v1/auth/users/{spelling}/role", json={"role": "admin"}, headers=admin_headers
        )

        assert_problem(response, 404, "user_not_found")
    assert mongo_db.users.find_one({"email": user["email"]})["role"] == "user"
