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

from tests.support.gunicorn_hosts import ProductionGunicorn
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


@pytest.mark.parametrize("setting", [None, "7"], ids=["default", "set"])
def test_gunicorn_and_the_app_share_one_request_timeout(setting):
    # The app bounds how long an Idempotency-Key stays locked by gunicorn's timeout.
    env = {k: v for k, v in os.environ.items() if k != "REQUEST_TIMEOUT_SECONDS"}
    if setting is not None:
        env["REQUEST_TIMEOUT_SECONDS"] = setting
    script = (
        "import runpy; from config import Config; "
        "print(runpy.run_path('gunicorn.conf.py')['timeout'], Config.REQUEST_TIMEOUT_SECONDS)"
    )
    command = [sys.executable, "-c", script]
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    gunicorn_timeout, app_timeout = result.stdout.split()
    assert gunicorn_timeout == app_timeout == (setting or "30")


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
