"""Start-up tasks: the configured admin, and demo data on the embedded backends."""

import logging

from config import MEMORY_URI
from flashcart import demo
from flashcart.auth import service as accounts
from flashcart.extensions import stores

log = logging.getLogger("flashcart")


def run(app):
    config = app.config
    # Both stores in memory (the benchmark pairs in-memory MongoDB with a real Redis,
    # which must not get demo sales).
    in_memory = config["MONGO_URI"] == MEMORY_URI and config["REDIS_URL"] == MEMORY_URI
    embedded = in_memory and not config["TESTING"]
    if not (embedded or config["ADMIN_EMAIL"]):
        return
    with app.app_context():
        if config["ADMIN_EMAIL"] and config["ADMIN_PASSWORD"]:
            accounts.ensure_admin(email=config["ADMIN_EMAIL"], password=config["ADMIN_PASSWORD"])
            log.info("admin %s is ready", config["ADMIN_EMAIL"])
        elif config["ADMIN_EMAIL"]:
            log.warning("ADMIN_EMAIL is set without ADMIN_PASSWORD; no admin created")
        if embedded:
            _embedded_demo(config)
        stores.close()


def _embedded_demo(config):
    # A CLI in another process cannot reach in-memory data, so the demo admin and
    # products are made here.
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
