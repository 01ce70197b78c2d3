"""Schemathesis fuzzes the API in-process from its own OpenAPI document.

Every operation gets generated requests, valid and invalid, with an admin's token
where the document asks for one; no answer may be a 5xx, every answer must match
what the document promises (status, content type, headers, body schema), and
invalid input must be refused.
FUZZ_EXAMPLES sets the budget per operation: small in `make test`, bigger in
`make fuzz` (which also draws new random inputs each run).
"""

import os
import re
import uuid
import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from config import TestingConfig
from flashcart import create_app
from flashcart.auth import passwords
from flashcart.idempotency import KEY_PATTERN
from flashcart.orders.schemas import RESERVATION_ID

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"
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


@pytest.fixture
def seeded(client, make_product, admin_headers):
    """A product on sale and a placed order, for generated ids to be swapped with."""
    product = make_product(live=True, stock=100_000, per_user_limit=1000)
    reserve = f"/api/v1/sales/reserve/{product['id']}"

    def reservation():
        return client.post(reserve, json={}, headers=admin_headers).json["id"]

    order = client.post(
        "/api/v1/orders", json={"reservation_id": reservation()}, headers=admin_headers
    )
    return {"product_id": product["id"], "order_id": order.json["id"], "reservation": reservation}


def _half(value):
    return zlib.crc32(repr(value).encode()) % 2 == 0


def _reach_real_resources(case, seeded):
    # Random ids only ever find nothing; for about half of the valid ones use ids
    # that exist, so generated bodies reach the sale, checkout and cancel rules.
    # Any non-empty string is a valid id, so a swapped case stays valid.
    for name in ("product_id", "order_id"):
        value = (case.path_parameters or {}).get(name)
        if isinstance(value, str) and value and _half(value):
            case.path_parameters[name] = seeded[name]
    body = case.body
    reservation_id = body.get("reservation_id") if isinstance(body, dict) else None
    valid = isinstance(reservation_id, str) and re.fullmatch(RESERVATION_ID, reservation_id)
    if valid and _half(body):
        body["reservation_id"] = seeded["reservation"]()


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


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_openapi_contract(case, app, admin_headers, seeded):
    SENT["requests"] += 1
    TOKEN["admin"] = admin_headers["Authorization"].removeprefix("Bearer ")
    _fresh_idempotency_key(case)
    _reach_real_resources(case, seeded)
    # Checks such as ignored_auth send their own requests through the schema's app.
    case.operation.schema.app = app
    refused = _window_out_of_order(case.body) or _password_refused(case)
    excluded = [positive_data_acceptance] if refused else []
    case.call_and_validate(app=app, excluded_checks=excluded)


def teardown_module():
    print(f"\nschemathesis: {SENT['requests']} generated requests")
