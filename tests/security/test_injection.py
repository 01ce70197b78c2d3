"""Mass assignment and injection: sign-up sets no role or server field, unknown fields
are refused, and Mongo operators sent in JSON, query strings or paths never reach a
query. Each attack is aimed at documents it would find if an operator did reach one
(a shopper to log in as, a live hold, a placed order); the answers and the stored
documents show that it found and changed nothing."""

import pytest
from bson import ObjectId

from .helpers import LOGIN, SIGNUP, assert_problem

OPERATOR = {"$gt": ""}
COLLECTIONS = ("users", "products", "orders")


@pytest.fixture
def stored(mongo_db):
    """stored() -> every document of the app's collections, to prove an attack
    changed nothing."""

    def documents():
        return {name: list(mongo_db[name].find().sort("_id")) for name in COLLECTIONS}

    return documents


@pytest.fixture
def live_product(make_product):
    return make_product(live=True, stock=10, per_user_limit=3)


@pytest.fixture
def hold(client, live_product, user_headers):
    """A live reservation of the user's: what an injected reservation id would find."""
    response = client.post(
        f"/api/v1/sales/reserve/{live_product['id']}", json={}, headers=user_headers
    )
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture
def placed_order(client, live_product, user_headers):
    """A placed order of the user's: what an injected order id would find."""
    reserved = client.post(
        f"/api/v1/sales/reserve/{live_product['id']}", json={}, headers=user_headers
    )
    placed = client.post(
        "/api/v1/orders", json={"reservation_id": reserved.json["id"]}, headers=user_headers
    )
    assert placed.status_code == 201, placed.json
    return placed.json


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
def test_login_with_mongo_operators_is_422_and_logs_nobody_in(client, user, stored, body):
    before = stored()

    response = client.post(LOGIN, json=body)

    assert_problem(response, 422, "validation_error")
    assert "access_token" not in response.json
    assert stored() == before


def test_sign_up_with_an_operator_for_email_is_422(client, user, stored):
    before = stored()

    response = client.post(
        SIGNUP, json={"email": {"$gt": ""}, "password": "a long password", "name": {"$gt": ""}}
    )

    problem = assert_problem(response, 422, "validation_error")
    assert {"email", "name"} <= set(problem["errors"])
    assert stored() == before


@pytest.mark.parametrize(
    "reservation_id", [OPERATOR, {"$exists": True}, ["x"], "x.y", "0" * 24 + ".$gt"]
)
def test_checkout_with_an_operator_for_reservation_id_is_422_and_claims_no_hold(
    client, user_headers, hold, live_product, sale_state, stored, reservation_id
):
    before = stored(), sale_state(live_product["id"])

    response = client.post(
        "/api/v1/orders", json={"reservation_id": reservation_id}, headers=user_headers
    )

    assert_problem(response, 422, "validation_error")
    assert (stored(), sale_state(live_product["id"])) == before
    assert before[1]["held"] == 1


def test_reserve_and_restock_refuse_operators_for_quantities(
    client, live_product, user_headers, admin_headers, sale_state, stored
):
    before = stored(), sale_state(live_product["id"])

    reserve = client.post(
        f"/api/v1/sales/reserve/{live_product['id']}",
        json={"quantity": OPERATOR},
        headers=user_headers,
    )
    restock = client.post(
        f"/api/v1/sales/restock/{live_product['id']}",
        json={"quantity": OPERATOR},
        headers=admin_headers,
    )

    assert_problem(reserve, 422, "validation_error")
    assert_problem(restock, 422, "validation_error")
    assert (stored(), sale_state(live_product["id"])) == before


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
def test_order_listing_refuses_operators_in_the_query_string(
    client, placed_order, make_user, headers_for, query
):
    # Another shopper: an operator that reached the query would list the user's order.
    response = client.get(f"/api/v1/orders?{query}", headers=headers_for(make_user()))

    assert_problem(response, 422, "validation_error")
    assert placed_order["id"] not in response.get_data(as_text=True)


def test_product_listing_refuses_operators_in_the_query_string(client, make_product):
    draft = make_product()
    for query in ("page[$gt]=0", "sale_status[$ne]=draft", "per_page=$where"):
        response = client.get(f"/api/v1/products?{query}")
        assert_problem(response, 422, "validation_error")
        assert draft["id"] not in response.get_data(as_text=True)


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
def test_malformed_ids_are_404_and_find_or_change_nothing(
    client, user, user_headers, admin_headers, placed_order, live_product, stored, bad_id
):
    # Each request would find (and change) the user's order, the live product or the
    # user if the id reached a query as an operator or a partial match.
    before = stored()
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
    after = stored()
    assert after == before
    assert {o["status"] for o in after["orders"]} == {"placed"}
    assert [u["role"] for u in after["users"] if u["_id"] == ObjectId(user["id"])] == ["user"]
