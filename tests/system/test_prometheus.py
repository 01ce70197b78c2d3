"""Debian's Prometheus scraping the app as shipped, through a small drop.

The production gunicorn (gunicorn.conf.py, two workers: /metrics adds up both
workers' samples) runs on the suite's redis-server and a MongoDB (MONGO_TEST_URI's,
else tests/support/mongo_standin.py). A real `prometheus` scrapes it every second
and evaluates the repository's alert rules (deploy/prometheus/rules/) as often.
Shoppers reserve and check out through the API, the sweeper makes one pass
(`flask --app wsgi sweep`, as an operator or cron runs it), and then Prometheus's
HTTP API must show the drop: the series the rules and the dashboard use, every rule
evaluated without error, no alert of a sound drop's firing, every dashboard query
answered.
"""

import subprocess
import sys
import time

import pytest
import redis

from flashcart import create_app
from tests.support import chaos_app
from tests.support.gunicorn_hosts import Api, ProductionGunicorn, open_drop
from tests.support.mongo import fresh_mongo_uri
from tests.support.processes import ROOT
from tests.support.prometheus import (
    DASHBOARDS,
    NOT_INSTALLED,
    PROMETHEUS,
    RULES,
    PrometheusServer,
    alert_rules,
    dashboard_exprs,
)

pytestmark = pytest.mark.timeout(120)

SECRET = "prometheus-test-secret-" + "x" * 40  # the server's and the test's tokens
STOCK = 5
LIMIT = 2
SHOPPERS = 4  # each asks for LIMIT units: the first STOCK units sell, the rest refused
# Alerts a sound drop never fires. FlashcartReserveSlow is left out: a busy test
# machine may well take 250 ms; its expression is still evaluated.
QUIET_IN_A_SOUND_DROP = {
    "FlashcartApiDown",
    "FlashcartRedisNotReady",
    "FlashcartMongoNotReady",
    "FlashcartOversold",
    "FlashcartAuditDrift",
    "FlashcartServerErrors",
    "FlashcartReservationsBusy",
    "FlashcartSweeperStopped",
    "FlashcartWebhookEventsAgeing",
}
# Dashboard queries that must show data after the drop.
DRAWN = {
    "max by (product_id) (flashcart_stock_available)",
    "max by (product_id) (flashcart_holds)",
    "max by (product_id) (flashcart_units_sold)",
    "sum by (outcome) (rate(flashcart_reservations_total[1m]))",
    "sum by (status) (rate(flashcart_http_requests_total[1m]))",
}


@pytest.fixture(scope="module")
def stack(redis_server, tmp_path_factory):
    """(gunicorn, prometheus, an operator app on the same stores, the stores' env)."""
    if PROMETHEUS is None:
        pytest.skip(NOT_INSTALLED)
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    flush = redis.Redis.from_url(redis_server.url)
    flush.flushdb()
    flush.close()
    workdir = tmp_path_factory.mktemp("prometheus")
    with fresh_mongo_uri() as mongo_uri:
        env = {"PROMETHEUS_MULTIPROC_DIR": str(workdir), "JWT_SECRET_KEY": SECRET}
        server = ProductionGunicorn(
            redis_server.url, mongo_uri, workdir / "gunicorn.log", {**env, "WEB_CONCURRENCY": "2"}
        )
        with server:
            targets = [f"127.0.0.1:{server.port}"]
            with PrometheusServer(targets, workdir, rule_files=[RULES]) as prometheus:
                operator = create_app(
                    chaos_app.settings(mongo_uri, redis_server.url, 600, JWT_SECRET_KEY=SECRET)
                )
                try:
                    yield server, prometheus, operator, server.env
                finally:
                    chaos_app.close_mongo(operator)


@pytest.fixture(scope="module")
def drop(stack):
    """A small drop through the API, then one sweeper pass; returns what it did."""
    server, prometheus, operator, env = stack
    api = Api(server.port)
    product_id, tokens = open_drop(
        operator, api, name="Scraped", price="10.00", stock=STOCK, limit=LIMIT, shoppers=SHOPPERS
    )
    answers, placed = [], 0
    for token in tokens.values():
        status, hold, code = api.call(
            "POST", f"/api/v1/sales/reserve/{product_id}", token, {"quantity": LIMIT}
        )
        answers.append(code or "ok")
        if status == 201 and placed < 1:  # one shopper checks out, the others keep holds
            status, order, _ = api.call(
                "POST", "/api/v1/orders", token, {"reservation_id": hold["id"]}
            )
            assert status == 201, order
            placed += hold["quantity"]
    swept = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "sweep"],
        cwd=ROOT,
        # Its own process, as in production: none of the server's metric files.
        env={k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert swept.returncode == 0, swept.stdout + swept.stderr
    held = sum(LIMIT for answer in answers if answer == "ok") - placed
    return {"product_id": product_id, "answers": answers, "placed": placed, "held": held}


def test_prometheus_sees_the_drop_the_app_served(stack, drop):
    _, prometheus, _, _ = stack
    product = {"product_id": drop["product_id"]}
    assert drop["answers"].count("ok") == 2  # 2 + 2 of 5 units, then too few left

    # Within a few scrapes of the drop and the sweeper's pass.
    units_sold = prometheus.wait_for_value(
        "max by (product_id) (flashcart_units_sold)",
        lambda values: values.get(frozenset(product.items())) == drop["placed"],
        "units sold",
    )
    assert len(units_sold) == 1
    assert list(prometheus.values('up{job="flashcart"}').values()) == [1.0]
    assert list(prometheus.values("flashcart_store_up").values()) == [1.0, 1.0]
    stock = prometheus.values("max by (product_id) (flashcart_stock_available)")
    assert stock == {frozenset(product.items()): STOCK - 2 * LIMIT}
    holds = prometheus.values("max by (product_id) (flashcart_holds)")
    assert holds == {frozenset(product.items()): drop["held"] // LIMIT}
    # Both workers' counts, added up by /metrics.
    reservations = prometheus.values("sum by (outcome) (flashcart_reservations_total)")
    expected = {answer: float(drop["answers"].count(answer)) for answer in drop["answers"]}
    assert {dict(labels)["outcome"]: n for labels, n in reservations.items()} == expected

    # The sweeper's report: alive, and its audit finds the sale sound.
    since_pass = prometheus.values("time() - max(flashcart_sweeper_last_pass_timestamp_seconds)")
    assert 0 <= next(iter(since_pass.values())) < 60
    for figure, sound in (("oversold_units", 0), ("users_over_limit", 0), ("drift_units", 0)):
        audit = prometheus.values(f"max by (product_id) (flashcart_audit_{figure})")
        assert audit == {frozenset(product.items()): sound}, figure
    assert prometheus.values("min(flashcart_audit_ok)") == {frozenset(): 1.0}


def test_every_rule_evaluates_on_the_drop_and_a_sound_drop_fires_none(stack, drop):
    _, prometheus, _, _ = stack
    rules = alert_rules()
    # Each rule's expression, answered by the query API.
    for rule in rules:
        answer = prometheus.query(rule["expr"])
        assert answer["resultType"] == "vector", rule["alert"]
        if rule["alert"] in QUIET_IN_A_SOUND_DROP:
            assert answer["result"] == [], rule["alert"]

    # Prometheus's own evaluation of the rules file: every rule loaded and healthy
    # (at an evaluation after this test's start).
    def loaded():
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]
        return {rule["name"]: rule for group in groups for rule in group["rules"]}

    before = {name: rule["lastEvaluation"] for name, rule in loaded().items()}
    deadline = time.monotonic() + 15
    while True:
        now = loaded()
        if all(rule["lastEvaluation"] != before.get(name) for name, rule in now.items()):
            break
        assert time.monotonic() < deadline, "the rules were not evaluated again"
        time.sleep(0.2)
    assert sorted(now) == sorted(rule["alert"] for rule in rules)
    for name, rule in now.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
        if name in QUIET_IN_A_SOUND_DROP:
            assert rule["state"] == "inactive", name


def test_every_dashboard_query_runs_on_the_drop(stack, drop):
    _, prometheus, _, _ = stack
    prometheus.wait_for_value(
        "sum by (outcome) (rate(flashcart_reservations_total[1m]))", bool, "reservations/s"
    )
    queries = [expr for path in DASHBOARDS for _, expr in dashboard_exprs(path)]
    assert set(queries) >= DRAWN
    for expr in queries:
        answer = prometheus.query(expr)
        assert answer["resultType"] in ("vector", "scalar"), expr
        if expr in DRAWN:
            assert answer["result"], expr
