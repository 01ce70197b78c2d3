"""Mass assignment and injection: sign-up sets no role or server field, unknown fields
are refused, and Mongo operators sent in JSON, query strings or paths never reach a
query. Every MongoDB filter the app builds during the attacks is recorded and
searched for the operators sent."""

import json

import mongomock.collection
import pytest
from bson import ObjectId

from .helpers import LOGIN, SIGNUP, assert_problem

# Operators an attacker sends. The app's own queries use none of them.
INJECTED = ("$gt", "$where", "$regex", "$exists", "$expr")
OPERATOR = {"$gt": ""}


@pytest.fixture
def filters(monkeypatch):
    """Every filter passed to a MongoDB collection method while the test runs."""
    seen = []
    for name in (
        "find",
        "find_one",
        "count_documents",
        "update_one",
        "update_many",
        "find_one_and_update",
        "delete_one",
        "delete_many",
    ):
        method = getattr(mongomock.collection.Collection, name)

        def spy(self, filter=None, *args, _method=method, **kwargs):
            seen.append(filter)
            return _method(self, filter, *args, **kwargs)

        monkeypatch.setattr(mongomock.collection.Collection, name, spy)
    return seen


def assert_no_injected_operator(filters):
    text = json.dumps(filters, default=str)
    for operator in INJECTED:
        assert operator not in text, text


# -- mass assignment -----------------------------------------------------------------

SERVER_FIELDS = {
    "role": "admin",
    "_id": "0123456789abcdef01234567",
    "id": "0123456789abcdef01234567",
    "password_hash": "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
    "created_at": "2000-01-01T00:00:00Z",
    "updated_at": "2000-01-01T00:00:00Z",
    "is_admin": True,
    "admin": True,
    "roles": ["admin"],
}


@pytest.mark.parametrize("field", sorted(SERVER_FIELDS))
def test_sign_up_cannot_set_a_role_or_any_server_field(client, mongo_db, field):
    body = {"email": "eve@example.com", "password": "a long password", "name": "Eve"}

    response = client.post(SIGNUP, json=body | {field: SERVER_FIELDS[field]})

    problem = assert_problem(response, 422, "validation_error")
    assert field in problem["errors"]
    assert mongo_db.users.count_documents({}) == 0


def test_a_sign_up_always_stores_role_user_and_server_timestamps(client, mongo_db):
    response = client.post(
        SIGNUP, json={"email": "eve@example.com", "password": "a long password", "name": "Eve"}
    )

    assert response.status_code == 201
    stored = mongo_db.users.find_one()
    assert set(stored) == {
        "_id",
        "email",
        "name",
        "password_hash",
        "role",
        "created_at",
        "updated_at",
    }
    assert stored["role"] == "user"
    assert stored["created_at"].year > 2000


def test_product_creation_cannot_set_sale_state_or_counters(client, admin_headers, mongo_db):
    body = {"name": "Drop", "price": "10.00", "stock": 5}
    for field, value in {
        "sale_status": "live",
        "sold": 0,
        "units_sold": 0,
        "_id": "0123456789abcdef01234567",
        "created_by": "someone",
    }.items():
        response = client.post(
            "/api/v1/products", json=body | {field: value}, headers=admin_headers
        )
        assert_problem(response, 422, "validation_error")
    assert mongo_db.products.count_documents({}) == 0


# -- operator injection in JSON --------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"email": OPERATOR, "password": OPERATOR},
        {"email": {"$ne": None}, "password": "whatever1"},
        {"email": {"$regex": ".*"}, "password": "whatever1"},
        {"email": "eve@example.com", "password": {"$ne": ""}},
        {"email": ["eve@example.com"], "password": "whatever1"},
        {"email": "eve@example.com", "password": "whatever1", "$where": "1 == 1"},
    ],
)
def test_login_with_mongo_operators_is_422_and_reaches_no_query(client, user, filters, body):
    response = client.post(LOGIN, json=body)

    assert_problem(response, 422, "validation_error")
    assert "access_token" not in response.json
    assert filters == []


def test_sign_up_with_an_operator_for_email_is_422(client, mongo_db, filters):
    response = client.post(
        SIGNUP, json={"email": {"$gt": ""}, "password": "a long password", "name": {"$gt": ""}}
    )

    problem = assert_problem(response, 422, "validation_error")
    assert {"email", "name"} <= set(problem["errors"])
    assert mongo_db.users.count_documents({}) == 0
    assert_no_injected_operator(filters)


@pytest.mark.parametrize(
    "reservation_id", [OPERATOR, {"$exists": True}, ["x"], "x.y", "0" * 24 + ".$gt"]
)
def test_checkout_with_an_operator_for_reservation_id_is_422(
    client, user_headers, filters, reservation_id
):
    response = client.post(
        "/api/v1/orders", json={"reservation_id": reservation_id}, headers=user_headers
    )

    assert_problem(response, 422, "validation_error")
    assert_no_injected_operator(filters)


def test_reserve_and_restock_refuse_operators_for_quantities(
    client, make_product, user_headers, admin_headers, filters
):
    product = make_product(live=True)

    reserve = client.post(
        f"/api/v1/sales/reserve/{product['id']}", json={"quantity": OPERATOR}, headers=user_headers
    )
    restock = client.post(
        f"/api/v1/sales/restock/{product['id']}", json={"quantity": OPERATOR}, headers=admin_headers
    )

    assert_problem(reserve, 422, "validation_error")
    assert_problem(restock, 422, "validation_error")
    assert_no_injected_operator(filters)


# -- operator injection in query strings and paths --------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "status[$ne]=placed",
        "status[$gt]=",
        'status={"$ne":null}',
        "user_id[$exists]=true",
        "page[$gt]=0",
        "$where=1",
    ],
)
def test_order_listing_refuses_operators_in_the_query_string(client, user_headers, filters, query):
    response = client.get(f"/api/v1/orders?{query}", headers=user_headers)

    assert_problem(response, 422, "validation_error")
    assert_no_injected_operator(filters)


def test_product_listing_refuses_operators_in_the_query_string(client, filters):
    for query in ("page[$gt]=0", "sale_status[$ne]=draft", "per_page=$where"):
        assert_problem(client.get(f"/api/v1/products?{query}"), 422, "validation_error")
    assert_no_injected_operator(filters)


ID_ATTACKS = [
    '{"$gt":""}',
    "%7B%22%24gt%22%3A%22%22%7D",
    "[$regex]=.*",
    "0123456789abcdef0123456",  # 23 hex digits
    "0123456789abcdef012345678",  # 25
    "0123456789abcdef0123456g",
    "000000000000",  # 12 bytes: a valid ObjectId to bson, not to us
    "..%2f..%2fadmin",
]


@pytest.mark.parametrize("bad_id", ID_ATTACKS)
def test_malformed_ids_are_404_and_reach_no_query(
    client, user_headers, admin, admin_headers, filters, bad_id
):
    admin_requests = 0
    for method, path, headers, code in (
        ("GET", f"/api/v1/orders/{bad_id}", user_headers, "order_not_found"),
        ("DELETE", f"/api/v1/orders/{bad_id}", user_headers, "order_not_found"),
        ("GET", f"/api/v1/products/{bad_id}", {}, "product_not_found"),
        ("GET", f"/api/v1/sales/stock/{bad_id}", {}, "product_not_found"),
        ("POST", f"/api/v1/sales/reserve/{bad_id}", user_headers, "product_not_found"),
        ("GET", f"/api/v1/sales/audit/{bad_id}", admin_headers, "product_not_found"),
        ("PUT", f"/api/v1/auth/users/{bad_id}/role", admin_headers, "user_not_found"),
    ):
        body = {"role": "admin"} if method == "PUT" else None
        response = client.open(path, method=method, json=body, headers=headers)
        if response.status_code == 404 and response.json["code"] == "not_found":
            continue  # the id did not even match the route (a "/" in it)
        assert_problem(response, 404, code)
        admin_requests += headers is admin_headers
    # The only queries made were the admins' role checks: none by the malformed id.
    admin_check = {"_id": ObjectId(admin["id"]), "role": "admin"}
    assert filters == [admin_check] * admin_requests
