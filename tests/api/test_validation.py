"""Every POST endpoint answers bad input with a 4xx problem and writes nothing.

Each case sends one bad body to one endpoint, then checks the answer has the
problem-details shape and that MongoDB and Redis are exactly as they were.
"""

import io
import json

import pytest

from flashcart.webhooks import service as webhooks
from tests.support.http import assert_problem, post
from tests.support.snapshots import redis_state

# name -> (path template, who calls it, a body that would succeed)
ENDPOINTS = {
    "signup": (
        "/api/v1/auth/signup",
        None,
        {"email": "new@example.com", "password": "long enough pw", "name": "New"},
    ),
    "login": ("/api/v1/auth/login", None, {"email": "x@example.com", "password": "whatever1"}),
    "refresh": ("/api/v1/auth/refresh", None, {"refresh_token": "not.a.token"}),
    "create_product": (
        "/api/v1/products",
        "admin",
        {"name": "Drop", "price": "10.00", "stock": 5, "per_user_limit": 1},
    ),
    "reserve": ("/api/v1/sales/reserve/{pid}", "user", {"quantity": 1}),
    "place_order": ("/api/v1/orders", "user", {"reservation_id": "{rid}"}),
    "restock": ("/api/v1/sales/restock/{pid}", "admin", {"quantity": 5}),
}

HUGE_INT_TEXT = "9" * 5000  # past Python's 4300-digit int parsing limit
DEEP_JSON = "[" * 20_000 + "]" * 20_000  # under MAX_CONTENT_LENGTH, past the recursion limit


def store_state(mongo_db, redis_client):
    collections = ("users", "products", "orders")
    counts = {name: mongo_db[name].count_documents({}) for name in collections}
    products = sorted(
        (str(doc["_id"]), doc["stock"], doc["sale_status"]) for doc in mongo_db.products.find()
    )
    return counts, products, redis_state(redis_client)


@pytest.fixture
def world(client, make_product, admin_headers, user_headers):
    """A live product, a live reservation of it, and headers for each caller."""
    product = make_product(live=True, stock=10, per_user_limit=5)
    reservation = client.post(
        f"/api/v1/sales/reserve/{product['id']}", json={"quantity": 1}, headers=user_headers
    )
    assert reservation.status_code == 201
    return {
        "pid": product["id"],
        "rid": reservation.json["id"],
        "headers": {None: {}, "user": user_headers, "admin": admin_headers},
    }


@pytest.fixture(params=["sized", "chunked"])
def transfer(request):
    """Every body check runs on a body with a Content-Length and on a chunked one."""
    return request.param


@pytest.fixture
def send(client, world, mongo_db, redis_client, transfer):
    """send(endpoint, data=..., raw=..., content_type=...) -> the response, after
    checking that the request wrote nothing."""

    def send_(endpoint, *, data=None, raw=None, content_type="application/json"):
        path, caller, _ = ENDPOINTS[endpoint]
        path = path.format(pid=world["pid"])
        if raw is None:
            raw = json.dumps(fill(data, world))
        before = store_state(mongo_db, redis_client)
        response = post(
            client,
            path,
            raw,
            transfer=transfer,
            content_type=content_type,
            headers=world["headers"][caller],
        )
        assert store_state(mongo_db, redis_client) == before, "a bad request wrote something"
        return response

    return send_


def fill(value, world):
    """Put the live product and reservation ids into a template body."""
    if isinstance(value, str):
        return value.format(pid=world["pid"], rid=world["rid"])
    if isinstance(value, dict):
        return {key: fill(item, world) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, world) for item in value]
    return value


def valid(endpoint, **changes):
    return ENDPOINTS[endpoint][2] | changes


def without(endpoint, field):
    return {key: value for key, value in ENDPOINTS[endpoint][2].items() if key != field}


# -- malformed bodies, on every endpoint ----------------------------------------------

ALL = list(ENDPOINTS)


def each(cases, check):
    """Run `check(case)` for every case; report every failing case, not just the first."""
    failures = []
    for case in cases:
        try:
            check(case)
        except AssertionError as error:
            failures.append(f"{case!r}: {error}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("endpoint", ALL)
def test_a_body_that_is_not_json_is_400_with_the_problem_shape(send, endpoint):
    def check(raw):
        body = assert_problem(send(endpoint, raw=raw), 400)
        assert body["code"] == "bad_request"
        assert "JSON" in body["detail"]

    each(["{bad json", '{"quantity": 1', "{'single': 'quotes'}", "nul", "{}}"], check)


@pytest.mark.parametrize("endpoint", ALL)
def test_a_body_that_is_not_utf8_is_400(send, endpoint):
    assert_problem(send(endpoint, raw=b'{"name": "\xff\xfe"}'), 400)


@pytest.mark.parametrize("endpoint", ALL)
def test_a_json_body_that_is_not_an_object_is_422(send, endpoint):
    def check(raw):
        body = assert_problem(send(endpoint, raw=raw), 422)
        assert body["code"] == "validation_error"

    each(["[]", "[1, 2]", '"a string"', "42", "true", "null"], check)


@pytest.mark.parametrize("endpoint", ALL)
def test_unknown_fields_are_422(send, endpoint):
    def check(field):
        body = assert_problem(send(endpoint, data=valid(endpoint, **{field: "admin"})), 422)
        assert body["errors"] == {field: ["Unknown field."]}

    each(["role", "is_admin", "$where", "_id"], check)


@pytest.mark.parametrize("endpoint", ALL)
def test_a_number_too_long_to_parse_is_a_4xx_not_a_500(send, endpoint):
    template = json.dumps(fill(valid(endpoint, big=0), {"pid": "p", "rid": "r"}))
    raw = template.replace('"big": 0', f'"big": {HUGE_INT_TEXT}')

    assert_problem(send(endpoint, raw=raw))


@pytest.mark.parametrize("endpoint", ALL)
def test_deeply_nested_json_is_a_4xx_not_a_500(send, endpoint):
    assert_problem(send(endpoint, raw=DEEP_JSON))


@pytest.mark.parametrize("endpoint", ALL)
def test_a_body_over_the_size_limit_is_413(send, endpoint):
    raw = json.dumps({"padding": "x" * 70_000})

    body = assert_problem(send(endpoint, raw=raw), 413)

    assert body["code"] == "payload_too_large"


def test_a_chunked_body_far_over_the_limit_is_413_after_reading_just_past_the_limit(
    client, world, mongo_db, redis_client
):
    body = io.BytesIO(json.dumps({"quantity": 1, "padding": "x" * 2_000_000}).encode())
    before = store_state(mongo_db, redis_client)

    response = client.post(
        f"/api/v1/sales/reserve/{world['pid']}",
        input_stream=body,
        headers={**world["headers"]["user"], "Transfer-Encoding": "chunked"},
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert_problem(response, 413, "payload_too_large")
    assert body.tell() <= 64 * 1024 + 1
    assert store_state(mongo_db, redis_client) == before


NOT_JSON = [
    ("text/plain", '{"quantity": 3}'),
    ("application/x-www-form-urlencoded", "quantity=3"),
    ("multipart/form-data; boundary=b", '--b\r\nContent-Disposition: form-data; name="q"\r\n\r\n3'),
    ("application/xml", "<quantity>3</quantity>"),
    ("application/jsonx", '{"quantity": 3}'),
    (None, '{"quantity": 3}'),
]


@pytest.mark.parametrize("endpoint", ALL)
def test_a_body_that_is_not_sent_as_json_is_415(send, endpoint):
    def check(case):
        content_type, raw = case
        body = assert_problem(send(endpoint, raw=raw, content_type=content_type), 415)
        assert body["code"] == "unsupported_media_type"
        assert "application/json" in body["detail"]

    each(NOT_JSON, check)


def test_quantity_sent_as_text_reserves_nothing(client, world, sale_state, transfer):
    before = sale_state(world["pid"])

    response = post(
        client,
        f"/api/v1/sales/reserve/{world['pid']}",
        '{"quantity": 3}',
        transfer=transfer,
        content_type="text/plain",
        headers=world["headers"]["user"],
    )

    assert_problem(response, 415, "unsupported_media_type")
    assert sale_state(world["pid"]) == before


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/vnd.flashcart+json"]
)
def test_json_and_plus_json_bodies_are_read(client, world, sale_state, transfer, content_type):
    response = post(
        client,
        f"/api/v1/sales/reserve/{world['pid']}",
        '{"quantity": 3}',
        transfer=transfer,
        content_type=content_type,
        headers=world["headers"]["user"],
    )

    assert response.status_code == 201, response.json
    assert response.json["quantity"] == 3
    assert sale_state(world["pid"])["held"] == 1 + 3


# -- query parameters ------------------------------------------------------------------


def test_every_api_operation_refuses_a_query_parameter_it_does_not_document(
    app, client, world, user, admin_headers, mongo_db, redis_client
):
    order = client.post(
        "/api/v1/orders", json={"reservation_id": world["rid"]}, headers=world["headers"]["user"]
    )
    with app.app_context():
        app.config["WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS"] = True
        endpoint = webhooks.create_endpoint(url="http://127.0.0.1:9/in", types=["order.placed"])
    ids = {
        "product_id": world["pid"],
        "order_id": order.json["id"],
        "user_id": user["id"],
        "endpoint_id": endpoint["id"],
    }
    spec = client.get("/openapi.json").json
    operations = [
        (method, path)
        for path, item in spec["paths"].items()
        if path.startswith("/api/")
        for method in item
        if method != "parameters"
    ]
    assert len(operations) >= 19
    before = store_state(mongo_db, redis_client)

    def check(operation):
        method, path = operation
        url = path.format(**ids) + "?page=1&surprise=1"
        documented = {
            p["name"]
            for p in spec["paths"][path][method].get("parameters", [])
            if p.get("in") == "query"
        }
        response = client.open(url, method=method.upper(), json={}, headers=admin_headers)
        body = assert_problem(response, 422, "validation_error")
        unknown = {"page", "surprise"} - documented
        assert body["errors"] == {name: ["Unknown field."] for name in unknown}

    each(operations, check)
    assert store_state(mongo_db, redis_client) == before


def test_the_probes_take_a_query_string_a_load_balancer_adds(client):
    assert client.get("/healthz?cache_buster=123").status_code == 200


# -- field by field -------------------------------------------------------------------

OPERATOR = {"$gt": ""}
LONE_SURROGATE = "\ud800"  # valid JSON ("\\ud800"), but no store can encode it
# Names are one line of text: no control character, not whitespace alone.
UNFIT_NAMES = [
    "a\x00b",
    "\x00",
    "bell\x07",
    "\x1b[2J",
    "two\nlines",
    "tab\there",
    "del\x7f",
    "c1\x85",
    " ",
    "   ",
    "\t",
    "\u00a0\u3000",
    "name" + LONE_SURROGATE,
]
HUGE_PRICES = [10**300, 10**400, -(10**400), int("9" * 4000)]
# Moments whose UTC instant falls outside the years 1-9999 (no date type holds them).
MOMENTS_OUTSIDE_DATES = [
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:00:00-01:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:59:59+01:00",
]

FIELD_CASES = {
    "signup": [
        (without("signup", "email"), "email"),
        (without("signup", "password"), "password"),
        (without("signup", "name"), "name"),
        (valid("signup", email=OPERATOR), "email"),
        (valid("signup", email={"$ne": None}), "email"),
        (valid("signup", password=OPERATOR), "password"),
        (valid("signup", name=OPERATOR), "name"),
        (valid("signup", email=12345), "email"),
        (valid("signup", email="not-an-email"), "email"),
        (valid("signup", email="a" * 250 + "@example.com"), "email"),
        (valid("signup", password=12345678), "password"),
        (valid("signup", password="short"), "password"),
        (valid("signup", password="x" * 129), "password"),
        (valid("signup", name=""), "name"),
        (valid("signup", name=["New"]), "name"),
        (valid("signup", name="n" * 101), "name"),
        *[(valid("signup", name=name), "name") for name in UNFIT_NAMES],
        (valid("signup", password="long enough pw" + LONE_SURROGATE), "password"),
    ],
    "login": [
        (without("login", "email"), "email"),
        (without("login", "password"), "password"),
        (valid("login", email={"$ne": None}), "email"),
        (valid("login", email=OPERATOR), "email"),
        (valid("login", password={"$ne": None}), "password"),
        (valid("login", password=""), "password"),
        (valid("login", password=None), "password"),
        (valid("login", email=1), "email"),
        (valid("login", password="whatever1" + LONE_SURROGATE), "password"),
    ],
    "refresh": [
        (without("refresh", "refresh_token"), "refresh_token"),
        (valid("refresh", refresh_token=""), "refresh_token"),
        (valid("refresh", refresh_token=OPERATOR), "refresh_token"),
        (valid("refresh", refresh_token="a.b" + LONE_SURROGATE), "refresh_token"),
    ],
    "create_product": [
        (without("create_product", "name"), "name"),
        (without("create_product", "price"), "price"),
        (without("create_product", "stock"), "stock"),
        (valid("create_product", name=OPERATOR), "name"),
        (valid("create_product", description={"$ne": None}), "description"),
        (valid("create_product", price={"$gt": 0}), "price"),
        (valid("create_product", price="abc"), "price"),
        (valid("create_product", price=float("inf")), "price"),
        (valid("create_product", price="10.001"), "price"),
        (valid("create_product", stock="5"), "stock"),
        (valid("create_product", stock=1.5), "stock"),
        (valid("create_product", stock=True), "stock"),
        (valid("create_product", stock=10**30), "stock"),
        (valid("create_product", stock=0), "stock"),
        (valid("create_product", per_user_limit=0), "per_user_limit"),
        (valid("create_product", per_user_limit=10**30), "per_user_limit"),
        (valid("create_product", name=""), "name"),
        (valid("create_product", name="n" * 201), "name"),
        (valid("create_product", starts_at="tomorrow"), "starts_at"),
        (valid("create_product", starts_at="2030-01-01T00:00:00"), "starts_at"),
        *[(valid("create_product", name=name), "name") for name in UNFIT_NAMES],
        *[
            (valid("create_product", description=text), "description")
            for text in ("a\x00b", "\x1b[31mred", "bell\x07", LONE_SURROGATE)
        ],
        *[(valid("create_product", price=price), "price") for price in HUGE_PRICES],
        *[
            (valid("create_product", **{field: moment}), field)
            for field in ("starts_at", "ends_at")
            for moment in MOMENTS_OUTSIDE_DATES
        ],
        (
            valid(
                "create_product",
                starts_at="2030-01-02T00:00:00+00:00",
                ends_at="2030-01-01T00:00:00Z",
            ),
            "ends_at",
        ),
    ],
    "reserve": [
        (valid("reserve", quantity={"$gt": 0}), "quantity"),
        (valid("reserve", quantity="1"), "quantity"),
        (valid("reserve", quantity=10**30), "quantity"),
        (valid("reserve", quantity=-(10**30)), "quantity"),
        (valid("reserve", quantity=1e300), "quantity"),
    ],
    "place_order": [
        (without("place_order", "reservation_id"), "reservation_id"),
        (valid("place_order", reservation_id={"$ne": None}), "reservation_id"),
        (valid("place_order", reservation_id={"$regex": ".*"}), "reservation_id"),
        (valid("place_order", reservation_id=10**30), "reservation_id"),
        (valid("place_order", reservation_id=""), "reservation_id"),
        (valid("place_order", reservation_id=["{rid}"]), "reservation_id"),
    ],
    "restock": [
        (without("restock", "quantity"), "quantity"),
        (valid("restock", quantity=0), "quantity"),
        (valid("restock", quantity="5"), "quantity"),
        (valid("restock", quantity=1.5), "quantity"),
        (valid("restock", quantity=10**30), "quantity"),
        (valid("restock", quantity={"$inc": 5}), "quantity"),
    ],
}


@pytest.mark.parametrize("endpoint", ALL)
def test_a_bad_field_is_422_naming_the_field(send, endpoint):
    def check(case):
        data, field = case
        body = assert_problem(send(endpoint, data=data), 422)
        assert body["code"] == "validation_error"
        assert field in body["errors"], body["errors"]

    each(FIELD_CASES[endpoint], check)


@pytest.mark.parametrize("price", ["1e30", 1e300, "9" * 40], ids=["1e30", "1e300", "40 nines"])
def test_a_price_too_large_for_cents_is_422_not_500(send, price):
    body = assert_problem(send("create_product", data=valid("create_product", price=price)), 422)

    assert "price" in body["errors"]


def test_text_and_moments_at_the_edges_are_stored_and_served_as_sent(
    client, admin_headers, user_headers, mongo_db
):
    body = {
        "name": "Ünïcödé drop – ✨ 限定 😀",
        "description": "line one\nline two\twith a tab\r\n",
        "price": 1_000_000,
        "stock": 3,
        "per_user_limit": 1,
        "starts_at": "0001-01-01T01:00:00+01:00",
        "ends_at": "9999-12-31T22:59:59.999999-01:00",
    }

    created = client.post("/api/v1/products", json=body, headers=admin_headers)

    assert created.status_code == 201, created.json
    product = created.json
    expected = {
        "name": body["name"],
        "description": body["description"],
        "price": "1000000.00",
        "starts_at": "0001-01-01T00:00:00+00:00",  # in UTC, to the millisecond
        "ends_at": "9999-12-31T23:59:59.999000+00:00",
    }
    assert {key: product[key] for key in expected} == expected
    assert client.get(f"/api/v1/products/{product['id']}").json == product
    assert mongo_db.products.find_one()["name"] == body["name"]
    # The window reaches Redis too: the sale opens and takes a reservation.
    started = client.post(f"/api/v1/sales/start/{product['id']}", headers=admin_headers)
    assert started.status_code == 200, started.json
    reserved = client.post(f"/api/v1/sales/reserve/{product['id']}", headers=user_headers)
    assert reserved.status_code == 201, reserved.json


# -- the endpoints really do accept the reference bodies ---------------------------------


@pytest.mark.parametrize("endpoint", ["signup", "create_product", "reserve", "restock"])
def test_the_reference_body_is_accepted(client, world, endpoint):
    # Proves the cases above fail because of what they change, not the base body.
    path, caller, body = ENDPOINTS[endpoint]

    response = client.post(
        path.format(pid=world["pid"]), json=fill(body, world), headers=world["headers"][caller]
    )

    assert response.status_code in (200, 201), response.json


def test_the_reference_order_body_is_accepted(client, world):
    path, caller, body = ENDPOINTS["place_order"]

    response = client.post(path, json=fill(body, world), headers=world["headers"][caller])

    assert response.status_code == 201, response.json


def test_the_reference_login_body_reaches_authentication(client, world):
    path, _, body = ENDPOINTS["login"]

    response = client.post(path, json=body)

    assert_problem(response, 401)
    assert response.json["code"] == "invalid_credentials"


# -- body-less POSTs -------------------------------------------------------------------


@pytest.mark.parametrize("action", ["start", "end"])
@pytest.mark.parametrize("product_id", ["not-an-id", "6b0819c5f9a3416a6362d779"])
def test_sale_actions_on_unknown_products_are_404_and_write_nothing(
    client, world, admin_headers, mongo_db, redis_client, action, product_id
):
    before = store_state(mongo_db, redis_client)

    response = client.post(f"/api/v1/sales/{action}/{product_id}", headers=admin_headers)

    body = assert_problem(response, 404)
    assert body["code"] == "product_not_found"
    assert store_state(mongo_db, redis_client) == before
