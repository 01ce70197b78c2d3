"""The production server settings (gunicorn.conf.py) under a real gunicorn.

The app is loaded once in the master and forked into the workers (preload_app), so a
worker killed or recycled during a drop is replaced without loading the app again,
and /metrics still adds up what every worker counted.

The app is the one shipped (`wsgi:app`, production mode), on the suite's
redis-server and a MongoDB (MONGO_TEST_URI's, else tests/support/mongo_standin.py).
"""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
import redis

from flashcart import create_app
from flashcart.auth import service as accounts
from tests.support import chaos_app
from tests.support.gunicorn_hosts import SHIPPED_THREADS, Api, ProductionGunicorn
from tests.support.mongo import fresh_mongo_uri
from tests.support.processes import ROOT, children, settled_cpu_seconds, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def mongo_uri():
    with fresh_mongo_uri() as uri:
        yield uri


@pytest.fixture
def serve(redis_server, mongo_uri, tmp_path):
    """serve(**env): the production gunicorn (ProductionGunicorn) on the suite's
    redis-server, flushed first (no rate-limit counts left by other tests), and the
    module's MongoDB; Prometheus files and the log in the test's tmp_path."""
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    flush = redis.Redis.from_url(redis_server.url)
    flush.flushdb()
    flush.close()

    def serve(**env):
        env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), **env}
        return ProductionGunicorn(redis_server.url, mongo_uri, tmp_path / "gunicorn.log", env)

    return serve


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return response.status, response.read().decode()


def test_a_killed_worker_is_replaced_from_the_preloaded_app(serve):
    with serve(WEB_CONCURRENCY="2") as server:
        workers = wait_for(
            lambda: len(children(server.process.pid)) == 2 and children(server.process.pid),
            "two workers",
            timeout=30,
            interval=0.05,
        )
        os.kill(workers[0], signal.SIGKILL)
        replacement = wait_for(
            lambda: set(children(server.process.pid)) - set(workers),
            "replacement worker",
            timeout=30,
            interval=0.05,
        ).pop()
        # Loading the app costs a worker 0.3-0.5 s of CPU; a fork of the master's, next to none.
        settled = settled_cpu_seconds({"worker": replacement}, interval=0.5, timeout=30)
        assert settled["worker"] < 0.1

        for _ in range(20):
            assert _get(server.url + "/healthz")[0] == 200
        status, metrics = _get(server.url + "/metrics")
    assert status == 200
    counted = re.search(
        r'^flashcart_http_requests_total\{endpoint="/healthz",method="GET",status="200"\} (\S+)',
        metrics,
        re.M,
    )
    assert counted and float(counted.group(1)) >= 20


def _settings_file(env, *expressions):
    """What each expression gives with gunicorn.conf.py's settings as `conf`, the app's
    Config imported, under `env`, in a fresh interpreter (the file sets variables)."""
    script = (
        "import runpy; from config import Config; conf = runpy.run_path('gunicorn.conf.py'); "
        f"print({', '.join(expressions)})"
    )
    command = [sys.executable, "-c", script]
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


@pytest.mark.parametrize("setting", [None, "7"], ids=["default", "set"])
def test_gunicorn_and_the_app_share_one_request_timeout(setting):
    # A sync worker is killed at gunicorn's timeout; every request bounds itself by the
    # app's (flashcart/deadlines.py), and an Idempotency-Key's lock follows from it.
    env = {k: v for k, v in os.environ.items() if k != "REQUEST_TIMEOUT_SECONDS"}
    if setting is not None:
        env["REQUEST_TIMEOUT_SECONDS"] = setting
    gunicorn_timeout, app_timeout = _settings_file(
        env, "conf['timeout']", "Config.REQUEST_TIMEOUT_SECONDS"
    )
    assert gunicorn_timeout == app_timeout == (setting or "30")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, ["2", "gthread", str(SHIPPED_THREADS)]), ("1", ["2", "sync", "1"])],
    ids=["default", "one thread"],
)
def test_workers_are_threaded_unless_given_one_thread(setting, expected):
    # The chaos and scale-out hosts (GunicornHost) run SHIPPED_THREADS as well.
    env = {k: v for k, v in os.environ.items() if k not in ("WEB_THREADS", "WEB_CONCURRENCY")}
    if setting is not None:
        env["WEB_THREADS"] = setting
    settings = _settings_file(env, "conf['workers']", "conf['worker_class']", "conf['threads']")
    assert settings == expected


def test_nginx_lets_go_of_its_idle_connections_to_the_api_before_gunicorn_does():
    # Else nginx may send a request down a kept-alive connection gunicorn is closing.
    with open(os.path.join(ROOT, "deploy", "nginx", "flashcart.conf.template")) as file:
        template = file.read()
    upstream = re.search(r"^upstream flashcart_api \{$(.*?)^\}$", template, re.S | re.M).group(1)
    nginx_idle = int(re.search(r"^\s*keepalive_timeout (\d+)s;", upstream, re.M).group(1))
    (gunicorn_idle,) = _settings_file(dict(os.environ), "conf['keepalive']")
    assert nginx_idle < int(gunicorn_idle)


def test_threaded_workers_carry_request_after_request_on_one_connection(serve):
    with serve(WEB_CONCURRENCY="1", WEB_THREADS="4") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            conn.connect()
            sock = conn.sock
            for _ in range(5):
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                assert response.status == 200
                assert response.getheader("Connection") != "close"
                assert conn.sock is sock  # the same connection: not closed in between
        finally:
            conn.close()


def _post_chunked(port, path, body, content_type="application/json"):
    """POST `body` with Transfer-Encoding: chunked (http.client chunks an iterable)."""
    chunks = (body[i : i + 16_384] for i in range(0, len(body), 16_384))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=chunks, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_chunked_bodies_meet_the_body_checks_under_gunicorn(serve):
    credentials = '{"email": "a@example.com", "password": %s}'
    with serve(WEB_CONCURRENCY="1") as server:
        port = server.port
        answers = {
            "deep": _post_chunked(port, "/api/v1/auth/login", b"[" * 20_000 + b"]" * 20_000),
            "long number": _post_chunked(
                port, "/api/v1/auth/login", (credentials % ("9" * 5000)).encode()
            ),
            "text": _post_chunked(
                port,
                "/api/v1/auth/signup",
                (credentials % '"long enough pw"').encode(),
                "text/plain",
            ),
            "too long": _post_chunked(port, "/api/v1/auth/signup", b" " * 200_000 + b"{}"),
        }
    assert {name: (status, body["code"]) for name, (status, body) in answers.items()} == {
        "deep": (400, "bad_request"),
        "long number": (400, "bad_request"),
        "text": (415, "unsupported_media_type"),
        "too long": (413, "payload_too_large"),
    }


def test_a_reservation_held_up_past_the_request_timeout_is_refused_whole(
    serve, redis_server, mongo_uri
):
    """Threaded workers (WEB_THREADS) outlive gunicorn's timeout: the app ends the
    request itself. Redis stalls a keyed reservation past REQUEST_TIMEOUT_SECONDS: it
    answers 503 having held nothing, and its retry with the same key reserves once."""
    admin = {"email": "admin@settings.example", "password": "correct horse battery staple"}
    shopper = {"email": "shopper@settings.example", "password": "correct horse battery"}
    operator = create_app(chaos_app.settings(mongo_uri, redis_server.url, 600))
    with operator.app_context():
        accounts.ensure_admin(**admin)
        accounts.register(name="S", **shopper)
    chaos_app.close_mongo(operator)
    store = redis.Redis.from_url(redis_server.url)
    with serve(REQUEST_TIMEOUT_SECONDS="1", WEB_CONCURRENCY="1", WEB_THREADS="4") as server:
        api = Api(server.port)
        tokens = [api.call("POST", "/api/v1/auth/login", body=who)[1] for who in (admin, shopper)]
        admin_token, token = (answer["access_token"] for answer in tokens)
        product = {"name": "Late drop", "price": "5.00", "stock": 3, "per_user_limit": 3}
        status, created, _ = api.call("POST", "/api/v1/products", admin_token, product)
        assert status == 201, created
        product_id = created["id"]
        assert api.call("POST", f"/api/v1/sales/start/{product_id}", admin_token)[0] == 200

        def reserve():
            path = f"/api/v1/sales/reserve/{product_id}"
            return api.request("POST", path, token, {"quantity": 1}, {"Idempotency-Key": "k"})

        def available():
            return api.call("GET", f"/api/v1/sales/stock/{product_id}")[1]["available"]

        store.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        late = reserve()
        assert (late.status, late.code, late.headers.get("Retry-After")) == (
            503,
            "deadline_passed",
            "1",
        )
        assert available() == 3
        retry, replay = reserve(), reserve()
        available_after = available()
    store.close()
    assert retry.status == 201, retry.body
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.body == retry.body
    assert available_after == 2
