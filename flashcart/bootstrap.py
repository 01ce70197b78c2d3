"""The embedded in-memory backends' demo data and workers, started by the entry points.

A command in another process cannot reach in-memory data, so on the embedded stores
the serving process does what `flask seed-demo`, `flask sweep` and `flask deliver`
would: the demo is seeded right after the app is built (wsgi.py; under gunicorn in the
master, before the worker is forked from it), and the sweeper and the deliverer run
as threads of the process that serves (started by gunicorn's `post_worker_init`
hook, or under `make dev` by wsgi.py in the reloader's child: threads do not
survive a fork). These are steps of their own, not part of `create_app`, so an app
built by a test, a tool or a benchmark starts empty and idle. Real MongoDB and Redis
are never touched here: `flask init` prepares them, and the commands run beside.
"""

import logging
import os
import threading

from config import MEMORY_URI
from flashcart import companions, demo
from flashcart.auth import service as accounts
from flashcart.webhooks import deliverer

log = logging.getLogger("flashcart")
# app.extensions key: (the process whose workers run, the Event that stops them); a
# child forked from that process has none running.
WORKERS_KEY = "flashcart.embedded_workers"


def on_embedded_stores(app):
    """True when both stores are in memory and the app is not under test."""
    config = app.config
    # Both stores in memory (the benchmark pairs in-memory MongoDB with a real Redis,
    # which must not get demo sales).
    in_memory = config["MONGO_URI"] == MEMORY_URI and config["REDIS_URL"] == MEMORY_URI
    return in_memory and not config["TESTING"]


def seed_embedded_demo(app):
    """The demo admin and products on sale, when both stores are in memory (not under test)."""
    if not on_embedded_stores(app):
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


def start_embedded_workers(app):
    """On the embedded stores, run the sweeper (a pass every 5 s) and the webhook
    deliverer (every 1 s) in daemon threads of this process, once per process; the
    threads started, none elsewhere."""
    running = app.extensions.get(WORKERS_KEY)
    if not on_embedded_stores(app) or (running and running[0] == os.getpid()):
        return []
    stop = threading.Event()
    app.extensions[WORKERS_KEY] = (os.getpid(), stop)
    loops = [("sweep", companions.sweep_pass, companions.SWEEP_EVERY, companions.SWEEP_ERRORS)]
    problem = deliverer.settings_problem(app.config)
    if problem:
        log.error("the embedded webhook deliverer does not run: %s", problem)
    else:
        deliver = (companions.deliver_pass, companions.DELIVER_EVERY, companions.DELIVER_ERRORS)
        loops.append(("deliver", *deliver))
    threads = [
        threading.Thread(
            target=_loop,
            args=(app, name, one_pass, every, errors, stop),
            name=f"embedded-{name}",
            daemon=True,
        )
        for name, one_pass, every, errors in loops
    ]
    for thread in threads:
        thread.start()
    log.warning(
        "embedded stores: this process also runs %s (as `flask sweep --every 5` and "
        "`flask deliver --every 1` would beside real stores)",
        " and ".join(loop[0] for loop in loops),
    )
    return threads


def stop_embedded_workers(app):
    """Ask this process's embedded workers to stop after their current pass (tests)."""
    running = app.extensions.get(WORKERS_KEY)
    if running and running[0] == os.getpid():
        running[1].set()


def _loop(app, name, one_pass, every, errors, stop):
    with app.app_context():
        report = _reporter(name)
        companions.run(name, one_pass, every=every, errors=errors, report=report, stop=stop)


def _reporter(name):
    def report(done):
        # A pass that did something is worth a line; an idle one every second is not.
        log.log(logging.INFO if done else logging.DEBUG, "%s", companions.summary(name, done))

    return report
