"""The catalogue: creation, paging, the read-through cache and trending views."""

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import redis
from bson import ObjectId
from werkzeug.http import generate_etag

from flashcart import local_cache
from flashcart.products import routes as product_routes
from flashcart.products import service as product_service
from tests.support.http import assert_problem

PRODUCTS = "/api/v1/products"
TRENDING = "/api/v1/products/trending"
TRENDING_KEY = "fc:trending"


def cache_key(product_id):
    return f"fc:{{p:{product_id}}}:cache"


# -- create --------------------------------------------------------------------


def test_admin_creates_a_draft_product_with_the_price_stored_in_integer_cents(
    client, admin, admin_headers, mongo_db
):
    body = {
        "name": "Aurora Sneaker",
        "description": "200 pairs",
        "price": "19.99",
        "stock": 200,
        "per_user_limit": 2,
    }

    response = client.post(PRODUCTS, json=body, headers=admin_headers)

    assert response.status_code == 201
    product = response.json
    assert product["price"] == "19.99"
    assert product["name"] == "Aurora Sneaker"
    assert product["stock"] == 200
    assert product["per_user_limit"] == 2
    assert product["sale_status"] == "draft"
    stored = mongo_db.products.find_one({"_id": ObjectId(product["id"])})
    assert stored["price_cents"] == 1999
    assert isinstance(stored["price_cents"], int)
    assert "price" not in stored
    assert stored["stock"] == 200
    assert stored["sale_status"] == "draft"
    assert stored["created_by"] == admin["id"]


PRICES = [  # (sent, stored cents, shown)
    ("0.01", 1, "0.01"),
    (1.15, 115, "1.15"),  # a float that is 114.999... cents in binary
    (0.29, 29, "0.29"),
    ("19.9", 1990, "19.90"),
    (7, 700, "7.00"),
    ("1000000", 100_000_000, "1000000.00"),
]


def test_prices_become_exact_integer_cents(client, admin_headers, mongo_db):
    for index, (price, cents, shown) in enumerate(PRICES):
        name = f"P{index}"
        response = client.post(
            PRODUCTS, json={"name": name, "price": price, "stock": 1}, headers=admin_headers
        )

        assert response.status_code == 201, (price, response.json)
        assert response.json["price"] == shown, price
        assert mongo_db.products.find_one({"name": name})["price_cents"] == cents, price


def test_per_user_limit_defaults_to_one(client, admin_headers, mongo_db):
    response = client.post(
        PRODUCTS, json={"name": "P", "price": "5.00", "stock": 3}, headers=admin_headers
    )

    assert response.status_code == 201
    assert response.json["per_user_limit"] == 1
    assert mongo_db.products.find_one()["per_user_limit"] == 1


def test_invalid_prices_are_refused_and_nothing_is_stored(client, admin_headers, mongo_db):
    for price in ["19.999", "0", "-1.00", "1000000.01", "NaN", "Infinity", "-0.01"]:
        response = client.post(
            PRODUCTS, json={"name": "P", "price": price, "stock": 1}, headers=admin_headers
        )

        body = assert_problem(response, 422, "validation_error")
        assert "price" in body["errors"], price

    assert mongo_db.products.count_documents({}) == 0


# -- list ----------------------------------------------------------------------


def test_list_is_paginated_newest_first_with_the_total(client, make_product):
    for index in range(5):
        make_product(name=f"P{index}")

    pages = [
        client.get(PRODUCTS, query_string={"page": page, "per_page": 2}).json for page in (1, 2, 3)
    ]

    assert [[item["name"] for item in page["items"]] for page in pages] == [
        ["P4", "P3"],
        ["P2", "P1"],
        ["P0"],
    ]
    assert all(page["total"] == 5 and page["per_page"] == 2 for page in pages)
    assert [page["page"] for page in pages] == [1, 2, 3]
    assert pages[0]["items"][0]["price"] == "10.00"


def test_list_defaults_to_page_one_of_twenty(client, make_product):
    make_product()

    response = client.get(PRODUCTS)

    assert response.status_code == 200
    assert response.json["page"] == 1
    assert response.json["per_page"] == 20
    assert response.json["total"] == 1


def test_a_page_past_the_end_is_empty_but_keeps_the_total(client, make_product):
    make_product()
    make_product()

    response = client.get(PRODUCTS, query_string={"page": 3, "per_page": 1})

    assert response.status_code == 200
    assert response.json["items"] == []
    assert response.json["total"] == 2


BAD_PAGING = [
    {"page": 0},
    {"page": -1},
    {"page": 10_001},
    {"page": "abc"},
    {"per_page": 0},
    {"per_page": 101},
    {"per_page": "1.5"},
    {"page": "1e3"},
]


def test_paging_out_of_bounds_gets_422(client):
    for query in BAD_PAGING:
        response = client.get(PRODUCTS, query_string=query)

        body = assert_problem(response, 422, "validation_error")
        assert set(body["errors"]) == set(query), query


def test_per_page_at_its_maximum_is_accepted(client, make_product):
    make_product()

    response = client.get(PRODUCTS, query_string={"per_page": 100})

    assert response.status_code == 200
    assert response.json["per_page"] == 100


# -- get by id and the cache -----------------------------------------------------


def without_created_at(product):
    return {key: value for key, value in product.items() if key != "created_at"}


def test_created_at_in_the_create_response_matches_later_reads(client, make_product):
    # MongoDB keeps milliseconds; the 201 answer must not promise more precision
    # than every later read of the same product gives back.
    product = make_product()

    fetched = client.get(f"{PRODUCTS}/{product['id']}").json
    listed = client.get(PRODUCTS).json["items"][0]

    assert fetched["created_at"] == product["created_at"]
    assert listed["created_at"] == product["created_at"]


def test_first_read_fills_the_cache_with_an_expiry(client, make_product, redis_client):
    product = make_product(name="Cached", price="19.99")
    assert not redis_client.exists(cache_key(product["id"]))

    response = client.get(f"{PRODUCTS}/{product['id']}")

    assert response.status_code == 200
    assert without_created_at(response.json) == without_created_at(product)
    assert redis_client.exists(cache_key(product["id"]))
    assert 0 < redis_client.ttl(cache_key(product["id"])) <= 60


@pytest.fixture
def short_product_reads(app_config):
    """A worker keeps its product reads 0.3 s (must be requested before `app` is built)."""
    app_config["PRODUCT_READ_MAX_AGE"] = 0.3


def _changed_behind_the_apps_back(mongo_db, product):
    mongo_db.products.update_one(
        {"_id": ObjectId(product["id"])}, {"$set": {"name": "After", "price_cents": 1}}
    )


def test_second_read_is_answered_from_the_cache_not_mongo(
    short_product_reads, client, make_product, mongo_db, redis_client
):
    product = make_product(name="Before", price="19.99")
    first = client.get(f"{PRODUCTS}/{product['id']}")
    _changed_behind_the_apps_back(mongo_db, product)
    time.sleep(0.35)  # past the worker's own read: Redis answers

    second = client.get(f"{PRODUCTS}/{product['id']}")

    assert second.status_code == 200
    assert second.json == first.json
    assert second.json["name"] == "Before"
    assert second.json["price"] == "19.99"
    # Once the cache entry is gone (and the worker's read is old), MongoDB answers.
    redis_client.delete(cache_key(product["id"]))
    time.sleep(0.35)
    third = client.get(f"{PRODUCTS}/{product['id']}")
    assert third.json["name"] == "After"
    assert third.json["price"] == "0.01"


def _counting_renders(monkeypatch):
    """The product pages rendered from here on, one entry each."""
    renders, dump = [], product_routes.PRODUCT_PAGE.dump
    monkeypatch.setattr(
        product_routes.PRODUCT_PAGE, "dump", lambda product: renders.append(1) or dump(product)
    )
    return renders


def _page(client, product):
    """(name, ETag) of a product page, its ETag checked against the body it came with."""
    response = client.get(f"{PRODUCTS}/{product['id']}")
    assert response.status_code == 200
    assert response.headers["ETag"] == f'"{generate_etag(response.data)}"'
    return response.json["name"], response.headers["ETag"]


@pytest.mark.parametrize(("max_age", "kept"), [(1, True), (0, False)])
def test_a_worker_answers_from_its_own_read_until_it_is_older_than_the_max_age(
    app_config, request, mongo_db, redis_client, monkeypatch, max_age, kept
):
    now = 1000.0
    monkeypatch.setattr(local_cache, "time", SimpleNamespace(monotonic=lambda: now))
    app_config["PRODUCT_READ_MAX_AGE"] = max_age  # before the app is built
    client = request.getfixturevalue("client")
    product = request.getfixturevalue("make_product")(name="Before")
    renders = _counting_renders(monkeypatch)
    first = _page(client, product)
    assert first[0] == "Before"
    # Another worker's change: the shared cache dropped, MongoDB changed.
    _changed_behind_the_apps_back(mongo_db, product)
    redis_client.delete(cache_key(product["id"]))

    now += 0.5
    second = _page(client, product)
    assert (second == first) is kept
    assert second[0] == ("Before" if kept else "After")
    assert len(renders) == (1 if kept else 2)  # the worker's read rendered once
    now += 0.5  # a second after the first read
    third = _page(client, product)
    assert third[0] == "After" and third[1] != first[1]


def test_a_page_rendered_once_still_shows_its_sale_status_as_of_now(
    app_config, request, monkeypatch
):
    app_config["PRODUCT_READ_MAX_AGE"] = 60  # the worker's read outlives the sale
    client = request.getfixturevalue("client")
    ends_at = datetime.now(UTC) + timedelta(minutes=5)
    product = request.getfixturevalue("make_product")(live=True, ends_at=ends_at.isoformat())
    live = client.get(f"{PRODUCTS}/{product['id']}")
    assert live.json["sale_status"] == "live"

    monkeypatch.setattr(product_service, "utcnow", lambda: ends_at + timedelta(seconds=1))
    renders = _counting_renders(monkeypatch)
    ended = [client.get(f"{PRODUCTS}/{product['id']}") for _ in range(5)]

    assert {page.json["sale_status"] for page in ended} == {"ended"}
    assert {page.headers["ETag"] for page in ended} == {f'"{generate_etag(ended[0].data)}"'}
    assert ended[0].headers["ETag"] != live.headers["ETag"]
    assert len(renders) == 1  # the late clicks after a drop share one page


def test_starting_the_sale_invalidates_the_cached_product(client, make_product, admin_headers):
    product = make_product()
    assert client.get(f"{PRODUCTS}/{product['id']}").json["sale_status"] == "draft"

    started = client.post(f"/api/v1/sales/start/{product['id']}", headers=admin_headers)
    assert started.status_code == 200
    after = client.get(f"{PRODUCTS}/{product['id']}")

    assert after.json["sale_status"] == "live"


def test_each_read_counts_a_view_in_the_trending_sorted_set(client, make_product, redis_client):
    product = make_product()

    for _ in range(3):
        assert client.get(f"{PRODUCTS}/{product['id']}").status_code == 200

    assert redis_client.zscore(TRENDING_KEY, product["id"]) == 3


def test_trending_returns_the_top_three_by_views_most_viewed_first(client, make_product):
    views = {"one": 1, "four": 4, "two": 2, "three": 3}
    ids = {}
    for name, count in views.items():
        ids[name] = make_product(name=name)["id"]
        for _ in range(count):
            client.get(f"{PRODUCTS}/{ids[name]}")

    response = client.get(TRENDING)

    assert response.status_code == 200
    assert [(row["product"]["name"], row["views"]) for row in response.json] == [
        ("four", 4),
        ("three", 3),
        ("two", 2),
    ]
    assert [row["product"]["id"] for row in response.json] == [
        ids["four"],
        ids["three"],
        ids["two"],
    ]
    assert response.json[0]["product"]["price"] == "10.00"


def test_trending_is_empty_without_views(client, make_product):
    make_product()

    response = client.get(TRENDING)

    assert response.status_code == 200
    assert response.json == []


def test_an_unknown_product_id_is_404_and_leaves_trending_untouched(
    client, make_product, redis_client
):
    known = make_product()
    client.get(f"{PRODUCTS}/{known['id']}")
    unknown = str(ObjectId())

    response = client.get(f"{PRODUCTS}/{unknown}")

    assert_problem(response, 404, "product_not_found")
    assert redis_client.zscore(TRENDING_KEY, unknown) is None
    assert redis_client.zrange(TRENDING_KEY, 0, -1) == [known["id"]]
    assert not redis_client.exists(cache_key(unknown))
    assert [row["product"]["id"] for row in client.get(TRENDING).json] == [known["id"]]


@pytest.fixture
def worker_copies(app_config):
    """Workers keep view counts for a minute (before `app`)."""
    app_config["VIEW_FLUSH_SECONDS"] = 60


def test_a_worker_adds_its_views_to_trending_in_one_write_per_product(
    worker_copies, client, make_product, redis_client
):
    product = make_product()
    for _ in range(4):
        assert client.get(f"{PRODUCTS}/{product['id']}").status_code == 200
    assert redis_client.zscore(TRENDING_KEY, product["id"]) is None  # not yet added

    trending = client.get(TRENDING).json  # adds this worker's views first

    assert [(row["product"]["id"], row["views"]) for row in trending] == [(product["id"], 4)]
    assert redis_client.zscore(TRENDING_KEY, product["id"]) == 4


def test_views_redis_did_not_take_are_kept_for_the_next_try(
    worker_copies, app, client, make_product, redis_client, monkeypatch
):
    from flashcart.products import view_counts

    product = make_product()
    for _ in range(2):
        client.get(f"{PRODUCTS}/{product['id']}")

    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("Redis is restarting")

    monkeypatch.setattr(redis_client, "pipeline", unreachable)
    with app.app_context():
        view_counts.flush()  # logs a warning, the page answers anyway
    monkeypatch.undo()
    assert redis_client.zscore(TRENDING_KEY, product["id"]) is None

    assert client.get(TRENDING).json[0]["views"] == 2


MALFORMED_IDS = ["abc", "0" * 23, "0" * 25, "g" * 24, "6b0819c5f9a3416a6362d779x", "%24gt", "null"]


def test_malformed_product_ids_are_404_and_leave_no_redis_trace(client, redis_client):
    for product_id in MALFORMED_IDS:
        response = client.get(f"{PRODUCTS}/{product_id}")

        assert_problem(response, 404, "product_not_found")

    assert not redis_client.exists(TRENDING_KEY)
    assert redis_client.keys("*") == []
