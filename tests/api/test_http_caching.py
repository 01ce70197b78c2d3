"""Product pages are cacheable (Cache-Control, ETag, 304); CORS; the request size limit."""

import pytest

from flashcart import create_app
from tests.support.app import app_settings

SHOP = "https://shop.example"


def test_a_product_page_is_cacheable_and_revalidates_with_its_etag(client, make_product):
    product = make_product(name="Cached")
    url = f"/api/v1/products/{product['id']}"

    first = client.get(url)
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "public, max-age=5"
    etag = first.headers["ETag"]
    assert etag.startswith('"')

    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == "public, max-age=5"

    stale = client.get(url, headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200
    assert stale.json["name"] == "Cached"


def test_the_product_list_has_an_etag_that_changes_with_the_catalogue(client, make_product):
    make_product(name="One")
    first = client.get("/api/v1/products")
    assert (
        client.get("/api/v1/products", headers={"If-None-Match": first.headers["ETag"]}).status_code
        == 304
    )

    make_product(name="Two")
    changed = client.get("/api/v1/products", headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != first.headers["ETag"]


def test_the_cache_lifetime_is_configurable(app, client, make_product):
    app.config["PRODUCT_HTTP_MAX_AGE"] = 30
    assert client.get("/api/v1/products").headers["Cache-Control"] == "public, max-age=30"


def test_errors_and_private_answers_are_not_marked_cacheable(client, user_headers):
    missing = client.get("/api/v1/products/ffffffffffffffffffffffff")
    assert missing.status_code == 404
    assert "ETag" not in missing.headers and "Cache-Control" not in missing.headers
    mine = client.get("/api/v1/orders", headers=user_headers)
    assert "public" not in mine.headers.get("Cache-Control", "")


# -- CORS ------------------------------------------------------------------------


@pytest.fixture
def cors_client(mongo_db, redis_client, app_config):
    config = app_settings() | app_config | {"CORS_ORIGINS": [SHOP, "https://m.shop.example"]}
    return create_app(config, db=mongo_db, redis_client=redis_client).test_client()


def test_a_configured_storefront_may_call_the_api_from_a_browser(cors_client):
    response = cors_client.get("/api/v1/products", headers={"Origin": SHOP})
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    exposed = response.headers["Access-Control-Expose-Headers"]
    for header in ("ETag", "Retry-After", "X-Request-ID"):
        assert header in exposed


def test_a_preflight_allows_the_authorization_and_idempotency_headers(cors_client):
    response = cors_client.options(
        "/api/v1/sales/reserve/ffffffffffffffffffffffff",
        headers={
            "Origin": SHOP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    for header in ("authorization", "content-type", "idempotency-key"):
        assert header in allowed


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/products/ffffffffffffffffffffffff", 404),
        ("POST", "/api/v1/sales/reserve/ffffffffffffffffffffffff", 401),
        ("GET", "/api/v1/products?page=0", 422),
        ("GET", "/api/v1/nowhere", 404),
    ],
)
def test_a_storefront_may_read_error_answers_too(cors_client, method, path, status):
    response = cors_client.open(path, method=method, headers={"Origin": SHOP})
    assert response.status_code == status
    assert response.content_type == "application/problem+json"
    assert response.headers.getlist("Access-Control-Allow-Origin") == [SHOP]
    assert response.headers.getlist("Vary") == ["Origin"]


def test_other_origins_get_no_cors_headers(cors_client, client):
    foreign = cors_client.get("/api/v1/products", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers
    unconfigured = client.get("/api/v1/products", headers={"Origin": SHOP})
    assert "Access-Control-Allow-Origin" not in unconfigured.headers


# -- request size ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/auth/signup", "/api/v1/auth/login", "/api/v1/orders", "/api/v1/products"]
)
def test_a_body_over_64_kib_is_a_413_problem(client, admin_headers, path):
    body = b'{"name": "' + b"x" * (64 * 1024) + b'"}'
    response = client.post(path, data=body, content_type="application/json", headers=admin_headers)
    assert response.status_code == 413
    assert response.content_type == "application/problem+json"
    assert response.json["code"] == "payload_too_large"
    assert response.json["status"] == 413


def test_a_body_just_under_the_limit_is_read(client):
    body = b'{"email": "' + b"x" * (60 * 1024) + b'@example.com", "password": "p"}'
    response = client.post("/api/v1/auth/login", data=body, content_type="application/json")
    assert response.status_code == 422
