"""README's webhook walkthrough as a new user runs it: `make run` on the embedded
in-memory stores also runs the sweeper and the webhook deliverer (no other process
can reach its data), and the example receiver prints a signed `order.placed`."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import ROOT, stop, wait_for
from tests.system.test_make_run import call, wait_until_serving

pytestmark = pytest.mark.timeout(180)
RECEIVER = Path(ROOT) / "docs" / "examples" / "webhook_receiver.py"
ADMIN = {"email": "admin@flashcart.local", "password": "flashcart-demo-admin"}


def make_run(port, tmp_path, **settings):
    """`make run` as README has it (the suite's venv, which `-o` keeps make from
    reinstalling); its log goes to tmp_path/make-run.log."""
    unset = ("MONGO_URI", "REDIS_URL", "FLASHCART_ENV", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env |= {"TMPDIR": str(tmp_path)} | settings
    installed = os.path.join(sys.prefix, "bin", ".installed")
    command = ["make", "--no-print-directory", "-o", installed, "run"]
    with open(tmp_path / "make-run.log", "wb") as log:
        return subprocess.Popen(
            [*command, f"PORT={port}", f"VENV={sys.prefix}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_make_run(process):
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def login(base, credentials):
    status, tokens, _ = call(base, "POST", "/api/v1/auth/login", credentials)
    assert status == 200, tokens
    return tokens["access_token"]


def shopper_token(base):
    shopper = {"email": "ana@example.com", "password": "a long password", "name": "Ana"}
    assert call(base, "POST", "/api/v1/auth/signup", shopper)[0] == 201
    return login(base, {"email": shopper["email"], "password": shopper["password"]})


def received(log_path):
    """The receiver's deliveries: (its line about the delivery, the body as JSON)."""
    lines = log_path.read_text().splitlines()
    return [
        (line, json.loads(body))
        for line, body in zip(lines, lines[1:], strict=False)
        if "(attempt " in line
    ]


def test_make_run_delivers_a_signed_order_placed_to_the_readme_receiver(tmp_path):
    port, receiver_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    server = make_run(port, tmp_path, WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS="true")
    receiver = None
    try:
        wait_until_serving(base, server)
        admin = login(base, ADMIN)
        url = f"http://127.0.0.1:{receiver_port}/hooks"
        status, endpoint, _ = call(
            base, "POST", "/api/v1/webhooks", {"url": url, "types": ["order.placed"]}, admin
        )
        assert status == 201, endpoint
        receiver_log = tmp_path / "receiver.log"
        with open(receiver_log, "wb") as out:
            receiver = subprocess.Popen(
                [sys.executable, str(RECEIVER), str(receiver_port)],
                env=os.environ | {"FLASHCART_WEBHOOK_SECRET": endpoint["secret"]},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: "receiving webhooks" in receiver_log.read_text(), "the receiver")

        token = shopper_token(base)
        _, listed, _ = call(base, "GET", "/api/v1/products")
        product = listed["items"][0]["id"]
        status, hold, _ = call(
            base, "POST", f"/api/v1/sales/reserve/{product}", {"quantity": 1}, token
        )
        assert status == 201
        placed_at = time.monotonic()
        status, order, _ = call(
            base, "POST", "/api/v1/orders", {"reservation_id": hold["id"]}, token
        )
        assert status == 201 and order["status"] == "placed"

        (line, body), *_ = wait_for(lambda: received(receiver_log), "a delivery", timeout=10)
        assert time.monotonic() - placed_at < 5, "the embedded deliverer passes every second"
        assert line.startswith("order.placed evt_") and "(attempt 1): signature ok" in line
        assert body["type"] == "order.placed"
        assert body["resource"] == {"type": "order", "id": order["id"]}
        _, deliveries, _ = call(
            base, "GET", f"/api/v1/webhooks/{endpoint['id']}/deliveries", token=admin
        )
        assert [d["status"] for d in deliveries["items"]] == ["delivered"]
    finally:
        if receiver:
            stop(receiver)
        stop_make_run(server)
    log = (tmp_path / "make-run.log").read_text()
    assert "this process also runs sweep and deliver" in log
    assert "Traceback" not in log


def test_make_run_sweeps_expired_holds_and_reports_its_passes(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = make_run(port, tmp_path, HOLD_SECONDS="1")
    log_path = tmp_path / "make-run.log"
    try:
        wait_until_serving(base, server)
        token = shopper_token(base)
        _, listed, _ = call(base, "GET", "/api/v1/products")
        product = listed["items"][0]["id"]
        _, before, _ = call(base, "GET", f"/api/v1/sales/stock/{product}")
        reserve = f"/api/v1/sales/reserve/{product}"
        assert call(base, "POST", reserve, {"quantity": 2}, token)[0] == 201

        # Nobody reads the sale meanwhile: the sweeper thread is what returns the units.
        wait_for(
            lambda: "sweep: units_returned=2" in log_path.read_text(),
            "the sweeper returning the expired hold",
            timeout=15,
        )
        _, after, _ = call(base, "GET", f"/api/v1/sales/stock/{product}")
        assert after["available"] == before["available"]

        def last_pass():
            request = urllib.request.Request(base + "/metrics")  # noqa: S310 - loopback
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                text = response.read().decode()
            found = re.search(r"^flashcart_sweeper_last_pass_timestamp_seconds (\S+)$", text, re.M)
            return float(found.group(1)) if found else None

        first = wait_for(last_pass, "the sweeper's last pass in /metrics")
        assert abs(time.time() - first) < 10
        wait_for(lambda: last_pass() > first, "a later sweeper pass", timeout=15)
    finally:
        stop_make_run(server)
    assert "Traceback" not in log_path.read_text()
