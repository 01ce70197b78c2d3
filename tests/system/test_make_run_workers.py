"""README's webhook walkthrough as a new user runs it: `make run` on the embedded
in-memory stores also runs the sweeper and the webhook deliverer (no other process
can reach its data). README's own shell blocks register an endpoint, start the
example receiver (docs/examples/webhook_receiver.py) and buy; the receiver prints a
signed `order.placed`."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flashcart.webhooks import signatures
from tests.support.make_targets import call, start_make, stop_make, wait_until_serving
from tests.support.ports import free_port
from tests.support.processes import ROOT, stop, wait_for

pytestmark = pytest.mark.timeout(180)
RECEIVER = Path(ROOT) / "docs" / "examples" / "webhook_receiver.py"
ADMIN = {"email": "admin@flashcart.local", "password": "flashcart-demo-admin"}


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


def last_pass(base):
    """The sweeper's last pass as /metrics serves it, or None before the first."""
    request = urllib.request.Request(base + "/metrics")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    found = re.search(r"^flashcart_sweeper_last_pass_timestamp_seconds (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def readme_block(containing):
    """README's shell block that contains `containing`."""
    blocks = re.findall(r"```sh\n(.*?)```", (Path(ROOT) / "README.md").read_text(), re.S)
    (block,) = [block for block in blocks if containing in block]
    return block


def shell(script, port, receiver_port, **options):
    """`script` from README in bash, on this test's ports instead of 5000 and 9000."""
    script = script.replace("localhost:5000", f"127.0.0.1:{port}").replace(
        "9000", str(receiver_port)
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    return subprocess.Popen(
        ["bash", "-c", script], cwd=ROOT, env=os.environ | {"API": api}, **options
    )


def test_readme_webhook_walkthrough_prints_a_signed_order_placed(tmp_path):
    port, receiver_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_make("run", port, tmp_path, WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS="true")
    receiver_log = tmp_path / "receiver.log"
    receiving = None
    try:
        wait_until_serving(base, server)
        # README's block: the admin registers an endpoint; the receiver starts with its secret.
        with open(receiver_log, "wb") as out:
            receiving = shell(
                readme_block("webhook_receiver.py"),
                port,
                receiver_port,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: "receiving webhooks" in receiver_log.read_text(), "the receiver")

        # "Try a drop": a shopper signs up, reserves and checks out.
        with open(tmp_path / "drop.log", "wb") as out:
            drop = shell(readme_block("/sales/reserve/"), port, receiver_port, stdout=out)
        assert drop.wait(timeout=60) == 0
        token = login(base, {"email": "ana@example.com", "password": "a long password"})
        _, mine, _ = call(base, "GET", "/api/v1/orders", token=token)
        (order,) = mine["items"]
        assert order["status"] == "placed"

        # The embedded deliverer makes a pass every second.
        (line, body), *_ = wait_for(lambda: received(receiver_log), "a delivery", timeout=5)
        assert line.startswith("order.placed evt_") and "(attempt 1): signature ok" in line
        assert body["type"] == "order.placed"
        assert body["resource"] == {"type": "order", "id": order["id"]}
        assert len(received(receiver_log)) == 1

        admin = login(base, ADMIN)
        _, endpoints, _ = call(base, "GET", "/api/v1/webhooks", token=admin)
        (endpoint,) = endpoints["items"]
        assert endpoint["url"] == f"http://127.0.0.1:{receiver_port}/hooks"
        _, deliveries, _ = call(
            base, "GET", f"/api/v1/webhooks/{endpoint['id']}/deliveries", token=admin
        )
        assert [d["status"] for d in deliveries["items"]] == ["delivered"]
    finally:
        if receiving:
            os.killpg(receiving.pid, signal.SIGTERM)
            receiving.wait(timeout=30)
        stop_make(server)
    log = (tmp_path / "make-run.log").read_text()
    assert "this process also runs sweep and deliver" in log
    assert "Traceback" not in log


def test_the_receiver_refuses_a_delivery_signed_with_another_secret(tmp_path):
    port = free_port()
    receiver_log = tmp_path / "receiver.log"
    with open(receiver_log, "wb") as out:
        receiver = subprocess.Popen(
            [sys.executable, str(RECEIVER), str(port)],
            env=os.environ | {"FLASHCART_WEBHOOK_SECRET": "whsec_the-endpoints"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "receiving webhooks" in receiver_log.read_text(), "the receiver")
        body = b'{"id":"evt_1","type":"order.placed"}'

        def post(secret):
            header = signatures.header([secret], time.time(), body)
            request = urllib.request.Request(  # noqa: S310 - loopback
                f"http://127.0.0.1:{port}/hooks",
                data=body,
                headers={signatures.HEADER: header, "FlashCart-Event-Type": "order.placed"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        assert post("whsec_the-endpoints") == 204
        assert post("whsec_another") == 400
    finally:
        stop(receiver)
    assert "BAD SIGNATURE, refused" in receiver_log.read_text()


def test_make_run_sweeps_expired_holds_and_reports_its_passes(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_make("run", port, tmp_path, HOLD_SECONDS="1")
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

        first = wait_for(lambda: last_pass(base), "the sweeper's last pass in /metrics")
        assert abs(time.time() - first) < 10
        wait_for(lambda: last_pass(base) > first, "a later sweeper pass", timeout=15)
    finally:
        stop_make(server)
    assert "Traceback" not in log_path.read_text()


def test_the_example_receiver_verifies_as_the_webhooks_page_shows():
    page = (Path(ROOT) / "docs" / "webhooks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    (snippet,) = [block for block in blocks if "def verify(" in block]
    verify = snippet[snippet.index("def verify(") :]
    assert verify in RECEIVER.read_text()


def test_make_dev_runs_the_workers_once_in_the_process_that_serves(tmp_path):
    # flask run --reload: the watching parent loads the app too, but serves nothing.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_make("dev", port, tmp_path)
    log_path = tmp_path / "make-run.log"
    try:
        wait_until_serving(base, server)
        wait_for(lambda: last_pass(base), "the sweeper's first pass in /metrics", timeout=10)
    finally:
        stop_make(server)
    assert log_path.read_text().count("this process also runs sweep and deliver") == 1
