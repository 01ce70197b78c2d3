"""The sweeper's report: when it last finished a pass, and what its last audit found.

The sweeper is its own process, which Prometheus does not scrape; the API is. So the
sweeper keeps its report in one Redis hash and every API worker serves it at
/metrics: a pass that finishes writes its time; an audit, at most every
SWEEP_AUDIT_SECONDS (however many sweepers share the hash), replaces the figures of
every product in a sale. A product whose sale closed drops out at the next audit.
"""

import json
import time

from flask import current_app

from flashcart import metrics
from flashcart.extensions import stores

KEY = "fc:sweeper"  # one hash: last_pass, audited_at, audit (JSON by product id)
# The audit row's figures that /metrics serves, each as `flashcart_audit_<name>`.
FIGURES = {
    "drift_units": "Units Redis shows available minus what MongoDB's truth leaves "
    "(total - sold - held), per product in a sale, at the sweeper's last audit.",
    "oversold_units": "Units sold beyond the product's stock (MongoDB), at the last audit.",
    "users_over_limit": "Users who hold or bought more than the per-user limit, at the last audit.",
    "ok": "1 when the last audit found the product's sale consistent (what `flask audit` "
    "checks), 0 when it did not.",
}


def record_pass():
    """The sweeper finished a pass now."""
    stores.redis.hset(KEY, "last_pass", repr(time.time()))


def audit_due():
    """True when no sweeper has audited for SWEEP_AUDIT_SECONDS (0: never audit)."""
    every = current_app.config["SWEEP_AUDIT_SECONDS"]
    if not every:
        return False
    audited_at = stores.redis.hget(KEY, "audited_at")
    return audited_at is None or time.time() - float(audited_at) >= every


def record_audit(rows):
    """Replace the audit figures with `rows` (recovery.audit's report rows)."""
    figures = {
        row["product_id"]: {
            "drift_units": row["drift"],
            "oversold_units": row["oversold"],
            "users_over_limit": row["users_over_limit"],
            "ok": int(row["ok"]),
        }
        for row in rows
    }
    stores.redis.hset(KEY, mapping={"audited_at": repr(time.time()), "audit": json.dumps(figures)})


def read():
    """The report as stored: {"last_pass": float, "audited_at": float, "audit": {product
    id: figures}}, the fields a sweeper has written so far (read once per scrape)."""
    return metrics.once_per_scrape("sweeper", _stored)


def _stored():
    stored = stores.redis.hgetall(KEY)
    report = {name: float(stored[name]) for name in ("last_pass", "audited_at") if name in stored}
    report["audit"] = json.loads(stored.get("audit", "{}"))
    return report


def init_app(app):
    """Serve the report at /metrics (the sweeper's liveness and its audit figures)."""
    metrics.register_gauge(
        app,
        "flashcart_sweeper_last_pass_timestamp_seconds",
        "When a sweeper last finished a pass (Unix time); absent until one has.",
        None,
        lambda: read().get("last_pass"),
    )
    metrics.register_gauge(
        app,
        "flashcart_audit_timestamp_seconds",
        "When a sweeper last audited the sales (Unix time); SWEEP_AUDIT_SECONDS apart.",
        None,
        lambda: read().get("audited_at"),
    )
    for name, documentation in FIGURES.items():
        metrics.register_gauge(
            app,
            f"flashcart_audit_{name}",
            documentation,
            "product_id",
            lambda name=name: {p: row[name] for p, row in read()["audit"].items()},
        )
