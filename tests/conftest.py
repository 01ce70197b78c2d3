"""Fixtures: a real redis-server started by the suite, MongoDB, the app and its users.

Redis tests run against a real `redis-server` on a free loopback port (started once
per session, flushed before each test). Only where no binary exists do they fall
back to fakeredis, and they say so.

MongoDB is mongomock, unless MONGO_TEST_URI names a MongoDB server: then every test
that touches MongoDB gets a fresh database there (dropped after), opened by the
app's own `connect_mongo`. Tests that need several processes to share MongoDB use
that server too, or else a wire-protocol stand-in (tests/support/mongo_standin.py).

Helpers that tests import live in tests/support/; this file holds only fixtures.
"""

import os
import shutil
import warnings

import mongomock
import pytest
import redis

from config import TestingConfig
from flashcart import create_app
from flashcart.auth import service as accounts
from flashcart.stores import connect_mongo
from tests.support import cluster_servers
from tests.support.app import PASSWORD, app_settings
from tests.support.mongo import MONGO_TEST_URI, fresh_database_uri
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    if not shutil.which("redis-server"):
        warnings.warn("no redis-server binary: falling back to fakeredis", stacklevel=1)
        yield None
        return
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster():
    """A local Redis Cluster (3 masters, 3 replicas), started once by the first test
    that asks for it (tests/support/cluster_servers.py)."""
    if not cluster_servers.available():
        pytest.skip("no redis-server/redis-cli binaries: Redis Cluster tests need them")
    cluster = cluster_servers.ClusterServers().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["single", "cluster"])
def real_redis_url(request):
    """A real, flushed Redis: a test using this runs on one redis-server and again on
    the Redis Cluster (REDIS_URL=redis+cluster://...)."""
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return cluster.url
    server = request.getfixturevalue("redis_server")
    if server is None:
        pytest.skip("no redis-server binary: this test needs a real Redis")
    flush = redis.Redis.from_url(server.url)
    flush.flushdb()
    flush.close()
    return server.url


@pytest.fixture
def redis_client(redis_server):
    if redis_server is None:
        import fakeredis

        client = fakeredis.FakeRedis(decode_responses=True)
    else:
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def mongo_db():
    """The test's database: mongomock, or a fresh one on MONGO_TEST_URI's server."""
    if not MONGO_TEST_URI:
        yield mongomock.MongoClient().flashcart
        return
    db = connect_mongo(fresh_database_uri(), TestingConfig.MONGO_TIMEOUT_MS)
    try:
        yield db
    finally:
        db.client.drop_database(db.name)
        db.client.close()


@pytest.fixture
def app_config(redis_server):
    """Overrides on TestingConfig; a test may change them before `app` is built."""
    return {"REDIS_URL": redis_server.url if redis_server else "memory://"}


@pytest.fixture
def short_holds(app_config):
    """Holds expire after one second (must be requested before `app` is built)."""
    app_config["HOLD_SECONDS"] = 1


@pytest.fixture
def app(app_config, mongo_db, redis_client):
    return create_app({**app_settings(), **app_config}, db=mongo_db, redis_client=redis_client)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def make_user(app):
    """make_user(role="user", email=None) -> the public user dict."""
    counter = iter(range(1, 1_000_000))

    def make(role="user", email=None):
        email = email or f"{role}{next(counter)}-{os.urandom(3).hex()}@example.com"
        with app.app_context():
            return accounts.register(email=email, password=PASSWORD, name=role.title(), role=role)

    return make


@pytest.fixture
def headers_for(app):
    """headers_for(user) -> an Authorization header with a fresh access token."""

    def headers(user):
        with app.app_context():
            token = accounts.issue_token(user)["access_token"]
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture
def user(make_user):
    return make_user()


@pytest.fixture
def admin(make_user):
    return make_user("admin")


@pytest.fixture
def user_headers(user, headers_for):
    return headers_for(user)


@pytest.fixture
def admin_headers(admin, headers_for):
    return headers_for(admin)


@pytest.fixture
def make_product(client, admin_headers):
    """make_product(**fields, live=False) -> the product as the API returned it."""

    def make(live=False, **fields):
        body = {"name": "Drop", "price": "10.00", "stock": 10, "per_user_limit": 2} | fields
        response = client.post("/api/v1/products", json=body, headers=admin_headers)
        assert response.status_code == 201, response.json
        product = response.json
        if live:
            started = client.post(f"/api/v1/sales/start/{product['id']}", headers=admin_headers)
            assert started.status_code == 200, started.json
        return product

    return make


@pytest.fixture
def sale_state(redis_client):
    """sale_state(product_id) -> what Redis holds for the sale, read through the engine.

    A dict: status, available, held, sold, limit, and users ({user id: units held
    or bought}, the per-user limit counts). Tests assert on this rather than on the
    key layout, which the engine owns.
    """
    from flashcart.sales.engine.inventory import Inventory

    def state(product_id):
        engine = Inventory(redis_client)
        snapshot = engine.snapshot(product_id)
        return {
            "status": snapshot.status,
            "available": snapshot.available,
            "held": snapshot.held,
            "sold": snapshot.sold,
            "limit": snapshot.limit,
            "users": engine.user_units(product_id),
        }

    return state
