"""Demo data on the embedded in-memory backends, seeded by the entry point (wsgi.py).

A command in another process cannot reach in-memory data, so the embedded demo is
seeded in the serving process, right after the app is built: under gunicorn in the
master, before the worker is forked from it. It is a step of its own, not part of
`create_app`, so an app built by a test, a tool or a benchmark starts empty. Real
MongoDB and Redis are never touched here: `flask init` prepares them.
"""

import logging

from config import MEMORY_URI
from flashcart import demo
from flashcart.auth import service as accounts

log = logging.getLogger("flashcart")


def seed_embedded_demo(app):
    """The demo admin and products on sale, when both stores are in memory (not under test)."""
    config = app.config
    # Both stores in memory (the benchmark pairs in-memory MongoDB with a real Redis,
    # which must not get demo sales).
    in_memory = config["MONGO_URI"] == MEMORY_URI and config["REDIS_URL"] == MEMORY_URI
    if not in_memory or config["TESTING"]:
        return
    with app.app_context():
        accounts.ensure_admin(email=demo.DEMO_ADMIN_EMAIL, password=demo.DEMO_ADMIN_PASSWORD)
        product_ids = demo.seed_demo()
    log.warning(
        "running on the EMBEDDED IN-MEMORY backends (mongomock, fakeredis): data lives "
        "only in this process. Set MONGO_URI and REDIS_URL for real MongoDB/Redis."
    )
    log.warning(
        "demo admin: %s / %s; demo products on sale: %s",
        demo.DEMO_ADMIN_EMAIL,
        demo.DEMO_ADMIN_PASSWORD,
        ", ".join(product_ids),
    )
