"""Metrics, structured request logs, request ids and the readiness probe."""

import contextlib
import io
import json
import logging
import re
import time
from urllib.parse import quote

import pytest
import redis
from bson import ObjectId
from prometheus_client.parser import text_string_to_metric_families

from flashcart import create_app, logs
from flashcart.auth import tokens
from flashcart.sales.engine.keys import Keys
from tests.support.access_log import ACCESS_LINE_FIELDS
from tests.support.app import PASSWORD, app_settings
from tests.support.ports import free_port


def scrape(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- metrics -------------------------------------------------------------------


def test_requests_are_counted_by_url_rule_and_status_not_by_raw_path(client, make_product):
    product = make_product()
    before = scrape(client)

    client.get(f"/api/v1/products/{product['id']}")
    client.get("/api/v1/products/ffffffffffffffffffffffff")
    client.get("/no/such/page")

    after = scrape(client)
    rule = "/api/v1/products/<product_id>"
    name = "flashcart_http_requests_total"
    for status in ("200", "404"):
        labels = {"method": "GET", "endpoint": rule, "status": status}
        assert value(after, name, **labels) - value(before, name, **labels) == 1
    unmatched = {"method": "GET", "endpoint": "<unmatched>", "status": "404"}
    assert value(after, name, **unmatched) - value(before, name, **unmatched) == 1
    assert not any(product["id"] in str(labels) for _, labels in after)
    latency = "flashcart_http_request_duration_seconds_count"
    labels = {"method": "GET", "endpoint": rule, "status": "200"}
    assert value(after, latency, **labels) - value(before, latency, **labels) == 1


def test_reservations_are_counted_by_outcome(client, make_product, make_user, headers_for):
    product = make_product(live=True, stock=2, per_user_limit=1)
    reserve = f"/api/v1/sales/reserve/{product['id']}"
    first, second, third = (headers_for(make_user()) for _ in range(3))
    before = scrape(client)

    assert client.post(reserve, json={}, headers=first).status_code == 201
    assert client.post(reserve, json={}, headers=first).json["code"] == "limit_exceeded"
    assert client.post(reserve, json={}, headers=second).status_code == 201
    assert client.post(reserve, json={}, headers=third).json["code"] == "sold_out"
    assert client.post(
        "/api/v1/sales/reserve/ffffffffffffffffffffffff", json={}, headers=third
    ).json["code"] in ("product_not_found", "sale_not_started")

    after = scrape(client)
    name = "flashcart_reservations_total"
    assert value(after, name, outcome="ok") - value(before, name, outcome="ok") == 2
    for outcome in ("limit_exceeded", "sold_out"):
        assert value(after, name, outcome=outcome) - value(before, name, outcome=outcome) == 1


def test_orders_placed_and_cancelled_and_expired_holds_are_counted(
    app, client, make_product, user_headers
):
    product = make_product(live=True, stock=5, per_user_limit=5)
    reserve = f"/api/v1/sales/reserve/{product['id']}"
    before = scrape(client)

    held = client.post(reserve, json={"quantity": 2}, headers=user_headers).json
    order = client.post("/api/v1/orders", json={"reservation_id": held["id"]}, headers=user_headers)
    assert order.status_code == 201
    cancelled = client.delete(f"/api/v1/orders/{order.json['id']}", headers=user_headers)
    assert cancelled.status_code == 200

    app.config["HOLD_SECONDS"] = 0  # the next hold expires at once
    expiring = client.post(reserve, json={"quantity": 3}, headers=user_headers)
    assert expiring.status_code == 201
    time.sleep(0.01)
    assert client.get(f"/api/v1/sales/stock/{product['id']}").json["available"] == 5

    after = scrape(client)
    orders = "flashcart_orders_total"
    for status in ("placed", "cancelled"):
        assert value(after, orders, status=status) - value(before, orders, status=status) == 1
    holds = "flashcart_holds_returned_total"
    units = "flashcart_held_units_returned_total"
    assert value(after, holds, reason="expired") - value(before, holds, reason="expired") == 1
    assert value(after, units, reason="expired") - value(before, units, reason="expired") == 3


def test_live_stock_is_a_gauge_per_product_in_a_sale(client, make_product, user_headers):
    live = make_product(live=True, stock=7)
    draft = make_product(stock=3)
    client.post(f"/api/v1/sales/reserve/{live['id']}", json={"quantity": 2}, headers=user_headers)

    samples = scrape(client)

    assert value(samples, "flashcart_stock_available", product_id=live["id"]) == 5
    assert ("flashcart_stock_available", (("product_id", draft["id"]),)) not in samples


def test_watch_retries_are_counted_through_the_inventory_hook(app):
    from flashcart import metrics
    from flashcart.sales import service as sales

    before = metrics.WATCH_RETRIES._value.get()
    with app.app_context():
        sales.inventory().on_retry()
    assert metrics.WATCH_RETRIES._value.get() == before + 1


def test_metrics_still_answer_when_redis_is_down(mongo_db):
    app = create_app(
        app_settings()
        | {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_TIMEOUT_SECONDS": 0.2},
        db=mongo_db,
    )
    mongo_db.products.insert_one({"name": "x", "sale_status": "live"})
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert b"flashcart_http_requests_total" in response.data


def test_multiprocess_mode_sums_every_worker(tmp_path):
    """What /metrics does under gunicorn: read every worker's files and add them up."""
    import subprocess
    import sys

    script = """
import os, sys
from prometheus_client import Counter
c = Counter("fc_test_hits", "hits")
c.inc(int(sys.argv[1]))
"""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for hits in (2, 3):
        subprocess.run([sys.executable, "-c", script, str(hits)], env=env, check=True)
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    assert "fc_test_hits_total 5.0" in generate_latest(registry).decode()


# -- logs and request ids -------------------------------------------------------


@contextlib.contextmanager
def written_with(formatter):
    """Everything the flashcart loggers write while it is open, through `formatter`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(logs.RequestIdFilter())
    logger = logging.getLogger("flashcart")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
def access_lines():
    """The JSON lines the access logger writes, through the production formatter."""
    with written_with(logs.json_formatter()) as stream:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture(params=["json", "text"])
def log_format(request):
    """A LOG_FORMAT, and what the flashcart loggers write through its formatter."""
    with written_with(logs.formatter(request.param)) as stream:
        yield request.param, stream


def test_one_json_line_per_request_with_what_operators_need(
    client, user, user_headers, access_lines
):
    response = client.get("/api/v1/orders?page=1", headers=user_headers)

    (line,) = [entry for entry in access_lines() if entry["logger"] == "flashcart.access"]
    assert line["method"] == "GET"
    assert line["path"] == "/api/v1/orders"
    assert line["endpoint"] == "/api/v1/orders"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert line["user_id"] == user["id"]
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert line["level"] == "INFO" and "time" in line


def test_an_access_line_has_its_fields_in_their_order(client, access_lines):
    client.get("/healthz")
    (line,) = [entry for entry in access_lines() if entry["logger"] == "flashcart.access"]
    assert list(line) == ACCESS_LINE_FIELDS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", line["time"])
    assert re.fullmatch(r"GET /healthz 200 \d+\.\d\dms", line["message"])
    assert line["endpoint"] == "/healthz" and line["remote_addr"] == "127.0.0.1"


def test_anonymous_requests_log_no_user(client, access_lines):
    client.get("/api/v1/products")
    (line,) = [entry for entry in access_lines() if entry["logger"] == "flashcart.access"]
    assert line["user_id"] is None


def test_a_token_whose_session_could_not_be_checked_logs_no_user(
    client, user_headers, access_lines, monkeypatch
):
    def redis_away(claims, along=()):
        raise redis.ConnectionError("Redis is away")

    monkeypatch.setattr(tokens, "revocation", redis_away)
    response = client.get("/api/v1/orders", headers=user_headers)

    assert response.status_code == 503
    (line,) = [entry for entry in access_lines() if entry["logger"] == "flashcart.access"]
    assert (line["status"], line["user_id"]) == (503, None)


def test_the_access_record_goes_through_the_logger_as_configured(client, caplog):
    with caplog.at_level(logging.INFO, logger="flashcart.access"):
        client.get("/healthz")
    (record,) = [entry for entry in caplog.records if entry.name == "flashcart.access"]
    assert (record.module, record.funcName, record.levelname) == ("logs", "_finish", "INFO")
    assert re.fullmatch(r"GET /healthz 200 \d+\.\d\dms", record.getMessage())

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flashcart.access"):
        client.get("/healthz")
    assert [entry for entry in caplog.records if entry.name == "flashcart.access"] == []


def test_a_callers_request_id_is_kept_and_returned(client, access_lines):
    response = client.get("/healthz", headers={"X-Request-ID": "edge-1234:abc"})
    assert response.headers["X-Request-ID"] == "edge-1234:abc"
    assert access_lines()[-1]["request_id"] == "edge-1234:abc"


def test_a_request_answered_before_it_got_its_id_is_logged_with_one(app, client, access_lines):
    app.before_request_funcs.setdefault(None, []).insert(0, lambda: ("early", 418))

    response = client.get("/healthz", headers={"X-Request-ID": "early-1"})

    assert response.status_code == 418
    assert response.headers["X-Request-ID"] == "early-1"
    (line,) = [entry for entry in access_lines() if entry["logger"] == "flashcart.access"]
    assert line["status"] == 418 and line["request_id"] == "early-1"
    assert line["duration_ms"] >= 0


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ('abc <script>"x"; y', "abcscriptxy"),
        ("x" * 500, "x" * logs.MAX_REQUEST_ID),
    ],
)
def test_a_request_id_is_sanitised_and_capped(client, sent, kept):
    response = client.get("/healthz", headers={"X-Request-ID": sent})
    assert response.headers["X-Request-ID"] == kept


def test_a_missing_or_unusable_request_id_is_generated(client):
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz", headers={"X-Request-ID": "\x7f!!"}).headers["X-Request-ID"]
    assert len(first) == 32 and len(second) == 32 and first != second


def test_passwords_and_tokens_never_reach_the_logs(client, user, access_lines):
    login = client.post("/api/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
    token = login.json["access_token"]
    client.get("/api/v1/orders", headers={"Authorization": f"Bearer {token}"})
    client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": "wrong-" + PASSWORD}
    )

    written = json.dumps(access_lines())
    assert PASSWORD not in written
    assert token not in written
    assert "Bearer" not in written


def test_an_unhandled_error_is_logged_once_with_its_stack_and_request_id(
    app, client, make_product, monkeypatch, access_lines, user_headers
):
    from flashcart.products import service

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "list_products", broken)
    response = client.get("/api/v1/products", headers={"X-Request-ID": "trace-1", **user_headers})

    assert response.status_code == 500
    assert response.json["code"] == "internal_error"
    assert "boom" not in response.get_data(as_text=True)
    errors = [entry for entry in access_lines() if entry["level"] == "ERROR"]
    assert len(errors) == 1
    assert "RuntimeError: boom" in errors[0]["exc_info"]
    assert errors[0]["request_id"] == "trace-1"
    assert user_headers["Authorization"].split()[1] not in json.dumps(access_lines())


FORGED = "FORGED-LINE 2026-11-30 12:00:00 INFO flashcart.access [-]: GET / 200"
# Each ends a line for some reader (str.splitlines knows them all), or rewrites a terminal.
LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x1b[2K\r"]
TEXT_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ flashcart\.[a-z.]+ \[")


def records(log_format):
    """The records written, one per line as read with str.splitlines: parsed JSON
    objects, or text lines (with a stack trace's indented lines joined to them)."""
    fmt, stream = log_format
    lines = stream.getvalue().splitlines()
    if fmt == "json":
        return [json.loads(line) for line in lines]
    written = []
    for line in lines:
        if line.startswith(logs.TRACE_INDENT):
            written[-1] += "\n" + line
        else:
            assert TEXT_RECORD.match(line), f"a line that is not a record: {line!r}"
            written.append(line)
    return written


@pytest.fixture
def behind_a_proxy(app_config):
    """The app trusts one proxy: X-Forwarded-For becomes the logged client address."""
    app_config["TRUSTED_PROXIES"] = 1


def test_a_client_cannot_forge_a_log_line_with_its_path_or_headers(
    behind_a_proxy, client, log_format
):
    for line_break in LINE_BREAKS:
        client.get(
            f"/api/v1/orders/x{quote(line_break)}{quote(FORGED)}",
            # Raw in the WSGI environ: the test client refuses CR and LF in headers.
            environ_overrides={
                "HTTP_X_FORWARDED_FOR": f"198.51.100.7{line_break}{FORGED}",
                "HTTP_X_REQUEST_ID": f"id{line_break}{FORGED}",
            },
        )

    written = records(log_format)
    assert len(written) == len(LINE_BREAKS)
    for line_break, record in zip(LINE_BREAKS, written, strict=True):
        if log_format[0] == "json":
            assert record["path"] == f"/api/v1/orders/x{line_break}{FORGED}"
            assert record["remote_addr"] == f"198.51.100.7{line_break}{FORGED}"
        else:
            escaped = logs.escape_controls(line_break)
            assert f"GET /api/v1/orders/x{escaped}{FORGED} " in record


def test_an_error_carrying_client_input_cannot_forge_a_log_line(
    client, monkeypatch, log_format, user_headers
):
    from flashcart.products import service

    def broken(**kwargs):
        raise RuntimeError(f"boom\n{FORGED}\r{FORGED}\u2028{FORGED}")

    monkeypatch.setattr(service, "list_products", broken)
    assert client.get("/api/v1/products", headers=user_headers).status_code == 500

    error, access = records(log_format)
    if log_format[0] == "json":
        assert f"RuntimeError: boom\n{FORGED}\r{FORGED}\u2028{FORGED}" in error["exc_info"]
        assert access["status"] == 500
    else:
        assert "ERROR flashcart.errors" in error and "RuntimeError: boom" in error
        assert f"\n{logs.TRACE_INDENT}{FORGED}\\r{FORGED}\\u2028{FORGED}" in error
        assert "GET /api/v1/products 500" in access


def test_logging_is_configured_once_however_many_apps_are_built():
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        for _ in range(3):
            logs.configure("INFO", "json")
        ours = [h for h in root.handlers if isinstance(h, logs.StderrHandler)]
        assert len(ours) == 1
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)


# -- readiness -----------------------------------------------------------------


def test_readyz_is_ready_when_both_stores_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready"}


def test_readyz_answers_503_quickly_when_redis_does_not(mongo_db, redis_client):
    config = app_settings() | {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "READY_TIMEOUT_SECONDS": 0.3,
    }
    client = create_app(config, db=mongo_db).test_client()

    started = time.monotonic()
    response = client.get("/readyz")

    assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert response.json["code"] == "redis_unavailable"
    assert int(response.headers["Retry-After"]) > 0


def test_readyz_answers_503_within_its_timeout_when_mongodb_does_not(redis_client, app_config):
    config = (
        app_settings()
        | app_config
        | {
            "MONGO_URI": f"mongodb://127.0.0.1:{free_port()}/flashcart",
            "READY_TIMEOUT_SECONDS": 0.3,
        }
    )
    client = create_app(config, redis_client=redis_client).test_client()

    started = time.monotonic()
    response = client.get("/readyz")

    assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert response.json["code"] == "database_unavailable"


def test_probes_and_metrics_are_never_rate_limited(mongo_db, redis_client, app_config):
    config = (
        app_settings()
        | app_config
        | {"RATELIMIT_ENABLED": True, "RATELIMIT_GLOBAL": "2 per minute"}
    )
    client = create_app(config, db=mongo_db, redis_client=redis_client).test_client()
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_holds_and_units_sold_are_gauges_per_product_in_a_sale(
    client, make_product, make_user, headers_for
):
    product = make_product(live=True, stock=7, per_user_limit=3)
    reserve = f"/api/v1/sales/reserve/{product['id']}"
    holder, buyer = headers_for(make_user()), headers_for(make_user())
    assert client.post(reserve, json={"quantity": 2}, headers=holder).status_code == 201
    held = client.post(reserve, json={"quantity": 3}, headers=buyer).json
    placed = client.post("/api/v1/orders", json={"reservation_id": held["id"]}, headers=buyer)
    assert placed.status_code == 201

    samples = scrape(client)

    assert value(samples, "flashcart_stock_available", product_id=product["id"]) == 2
    assert value(samples, "flashcart_holds", product_id=product["id"]) == 1
    assert value(samples, "flashcart_units_sold", product_id=product["id"]) == 3


def test_stores_up_says_which_store_answers(client, mongo_db):
    samples = scrape(client)
    assert value(samples, "flashcart_store_up", store="redis") == 1
    assert value(samples, "flashcart_store_up", store="mongodb") == 1

    down = create_app(
        app_settings()
        | {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_TIMEOUT_SECONDS": 0.2},
        db=mongo_db,
    )
    samples = scrape(down.test_client())
    assert ("flashcart_store_up", (("store", "redis"),)) in samples
    assert value(samples, "flashcart_store_up", store="redis") == 0
    assert value(samples, "flashcart_store_up", store="mongodb") == 1


def test_gauges_read_together_share_one_read_and_one_failure_per_scrape(app):
    from flashcart import metrics

    calls = []

    def failing():
        calls.append(1)
        raise redis.exceptions.ConnectionError("away")

    with app.test_request_context("/metrics"):
        for _ in range(3):
            with pytest.raises(redis.exceptions.ConnectionError):
                metrics.once_per_scrape("report", failing)
        assert metrics.once_per_scrape("stock", lambda: {"p": 1}) == {"p": 1}
        assert metrics.once_per_scrape("stock", lambda: {"p": 2}) == {"p": 1}
    assert len(calls) == 1
    # The next scrape reads again.
    with app.test_request_context("/metrics"), pytest.raises(redis.exceptions.ConnectionError):
        metrics.once_per_scrape("report", failing)
    assert len(calls) == 2


# -- the sweeper's report ----------------------------------------------------------


def test_the_sweeper_reports_each_pass_and_its_audit_to_metrics(
    app, client, runner, make_product, redis_client
):
    product = make_product(live=True, stock=5)
    assert not [name for name, _ in scrape(client) if "sweeper" in name or "audit" in name]
    before = time.time()

    assert runner.invoke(args=["sweep"]).exit_code == 0

    samples = scrape(client)
    last_pass = value(samples, "flashcart_sweeper_last_pass_timestamp_seconds")
    audited = value(samples, "flashcart_audit_timestamp_seconds")
    assert before <= audited <= last_pass <= time.time()
    figures = {
        name: value(samples, f"flashcart_audit_{name}", product_id=product["id"])
        for name in ("drift_units", "oversold_units", "users_over_limit", "ok")
    }
    assert figures == {"drift_units": 0, "oversold_units": 0, "users_over_limit": 0, "ok": 1}

    # Within SWEEP_AUDIT_SECONDS a pass reports itself, without auditing again.
    assert runner.invoke(args=["sweep"]).exit_code == 0
    samples = scrape(client)
    assert value(samples, "flashcart_sweeper_last_pass_timestamp_seconds") > last_pass
    assert value(samples, "flashcart_audit_timestamp_seconds") == audited


def test_a_sale_redis_lost_is_rebuilt_before_the_audit_reports_it(
    app, client, runner, make_product, redis_client
):
    product = make_product(live=True, stock=5)
    redis_client.flushdb()  # Redis lost everything (its report too: an audit is due)

    swept = runner.invoke(args=["sweep"])

    assert swept.exit_code == 0 and "sales_rebuilt=1" in swept.output
    samples = scrape(client)
    assert value(samples, "flashcart_audit_ok", product_id=product["id"]) == 1
    assert value(samples, "flashcart_audit_drift_units", product_id=product["id"]) == 0
    assert value(samples, "flashcart_stock_available", product_id=product["id"]) == 5


def test_the_audit_reports_drift_the_sweeper_cannot_mend(
    app, client, runner, make_product, redis_client, user_headers, mongo_db
):
    product = make_product(live=True, stock=5, per_user_limit=5)
    reserved = client.post(
        f"/api/v1/sales/reserve/{product['id']}", json={"quantity": 4}, headers=user_headers
    )
    assert reserved.status_code == 201
    redis_client.incrby(Keys(product["id"]).stripe(0), 3)  # units nothing explains
    # MongoDB's stock falls below the units held: no rebuild can keep the hold.
    mongo_db.products.update_one({"_id": ObjectId(product["id"])}, {"$set": {"stock": 3}})

    assert runner.invoke(args=["sweep"]).exit_code == 0

    samples = scrape(client)
    assert value(samples, "flashcart_audit_ok", product_id=product["id"]) == 0
    assert value(samples, "flashcart_audit_drift_units", product_id=product["id"]) == 5


def test_no_audit_when_the_sweeper_is_told_not_to(app, client, runner, make_product):
    make_product(live=True)
    app.config["SWEEP_AUDIT_SECONDS"] = 0

    assert runner.invoke(args=["sweep"]).exit_code == 0

    names = {name for name, _ in scrape(client)}
    assert "flashcart_sweeper_last_pass_timestamp_seconds" in names
    assert not [name for name in names if name.startswith("flashcart_audit_")]


def test_drift_seen_once_is_looked_at_again_before_it_is_reported(
    app, client, make_product, monkeypatch
):
    from flashcart.checkout import recovery

    product = make_product(live=True, stock=5)
    with app.app_context():
        true_rows = recovery.audit()
        # A checkout between two of the audit's reads: drift on the first look only.
        caught_mid_checkout = [{**row, "drift": 1, "ok": False} for row in true_rows]
        monkeypatch.setattr(recovery, "audit", lambda **_: caught_mid_checkout)
        recovery.report_pass()

    samples = scrape(client)
    assert value(samples, "flashcart_audit_ok", product_id=product["id"]) == 1
    assert value(samples, "flashcart_audit_drift_units", product_id=product["id"]) == 0
