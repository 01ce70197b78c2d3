"""Fixtures: a real redis-server started by the suite, MongoDB, the app and helpers.

Redis tests run against a real `redis-server` on a free loopback port (started once
per session, flushed before each test). Only where no binary exists do they fall
back to fakeredis, and they say so.

MongoDB is mongomock, unless MONGO_TEST_URI names a MongoDB server: then every test
that touches MongoDB gets a fresh database there (dropped after), opened by the
app's own `connect_mongo`. Tests that need several processes to share MongoDB use
that server too, or else a wire-protocol stand-in (tests/mongo_standin.py).
"""

import contextlib
import io
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from urllib.parse import urlsplit, urlunsplit

import cluster_servers
import mongomock
import pytest
import redis
from mongo_standin import MongoStandIn

from config import TestingConfig
from flashcart import create_app
from flashcart.auth import service as accounts
from flashcart.stores import connect_mongo

MONGO_TEST_URI = os.environ.get("MONGO_TEST_URI", "")
PASSWORD = "correct horse battery"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throwaway redis-server process on a free port (restartable, for fault tests)."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="flashcart-redis-")
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--maxclients",
                "2000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        if self.process:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self):
        self.stop()
        return self.start()


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
    that asks for it (tests/cluster_servers.py)."""
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


def _fresh_database_uri():
    """MONGO_TEST_URI with a database name of its own, so no two tests share data."""
    name = f"flashcart_test_{os.urandom(6).hex()}"
    return urlunsplit(urlsplit(MONGO_TEST_URI)._replace(path="/" + name))


@contextlib.contextmanager
def fresh_mongo_uri():
    """The URI of an empty database on a MongoDB server that several processes can
    share: MONGO_TEST_URI's (the database dropped after), else a stand-in started
    for the caller (stopped after)."""
    if not MONGO_TEST_URI:
        with MongoStandIn() as standin:
            yield standin.url
        return
    uri = _fresh_database_uri()
    try:
        yield uri
    finally:
        db = connect_mongo(uri, TestingConfig.MONGO_TIMEOUT_MS)
        db.client.drop_database(db.name)
        db.client.close()


@pytest.fixture
def mongo_db():
    """The test's database: mongomock, or a fresh one on MONGO_TEST_URI's server."""
    if not MONGO_TEST_URI:
        yield mongomock.MongoClient().flashcart
        return
    db = connect_mongo(_fresh_database_uri(), TestingConfig.MONGO_TIMEOUT_MS)
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
    return create_app({**_testing(), **app_config}, db=mongo_db, redis_client=redis_client)


def _testing():
    return {key: getattr(TestingConfig, key) for key in dir(TestingConfig) if key.isupper()} | {
        "ENV_NAME": "testing"
    }


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
    from flashcart.sales.inventory import Inventory

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


PROBLEM_JSON = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "code", "detail"}


def assert_problem(response, status=None, code=None):
    """The response is an RFC 9457 problem (with `status` and `code` if named, else
    some 4xx); returns its body."""
    text = response.get_data(as_text=True)
    if status is None:
        assert 400 <= response.status_code < 500, f"{response.status_code}: {text}"
    else:
        assert response.status_code == status, text
    assert response.content_type == PROBLEM_JSON
    body = response.json
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == response.status_code
    assert body["type"] == f"urn:flashcart:problem:{body['code']}"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def post(client, path, raw, *, transfer="sized", content_type="application/json", headers=()):
    """POST the bytes `raw` with a Content-Length ("sized") or as gunicorn hands a
    chunked body to the app ("chunked"): no Content-Length, the input marked terminated."""
    raw = raw.encode() if isinstance(raw, str) else raw
    headers = dict(headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    if transfer == "sized":
        return client.post(path, data=raw, headers=headers)
    return client.post(
        path,
        input_stream=io.BytesIO(raw),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def redis_state(redis_client):
    """Every key with its type and value, to prove a request changed nothing."""
    readers = {
        "string": redis_client.get,
        "hash": redis_client.hgetall,
        "set": redis_client.smembers,
        "zset": lambda key: redis_client.zrange(key, 0, -1, withscores=True),
        "list": lambda key: redis_client.lrange(key, 0, -1),
    }
    return {
        key: (kind, readers[kind](key))
        for key in redis_client.keys("*")
        if (kind := redis_client.type(key))
    }


def run_threads(count, target, timeout=30, pass_barrier=False):
    """Run `count` threads released together and return their results.

    target(index) runs once every thread has started (or target(index, barrier),
    with `pass_barrier`, for tests that line threads up again themselves). A thread
    still running after `timeout` seconds fails the test instead of hanging it, and
    the first error a thread raised is raised here.
    """
    barrier = threading.Barrier(count, timeout=timeout)
    results, errors = [None] * count, []

    def guarded(index):
        try:
            if pass_barrier:
                results[index] = target(index, barrier)
            else:
                barrier.wait()
                results[index] = target(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = sum(thread.is_alive() for thread in threads)
    assert hung == 0, f"{hung} threads still running after {timeout}s (deadlock or livelock?)"
    if errors:
        raise errors[0]
    return results
