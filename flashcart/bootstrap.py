"""Demo data on the embedded in-memory backends, made when the app is built.

A command in another process cannot reach in-memory data, so the embedded demo is
seeded in the app's own process. Real MongoDB and Redis are never touched here:
`flask init` prepares them, before the API starts.
"""

import logging

from config import MEMORY_URI
from flashcart import demo
from flashcart.auth import service as accounts

log = logging.getLogger("flashcart")


def run(app):
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
