"""`make rehearse` end to end, small: a locust drop against `make run` writes its JSON
(what the audit found, the stock and each second's requests) and its report."""

import json
import subprocess

import pytest

from bench.tests.pages import REHEARSAL_TITLES, assert_drawn, read_page
from tests.support.make_targets import (
    make_command,
    make_env,
    start_make,
    stop_make,
    wait_until_serving,
)
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


def test_make_rehearse_writes_the_run_as_json_and_a_report_with_its_curves(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    results = tmp_path / "results"
    server = start_make("run", port, tmp_path, **RAISED)
    try:
        wait_until_serving(base, server)
        rehearsal = subprocess.run(
            make_command("rehearse", f"URL={base}", f"SHOPPERS={SHOPPERS}"),
            cwd=ROOT,
            env=make_env(tmp_path)
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
        stop_make(server)

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
