"""Redis or MongoDB down, hung or restarted: the API fails fast with a 503 and recovers.

The apps here build their own Redis client from REDIS_URL (redis_client=None), as in
production. Tests that stop or restart the session's redis-server start it again in a
`finally`, so the rest of the suite keeps its server.
"""

import socket
import time

import pymongo.errors
import pytest

from flashcart import create_app
from flashcart.checkout import recovery
from tests.support.app import app_settings
from tests.support.ports import free_port

FAST = 3.0  # seconds: "fails fast" means well under a client's patience


@pytest.fixture
def real_redis_server(redis_server):
    if redis_server is None:
        pytest.skip("no redis-server binary: these tests stop and restart a real server")
    yield redis_server
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # whatever the test did, leave the session's server running


def build_app(mongo_db, redis_url, **overrides):
    # STOCK_READ_MAX_AGE=0: each stock read asks Redis (what these tests are about),
    # never the 0.1 s-old figure an earlier read in this process may have left.
    config = app_settings() | {
        "REDIS_URL": redis_url,
        "REDIS_TIMEOUT_SECONDS": 0.5,
        "STOCK_READ_MAX_AGE": 0,
    }
    config |= overrides
    return create_app(config, db=mongo_db)


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_unavailable(response, elapsed, code, label=""):
    assert response.status_code == 503, (label, response.get_data(as_text=True))
    assert response.content_type == "application/problem+json", label
    assert response.json["code"] == code, label
    assert int(response.headers["Retry-After"]) > 0, label
    assert elapsed < FAST, f"{label}: took {elapsed:.2f}s to say {code}"


@pytest.fixture
def live_product(make_product):
    return make_product(live=True, stock=10, per_user_limit=2)["id"]


def shopper_requests(client, product_id, headers):
    """The calls a shopper makes during a drop, each as a zero-argument callable."""
    return {
        "stock": lambda: client.get(f"/api/v1/sales/stock/{product_id}"),
        "reserve": lambda: client.post(
            f"/api/v1/sales/reserve/{product_id}", json={}, headers=headers
        ),
        "product": lambda: client.get(f"/api/v1/products/{product_id}"),
        "readyz": lambda: client.get("/readyz"),
    }


def test_redis_down_answers_503_redis_unavailable_with_retry_after_fast(
    mongo_db, live_product, user_headers
):
    closed_port = free_port()  # nothing listens there
    app = build_app(mongo_db, f"redis://127.0.0.1:{closed_port}/0")
    client = app.test_client()

    for name, call in shopper_requests(client, live_product, user_headers).items():
        response, elapsed = timed(call)
        assert_unavailable(response, elapsed, "redis_unavailable", name)
    assert client.get("/healthz").status_code == 200  # liveness needs no dependency


@pytest.fixture
def hung_redis():
    """A port that accepts TCP connections (kernel backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def test_a_hung_redis_times_out_into_503_instead_of_hanging_the_request(
    mongo_db, live_product, user_headers, hung_redis
):
    app = build_app(mongo_db, hung_redis)
    client = app.test_client()

    for name in ("stock", "reserve"):
        response, elapsed = timed(shopper_requests(client, live_product, user_headers)[name])
        assert_unavailable(response, elapsed, "redis_unavailable", name)


def test_after_a_redis_restart_the_same_app_answers_on_its_next_request(
    mongo_db, live_product, user_headers, real_redis_server
):
    app = build_app(mongo_db, real_redis_server.url)
    client = app.test_client()
    requests = shopper_requests(client, live_product, user_headers)
    before = requests["stock"]()
    assert before.status_code == 200 and before.json["available"] == 10  # pool is warm

    real_redis_server.restart()  # the sale's keys are gone (no persistence)

    # The live sale is "retry shortly" until the sweeper rebuilds it, not "not started".
    response, elapsed = timed(requests["stock"])
    assert_unavailable(response, elapsed, "service_unavailable", "stock")
    response, elapsed = timed(requests["reserve"])
    assert_unavailable(response, elapsed, "service_unavailable", "reserve")
    assert requests["readyz"]().status_code == 200
    with app.app_context():
        assert recovery.sweep()["sales_rebuilt"] == 1
    assert requests["stock"]().json["available"] == 10
    assert requests["reserve"]().status_code == 201


def test_redis_stopped_then_started_turns_503s_back_into_answers(
    mongo_db, live_product, user_headers, real_redis_server
):
    app = build_app(mongo_db, real_redis_server.url)
    requests = shopper_requests(app.test_client(), live_product, user_headers)
    assert requests["stock"]().status_code == 200

    real_redis_server.stop()
    try:
        response, elapsed = timed(requests["stock"])
        assert_unavailable(response, elapsed, "redis_unavailable")
        response, elapsed = timed(requests["readyz"])
        assert_unavailable(response, elapsed, "redis_unavailable")
    finally:
        real_redis_server.start()

    response, elapsed = timed(requests["stock"])
    assert_unavailable(response, elapsed, "service_unavailable", "stock after the restart")
    assert requests["readyz"]().status_code == 200


class _Down:
    """A MongoDB database (and its collections) whose every call fails to find a server."""

    def __getattr__(self, name):
        return self

    def __getitem__(self, name):
        return self

    def __call__(self, *args, **kwargs):
        raise pymongo.errors.ServerSelectionTimeoutError("127.0.0.1:27017: connection refused")


@pytest.fixture
def mongo_down_client(redis_client, redis_server):
    url = redis_server.url if redis_server else "memory://"
    app = create_app(app_settings() | {"REDIS_URL": url}, db=_Down(), redis_client=redis_client)
    return app.test_client()


def test_mongodb_down_answers_503_database_unavailable(
    mongo_down_client, client, live_product, user_headers
):
    reserved = client.post(f"/api/v1/sales/reserve/{live_product}", json={}, headers=user_headers)
    assert reserved.status_code == 201  # made while MongoDB was still up
    reservation_id = reserved.json["id"]
    client = mongo_down_client
    calls = {
        "products": lambda: client.get("/api/v1/products"),
        "login": lambda: client.post(
            "/api/v1/auth/login", json={"email": "a@example.com", "password": "x" * 12}
        ),
        "checkout": lambda: client.post(
            "/api/v1/orders", json={"reservation_id": reservation_id}, headers=user_headers
        ),
        "readyz": lambda: client.get("/readyz"),
    }
    for name, call in calls.items():
        response, elapsed = timed(call)
        assert_unavailable(response, elapsed, "database_unavailable", name)


def test_reservations_keep_working_while_mongodb_is_down(
    mongo_down_client, live_product, user_headers
):
    """Reserving touches only Redis, so a MongoDB outage does not stop the drop."""
    reserved = mongo_down_client.post(
        f"/api/v1/sales/reserve/{live_product}", json={}, headers=user_headers
    )
    assert reserved.status_code == 201, reserved.get_data(as_text=True)
    stock = mongo_down_client.get(f"/api/v1/sales/stock/{live_product}")
    assert (stock.status_code, stock.json["available"]) == (200, 9)


def test_an_unreachable_mongodb_server_answers_503_within_its_timeout(redis_client, redis_server):
    url = redis_server.url if redis_server else "memory://"
    config = app_settings() | {
        "REDIS_URL": url,
        "MONGO_URI": f"mongodb://127.0.0.1:{free_port()}/flashcart",
        "MONGO_TIMEOUT_MS": 300,
    }
    client = create_app(config, redis_client=redis_client).test_client()

    response, elapsed = timed(lambda: client.get("/api/v1/products"))
    assert_unavailable(response, elapsed, "database_unavailable")
