"""Schemathesis fuzzes the API in-process from its own OpenAPI document.

Every operation gets generated requests, valid and invalid, with an admin's token
where the document asks for one; no answer may be a 5xx, every answer must match
what the document promises (status, content type, headers, body schema), and
invalid input must be refused.
The stateful phase then chains calls along the links schemathesis infers (a
reservation's id into checkout, an order's id into GET and DELETE), with the rule
the document states in words: a DELETE cancels an order, it does not remove it.
FUZZ_EXAMPLES sets the budget per operation (and the number of chains): small in
`make test`, bigger in `make fuzz` (which also draws new random inputs each run).

Schemathesis sends what the document describes. The edges it does not reach are
drawn below with Hypothesis: numbers past what a float or the int parser takes,
moments at the ends of the calendar with any offset, text with control characters
and lone surrogates, deep nesting, bodies that are not sent as JSON, and all of it
chunked as well as with a Content-Length.
"""

import ipaddress
import json
import os
import re
import uuid
import zlib
from datetime import datetime, timedelta, timezone

import mongomock
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance, use_after_free

from config import TestingConfig
from flashcart import create_app
from flashcart.auth import passwords
from flashcart.auth import service as accounts
from flashcart.idempotency import KEY_PATTERN
from flashcart.orders.schemas import RESERVATION_ID
from flashcart.webhooks import destinations
from tests.support.app import PASSWORD, app_settings
from tests.support.http import assert_problem, post
from tests.support.snapshots import redis_state

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"
FUZZING = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=list(HealthCheck),
)
SENT = {"requests": 0}
TOKEN = {"admin": None}


def _document():
    # The document as the app serves it; the requests go to each test's own app.
    return create_app(TestingConfig).test_client().get("/openapi.json").json


schema = schemathesis.openapi.from_dict(_document())


@schema.auth(refresh_interval=None)
class AdminToken:
    """An admin's bearer token where the document asks for one, so schemathesis
    knows which requests are authenticated (and checks the rest are refused)."""

    def get(self, case, context):
        return TOKEN["admin"]

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _fresh_idempotency_key(case):
    # Generated keys repeat ("0", "00"...) across different bodies, which the API
    # rightly refuses as a reused key; a valid key is made unique per request.
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(KEY_PATTERN, key):
        case.headers["Idempotency-Key"] = uuid.uuid4().hex


def seed(client, admin_headers):
    """A product on sale and a placed order, for generated ids to be swapped with."""
    body = {"name": "Drop", "price": "10.00", "stock": 100_000, "per_user_limit": 1000}
    product = client.post("/api/v1/products", json=body, headers=admin_headers).json
    started = client.post(f"/api/v1/sales/start/{product['id']}", headers=admin_headers)
    assert started.status_code == 200, started.json
    reserve = f"/api/v1/sales/reserve/{product['id']}"

    def reservation():
        # None once a generated call has ended the sale (the stateful phase may).
        return client.post(reserve, json={}, headers=admin_headers).json.get("id")

    order = client.post(
        "/api/v1/orders", json={"reservation_id": reservation()}, headers=admin_headers
    )
    return {"product_id": product["id"], "order_id": order.json["id"], "reservation": reservation}


# A public address (example.com's) for every generated webhook host name: the fuzz
# never asks real DNS (slow, and not the suite's to depend on), and what it registers
# is never sent to.
PUBLIC_ADDRESS = "93.184.215.14"


def _resolve_offline(host, port):
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return [PUBLIC_ADDRESS]


@pytest.fixture(autouse=True)
def offline_dns(monkeypatch):
    monkeypatch.setattr(destinations, "resolve", _resolve_offline)


@pytest.fixture
def seeded(client, admin_headers):
    return seed(client, admin_headers)


@pytest.fixture
def fresh_start(app_config, redis_client):
    """fresh_start() -> (app, seeded ids, admin token) on empty stores, so that every
    chain of the stateful phase starts from the same state (Hypothesis replays them)."""

    def start():
        redis_client.flushdb()
        db = mongomock.MongoClient().flashcart
        app = create_app({**app_settings(), **app_config}, db=db, redis_client=redis_client)
        with app.app_context():
            admin = accounts.register(
                email="admin@example.com", password=PASSWORD, name="Admin", role="admin"
            )
            token = accounts.issue_token(admin)["access_token"]
        return app, seed(app.test_client(), {"Authorization": f"Bearer {token}"}), token

    return start


def _half(value):
    return zlib.crc32(repr(value).encode()) % 2 == 0


def _reach_real_resources(case, seeded, issued=frozenset()):
    # Random ids only ever find nothing; for about half of the valid ones use ids
    # that exist, so generated bodies reach the sale, checkout and cancel rules.
    # Any non-empty string is a valid id, so a swapped case stays valid. Ids the
    # API `issued` (a link of the stateful phase brought them) are kept.
    for name in ("product_id", "order_id"):
        value = (case.path_parameters or {}).get(name)
        if isinstance(value, str) and value and value not in issued and _half(value):
            case.path_parameters[name] = seeded[name]
    body = case.body
    reservation_id = body.get("reservation_id") if isinstance(body, dict) else None
    valid = isinstance(reservation_id, str) and re.fullmatch(RESERVATION_ID, reservation_id)
    if valid and reservation_id not in issued and _half(body):
        body["reservation_id"] = seeded["reservation"]() or reservation_id


def _strings(value):
    """Every string in a JSON document."""
    if isinstance(value, dict):
        return {text for item in value.values() for text in _strings(item)}
    if isinstance(value, list):
        return {text for item in value for text in _strings(item)}
    return {value} if isinstance(value, str) else set()


def _window_out_of_order(body):
    # The one rule the document cannot express: a sale window ends after it starts.
    if not isinstance(body, dict):
        return False
    starts, ends = body.get("starts_at"), body.get("ends_at")
    return isinstance(starts, str) and isinstance(ends, str) and ends <= starts


def _password_refused(case):
    # Sign-up's password rules that the document can only describe in words (too
    # common, too few different characters, the email itself).
    body = case.body if case.path == "/api/v1/auth/signup" else None
    if not (isinstance(body, dict) and isinstance(body.get("password"), str)):
        return False
    email = body.get("email") if isinstance(body.get("email"), str) else None
    return bool(passwords.weaknesses(body["password"], email))


def _destination_refused(case):
    # A webhook URL's host must resolve to public addresses only (docs/webhooks.md):
    # a rule of DNS, which the document can only state in words.
    body = case.body if case.path == "/api/v1/webhooks" else None
    if not (isinstance(body, dict) and isinstance(body.get("url"), str)):
        return False
    try:
        destinations.check(body["url"], allow_http=True, allow_private=False)
    except destinations.DestinationRefused:
        return True
    return False


def _excluded_checks(case):
    refused = (
        _window_out_of_order(case.body) or _password_refused(case) or _destination_refused(case)
    )
    return [positive_data_acceptance] if refused else []


@schema.parametrize()
@FUZZING
def test_the_api_keeps_its_openapi_contract(case, app, admin_headers, seeded):
    SENT["requests"] += 1
    TOKEN["admin"] = admin_headers["Authorization"].removeprefix("Bearer ")
    _fresh_idempotency_key(case)
    _reach_real_resources(case, seeded)
    # Checks such as ignored_auth send their own requests through the schema's app.
    case.operation.schema.app = app
    case.call_and_validate(app=app, excluded_checks=_excluded_checks(case))


CANCEL_ORDER = "DELETE /api/v1/orders/{order_id}"
READ_ORDER = "GET /api/v1/orders/{order_id}"


class Workflows(schema.as_state_machine()):
    """Chains of calls, each on a fresh app, each step checked like a single call.

    A DELETE of an order cancels it and the order stays readable (the document says
    so): schemathesis' use-after-free check, which expects a 404 after any DELETE, is
    replaced there by that rule.
    """

    start = None

    def setup(self):
        self.app, self.seeded, TOKEN["admin"] = self.start()
        schema.app = self.app
        self.issued = set()
        self.cancelled = set()

    def get_call_kwargs(self, case):
        return {"app": self.app}

    def before_call(self, case):
        SENT["requests"] += 1
        _fresh_idempotency_key(case)
        # Only generated ids are swapped: whether an id came from the API does not
        # change between runs, its random value does (Hypothesis replays each chain).
        _reach_real_resources(case, self.seeded, self.issued)

    def after_call(self, response, case):
        super().after_call(response, case)
        if "json" in response.headers.get("content-type", [""])[0]:
            self.issued |= _strings(response.json())
        if case.operation.label == CANCEL_ORDER and response.status_code == 200:
            self.cancelled.add(case.path_parameters["order_id"])

    def validate_response(self, response, case, additional_checks=None, **kwargs):
        excluded = _excluded_checks(case)
        if case.operation.label == READ_ORDER:
            excluded.append(use_after_free)
            if case.path_parameters["order_id"] in self.cancelled:
                assert response.status_code != 404, "a cancelled order was removed"
                if response.status_code == 200:
                    assert response.json()["status"] == "cancelled"
        case.validate_response(
            response,
            additional_checks=additional_checks,
            excluded_checks=excluded,
            transport_kwargs=kwargs,
            recorder=self.recorder,
        )


@pytest.mark.timeout(300 + EXAMPLES)  # one test for all the chains: about 0.5 s each
def test_chains_of_calls_keep_the_contract(fresh_start):
    Workflows.start = staticmethod(fresh_start)
    Workflows.run(settings=settings(FUZZING, stateful_step_count=10, phases=[Phase.generate]))


def teardown_module():
    print(f"\nschemathesis: {SENT['requests']} generated requests")


# -- the edges: bodies drawn past what the document describes -------------------------

# name -> (path, who calls it, the reference body, the fields to draw values for)
BODIES = {
    "signup": (
        "/api/v1/auth/signup",
        None,
        {"email": "fuzz@example.com", "password": "long enough pw", "name": "Fuzz"},
        ["password", "name"],
    ),
    "login": (
        "/api/v1/auth/login",
        None,
        {"email": "fuzz@example.com", "password": "long enough pw"},
        ["password"],
    ),
    "refresh": ("/api/v1/auth/refresh", None, {"refresh_token": "a.b.c"}, ["refresh_token"]),
    "create_product": (
        "/api/v1/products",
        "admin",
        {"name": "Drop", "price": "10.00", "stock": 5},
        ["name", "description", "price", "stock", "per_user_limit", "starts_at", "ends_at"],
    ),
    "reserve": ("/api/v1/sales/reserve/{pid}", "user", {"quantity": 1}, ["quantity"]),
    "restock": ("/api/v1/sales/restock/{pid}", "admin", {"quantity": 5}, ["quantity"]),
    "place_order": ("/api/v1/orders", "user", {"reservation_id": "{rid}"}, ["reservation_id"]),
}
JSON_TYPES = ["application/json", "application/json; charset=utf-8", "application/merge-patch+json"]
OTHER_TYPES = [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"]

# Numbers as JSON text: past a float (1e999 reads as inf), past Python's 4300-digit
# int parsing limit, signs, exponents, and the NaN/Infinity that Python's parser takes.
NUMBERS = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.integers(min_value=300, max_value=5000).map(lambda digits: "9" * digits),
    st.from_regex(r"-?[0-9]\.[0-9]{1,20}[eE][+-]?[0-9]{1,6}", fullmatch=True),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "0.0", "1.0", "100.000001"]),
)
OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Moments anywhere in the calendar with any offset: near its ends, the UTC instant
# falls outside it. And some that are not moments at all.
MOMENTS = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=OFFSETS
    ).map(datetime.isoformat),
    st.sampled_from(
        [
            "9999-12-31T23:59:59.999999-23:59",
            "0001-01-01T00:00:00+23:59",
            "2030-01-01T00:00:00+24:00",
            "2030-02-30T00:00:00Z",
            "2030-01-01T00:00:00",
            "+10000-01-01T00:00:00Z",
        ]
    ),
).map(json.dumps)
# Any code point, control characters and lone surrogates included.
TEXT = st.text(st.characters(exclude_categories=()), max_size=30).map(json.dumps)
DEEP = st.integers(min_value=1, max_value=30_000).map(lambda depth: "[" * depth + "]" * depth)
VALUES = st.one_of(NUMBERS, MOMENTS, TEXT, DEEP, st.sampled_from(["null", "true", "{}", "[]"]))


@st.composite
def edge_bodies(draw, endpoint):
    """(JSON text, content type, transfer): the reference body, some fields drawn."""
    _, _, reference, fields = BODIES[endpoint]
    drawn = draw(st.dictionaries(st.sampled_from(fields), VALUES, min_size=1))
    members = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in reference.items() if k not in drawn]
    members += [f"{json.dumps(k)}: {raw}" for k, raw in drawn.items()]
    body = "{" + ", ".join(members) + "}"
    content_type = draw(st.sampled_from(JSON_TYPES) | st.sampled_from(OTHER_TYPES))
    return body, content_type, draw(st.sampled_from(["sized", "chunked"]))


def _stores(mongo_db, redis_client):
    counts = {name: mongo_db[name].count_documents({}) for name in ("users", "products", "orders")}
    return counts, redis_state(redis_client)


@pytest.fixture
def drop(client, make_product, user_headers, admin_headers):
    product = make_product(live=True, stock=100_000, per_user_limit=1000)
    reserve = f"/api/v1/sales/reserve/{product['id']}"
    return {
        "pid": product["id"],
        "rid": client.post(reserve, json={}, headers=user_headers).json["id"],
        "headers": {None: {}, "user": user_headers, "admin": admin_headers},
    }


@pytest.mark.parametrize("endpoint", list(BODIES))
def test_bodies_at_the_edges_are_refused_in_the_problem_shape_or_stored_whole(
    endpoint, client, drop, mongo_db, redis_client
):
    path, caller, _, _ = BODIES[endpoint]
    path = path.format(pid=drop["pid"])

    @FUZZING
    @given(case=edge_bodies(endpoint))
    def check(case):
        body, content_type, transfer = case
        body = body.replace("{rid}", drop["rid"])
        before = _stores(mongo_db, redis_client)

        response = post(
            client,
            path,
            body,
            transfer=transfer,
            content_type=content_type,
            headers=drop["headers"][caller],
        )

        SENT["requests"] += 1
        assert response.status_code < 500, response.get_data(as_text=True)
        if content_type in OTHER_TYPES:
            assert_problem(response, 415, "unsupported_media_type")
        if response.status_code >= 400:
            assert_problem(response)
            assert _stores(mongo_db, redis_client) == before, "a refused body wrote something"
        elif endpoint == "create_product":
            # What was stored can be served back, from MongoDB and from the cache.
            product = response.json
            for _ in range(2):
                assert client.get(f"/api/v1/products/{product['id']}").json == product

    check()
