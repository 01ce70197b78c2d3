"""Prometheus metrics, served at /metrics.

Under gunicorn every worker is its own process, so the counters live in files:
gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR, each worker writes its samples
there, /metrics adds up every worker's, and the `child_exit` hook marks dead
workers. Without that variable (`flask run`, tests) the process's own registry is
served.

Gauges are read when Prometheus scrapes, not counted as values change: a domain
registers a callback with `register_gauge` (sales: live stock, holds and units sold,
one cheap Redis read per product on sale; health: the stores' pings; checkout: the
sweeper's report). They are exact at scrape time, cost nothing on the hot path
and need no cross-worker gauge. This module imports no domain: domains call it.
"""

import functools
import logging
import os
import time

import pymongo.errors
import redis.exceptions
from flask import Blueprint, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)
# The `_created` timestamp series only double the output; rate() does not need them.
disable_created_metrics()

REQUESTS = Counter(
    "flashcart_http_requests",
    "HTTP requests by method, endpoint (the URL rule) and status.",
    ["method", "endpoint", "status"],
)
LATENCY = Histogram(
    "flashcart_http_request_duration_seconds",
    "Time to answer HTTP requests, by method, endpoint (the URL rule) and status.",
    ["method", "endpoint", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RESERVATIONS = Counter(
    "flashcart_reservations",
    "Reservation attempts by outcome: ok, or the error code (sold_out, limit_exceeded, busy...).",
    ["outcome"],
)
WATCH_RETRIES = Counter(
    "flashcart_watch_retries",
    "WATCH/MULTI transactions run again because another client changed a watched key.",
)
HOLDS_RETURNED = Counter(
    "flashcart_holds_returned",
    "Holds whose units went back on sale, by reason (expired).",
    ["reason"],
)
UNITS_RETURNED = Counter(
    "flashcart_held_units_returned",
    "Units that went back on sale from holds, by reason (expired).",
    ["reason"],
)
ORDERS = Counter(
    "flashcart_orders",
    "Orders by the state they reached: placed, failed (hold expired), cancelled.",
    ["status"],
)
EVENTS_PUBLISHED = Counter(
    "flashcart_events_published",
    "Events published to the feed, by type (order.placed, sale.sold_out...).",
    ["type"],
)

WEBHOOK_DELIVERIES = Counter(
    "flashcart_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered, retried (failed, tried again "
    "later), failed (out of attempts, waits for a replay). Counted by `flask deliver`.",
    ["outcome"],
)

blp = Blueprint("metrics", __name__)
STORE_ERRORS = (redis.exceptions.RedisError, pymongo.errors.PyMongoError)


@functools.cache
def _series(metric, *label_values):
    """`metric`'s series for these label values, asked of prometheus_client once: its
    `labels()` checks and locks on every call, and every request counts two. The
    label values are few (methods, URL rules, statuses, outcomes)."""
    return metric.labels(*label_values)


def reservation(outcome):
    _series(RESERVATIONS, outcome).inc()


def holds_returned(units, reason="expired"):
    HOLDS_RETURNED.labels(reason=reason).inc()
    UNITS_RETURNED.labels(reason=reason).inc(units)


def order(status):
    ORDERS.labels(status=status).inc()


def event_published(event_type):
    EVENTS_PUBLISHED.labels(type=event_type).inc()


def webhook_delivery(outcome):
    WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()


def init_app(app):
    app.extensions["flashcart.metrics.gauges"] = {}
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(blp)


def _start_timer():
    g.metrics_started = time.perf_counter()


def _observe(response):
    started = g.get("metrics_started")
    if started is None:  # a before_request hook ahead of ours answered
        started = time.perf_counter()
    endpoint = request.url_rule.rule if request.url_rule else "<unmatched>"
    labels = (request.method, endpoint, str(response.status_code))
    _series(REQUESTS, *labels).inc()
    _series(LATENCY, *labels).observe(time.perf_counter() - started)
    return response


def register_gauge(app, name, documentation, label, read):
    """Serve `name` at /metrics: `read()` (in the app's context) returns {label value:
    number}, once per scrape; with `label` None, one number (or None: no sample). A
    domain registers what it measures; metrics knows none."""
    app.extensions["flashcart.metrics.gauges"][name] = (documentation, label, read)


def once_per_scrape(name, read):
    """`read()`'s answer, kept for the rest of this scrape under `name`: several gauges
    from one read. A store's error is kept too (and raised again), so a store that is
    away costs one timeout per scrape, not one per gauge."""
    cache = g.setdefault("metrics_read_once", {})
    if name not in cache:
        try:
            cache[name] = read()
        except STORE_ERRORS as error:
            cache[name] = error
    if isinstance(cache[name], STORE_ERRORS):
        raise cache[name]
    return cache[name]


class _GaugeReadAtScrape:
    def __init__(self, name, documentation, label, values):
        if label is None:
            self.family = GaugeMetricFamily(name, documentation)
            if values is not None:
                self.family.add_metric([], values)
            return
        self.family = GaugeMetricFamily(name, documentation, labels=[label])
        for label_value, value in sorted(values.items()):
            self.family.add_metric([label_value], value)

    def collect(self):
        yield self.family


def _gauges_registry():
    registry = CollectorRegistry()
    gauges = current_app.extensions["flashcart.metrics.gauges"]
    for name, (documentation, label, read) in gauges.items():
        try:
            registry.register(_GaugeReadAtScrape(name, documentation, label, read()))
        except STORE_ERRORS as error:
            log.warning("metrics: %s unavailable: %s", name, error)
    return registry


@blp.route("/metrics", methods=["GET"])
def metrics():
    """Prometheus text exposition: this process's or all workers' samples, plus gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry) + generate_latest(_gauges_registry())
    return Response(body, content_type=CONTENT_TYPE_LATEST)
