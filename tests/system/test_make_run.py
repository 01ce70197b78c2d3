"""`make run`, the README's first command, as a new user runs it: gunicorn with the
production settings file, on the embedded in-memory stores, serving a whole drop."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.support.ports import free_port
from tests.support.processes import ROOT

pytestmark = pytest.mark.timeout(180)


def call(base, method, path, body=None, token=None):
    request = urllib.request.Request(base + path, method=method)  # noqa: S310 - loopback
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, data, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}"), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), error.headers


def wait_until_serving(base, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "make run exited"
        try:
            return call(base, "GET", "/healthz")
        except OSError:
            time.sleep(0.2)
    raise AssertionError("make run did not serve in time")


def test_make_run_serves_a_drop_through_gunicorn_on_the_embedded_stores(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    unset = ("MONGO_URI", "REDIS_URL", "FLASHCART_ENV", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset} | {"TMPDIR": str(tmp_path)}
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}", f"VENV={sys.prefix}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        status, body, headers = wait_until_serving(base, process)
        assert (status, body) == (200, {"status": "ok"})
        assert headers["Server"] == "gunicorn"

        shopper = {"email": "ana@example.com", "password": "a long password", "name": "Ana"}
        assert call(base, "POST", "/api/v1/auth/signup", shopper)[0] == 201
        credentials = {"email": shopper["email"], "password": shopper["password"]}
        status, tokens, _ = call(base, "POST", "/api/v1/auth/login", credentials)
        assert status == 200
        token = tokens["access_token"]
        status, listed, _ = call(base, "GET", "/api/v1/products")
        assert status == 200 and listed["items"], "the embedded demo has products on sale"
        product = listed["items"][0]
        _, before, _ = call(base, "GET", f"/api/v1/sales/stock/{product['id']}")

        status, hold, _ = call(
            base, "POST", f"/api/v1/sales/reserve/{product['id']}", {"quantity": 1}, token
        )
        assert status == 201
        checkout = {"reservation_id": hold["id"]}
        status, order, _ = call(base, "POST", "/api/v1/orders", checkout, token)
        assert status == 201 and order["status"] == "placed"
        _, mine, _ = call(base, "GET", "/api/v1/orders", token=token)
        assert [o["id"] for o in mine["items"]] == [order["id"]]
        _, after, _ = call(base, "GET", f"/api/v1/sales/stock/{product['id']}")
        assert after["available"] == before["available"] - 1
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    log = log_path.read_text()
    assert "Using worker: gthread" in log
    assert "Traceback" not in log
