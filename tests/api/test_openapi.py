"""The API contract: the committed openapi.json is the app's, and it is complete."""

import json
from pathlib import Path

import pytest

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"
PROBLEM = "application/problem+json"
OPERATIONS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json


def operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in OPERATIONS:
                yield f"{method.upper()} {path}", operation


def resolve(spec, response):
    if "$ref" in response:
        return spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response


def test_the_committed_openapi_json_is_current(spec):
    committed = json.loads(COMMITTED.read_text())
    assert committed == spec, "openapi.json is out of date: run `make openapi` and commit it"


def test_every_operation_has_a_summary_a_success_and_problem_shaped_errors(spec):
    for name, operation in operations(spec):
        assert operation.get("summary"), name
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), name
        assert "default" in responses, name
        for code, response in responses.items():
            response = resolve(spec, response)
            if code == "default" or code.startswith(("4", "5")):
                content = response["content"]
                assert list(content) == [PROBLEM], (name, code)
                assert content[PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}


def test_error_codes_come_with_examples_in_the_problem_shape(spec):
    reserve = spec["paths"]["/api/v1/sales/reserve/{product_id}"]["post"]["responses"]
    examples = reserve["409"]["content"][PROBLEM]["examples"]
    assert {"sold_out", "insufficient_stock", "limit_exceeded", "sale_not_started"} <= set(examples)
    sold_out = examples["sold_out"]["value"]
    assert sold_out["type"] == "urn:flashcart:problem:sold_out"
    assert sold_out["status"] == 409
    assert "Retry-After" in reserve["503"]["headers"]
    assert "`busy`" in reserve["503"]["description"]


def test_secured_operations_declare_bearer_auth_and_document_401(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    secured = 0
    for name, operation in operations(spec):
        if operation.get("security"):
            secured += 1
            assert operation["security"] == [{"bearerAuth": []}], name
            examples = operation["responses"]["401"]["content"][PROBLEM]["examples"]
            assert {"token_missing", "token_invalid", "token_expired", "token_revoked"} == set(
                examples
            ), name
    assert secured >= 10


def test_admin_operations_document_403_admin_only(spec):
    admin_only = [
        ("post", "/api/v1/products"),
        ("post", "/api/v1/sales/start/{product_id}"),
        ("post", "/api/v1/sales/end/{product_id}"),
        ("post", "/api/v1/sales/restock/{product_id}"),
        ("get", "/api/v1/sales/audit/{product_id}"),
    ]
    for method, path in admin_only:
        responses = spec["paths"][path][method]["responses"]
        assert "admin_only" in responses["403"]["content"][PROBLEM]["examples"], path
    assert "403" not in spec["paths"]["/api/v1/orders"]["get"]["responses"]


def test_operations_with_input_document_422_with_field_errors(spec):
    for name, operation in operations(spec):
        if "requestBody" in operation or any(
            p.get("in") == "query" for p in operation.get("parameters", []) if "in" in p
        ):
            response = resolve(spec, operation["responses"]["422"])
            media = response["content"][PROBLEM]
            example = media.get("example") or media["examples"]["validation_error"]["value"]
            assert example["code"] == "validation_error", name
            assert example["errors"], name


def test_rate_limited_operations_document_429_with_retry_after(spec):
    for path in ("/api/v1/auth/login", "/api/v1/auth/signup", "/api/v1/sales/reserve/{product_id}"):
        response = spec["paths"][path]["post"]["responses"]["429"]
        assert "Retry-After" in response["headers"], path


def test_prices_are_documented_as_they_travel(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["ProductOut"]["properties"]["price"]["type"] == "string"
    assert schemas["OrderOut"]["properties"]["total"]["type"] == "string"
    price_in = schemas["ProductIn"]["properties"]["price"]
    assert {branch["type"] for branch in price_in["anyOf"]} == {"string", "number"}


def test_cacheable_pages_document_etag_and_304(spec):
    for path in ("/api/v1/products", "/api/v1/products/{product_id}"):
        operation = spec["paths"][path]["get"]
        assert "304" in operation["responses"]
        assert {"ETag", "Cache-Control"} <= set(operation["responses"]["200"]["headers"])
        assert {"$ref": "#/components/parameters/IF_NONE_MATCH"} in operation["parameters"]


def test_operations_with_a_body_document_what_any_body_may_be_refused_for(spec):
    with_body = [(name, op) for name, op in operations(spec) if "requestBody" in op]
    assert len(with_body) >= 9
    for name, operation in with_body:
        for status, code in (
            ("400", "bad_request"),
            ("413", "payload_too_large"),
            ("415", "unsupported_media_type"),
        ):
            examples = operation["responses"][status]["content"][PROBLEM]["examples"]
            assert examples[code]["value"]["status"] == int(status), name


def test_cancelling_an_order_is_documented_as_keeping_it_readable(spec):
    # Clients and fuzzers must not expect a 404 after this DELETE.
    cancel = spec["paths"]["/api/v1/orders/{order_id}"]["delete"]
    assert "not removed" in cancel["description"]
    assert "answers 200 with status `cancelled`" in cancel["description"]
    assert "`cancelled`" in cancel["responses"]["200"]["description"]
