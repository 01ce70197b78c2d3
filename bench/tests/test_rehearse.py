"""`make rehearse` end to end, small: a locust drop against `make run` writes its JSON
(what the audit found, the stock and each second's requests) and its report."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from bench.tests.pages import REHEARSAL_TITLES, assert_drawn, read_page
from tests.support.ports import free_port
from tests.support.processes import ROOT

pytestmark = pytest.mark.timeout(180)
UNITS, SHOPPERS = 3, 5
# The shoppers all come from this machine: its per-address limits would refuse them.
RAISED = {
    "RATELIMIT_SIGNUP_PER_IP": "10000 per minute",
    "RATELIMIT_LOGIN_PER_IP": "10000 per minute",
    "RATELIMIT_PASSWORD_CHECKS_PER_HOST": "10000 per second",
}


def make(target, *args, env):
    # The suite runs inside an installed virtualenv: `-o` keeps make from reinstalling it.
    installed = os.path.join(sys.prefix, "bin", ".installed")
    return ["make", "--no-print-directory", "-o", installed, target, f"VENV={sys.prefix}", *args]


def wait_until_serving(base, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "make run exited"
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5):  # noqa: S310 - loopback
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("make run did not serve in time")


def test_make_rehearse_writes_the_run_as_json_and_a_report_with_its_curves(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    unset = ("MONGO_URI", "REDIS_URL", "FLASHCART_ENV", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset} | {"TMPDIR": str(tmp_path)}
    results = tmp_path / "results"
    with open(tmp_path / "make-run.log", "wb") as log:
        server = subprocess.Popen(
            make("run", f"PORT={port}", env=env),
            cwd=ROOT,
            env=env | RAISED,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_serving(base, server)
        rehearsal = subprocess.run(
            make("rehearse", f"URL={base}", f"SHOPPERS={SHOPPERS}", env=env),
            cwd=ROOT,
            env=env
            | {
                "DURATION": "15s",
                "DROP_UNITS": str(UNITS),
                "ADMIN_EMAIL": "admin@flashcart.local",
                "ADMIN_PASSWORD": "flashcart-demo-admin",
                "REHEARSAL_RESULTS": str(results),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    assert rehearsal.returncode == 0, rehearsal.stdout + rehearsal.stderr
    (json_path,) = results.glob("rehearsal-*.json")
    (html_path,) = results.glob("rehearsal-*.html")
    assert html_path.stem == json_path.stem
    assert f"report: {html_path}" in rehearsal.stdout
    run = json.loads(json_path.read_text())
    assert run["kind"] == "rehearsal" and run["target"] == base
    assert (run["units"], run["shoppers"], run["oversold"]) == (UNITS, SHOPPERS, 0)
    assert run["audit"]["sold"] == UNITS
    # Every unit reserved and bought once, after the drop opened.
    assert len(run["reserved_s"]) == len(run["orders_placed_s"]) == UNITS
    assert min(run["reserved_s"]) >= run["drop_opened_s"]
    # The stock was polled while it sold out.
    assert run["stock"][0][1] == UNITS and run["stock"][-1][1] == 0
    sent = {}
    for row in run["seconds"]:
        for status, n in row["statuses"].items():
            sent[(row["name"], status)] = sent.get((row["name"], status), 0) + n
    # A password check refused while the host's slots were busy is tried again.
    refused = {
        key: n for key, n in sent.items() if key[0] in ("signup", "login") and key[1] == "503"
    }
    assert {key: n for key, n in sent.items() if key not in refused} == {
        ("signup", "201"): SHOPPERS,
        ("login", "200"): SHOPPERS,
        ("reserve", "201"): UNITS,
        ("reserve", "409"): SHOPPERS - UNITS,
        ("checkout", "201"): UNITS,
    }
    assert_drawn(read_page(html_path), REHEARSAL_TITLES)
