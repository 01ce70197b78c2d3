"""The stores' clients under a threaded worker: a thread making sure of MongoDB's
indexes, slow while MongoDB is down, holds up no Redis work and MongoDB work no
longer than one MongoDB timeout (flashcart/stores.py)."""

import contextlib
import threading
import time

import pymongo.errors

from flashcart import create_app
from flashcart.extensions import stores
from tests.support.app import app_settings

# Nothing listens on either: a client is built without connecting.
UNREACHABLE_MONGO = "mongodb://127.0.0.1:9/flashcart"
UNUSED_REDIS = "redis://127.0.0.1:9/0"
SERVER_SELECTION_MS = 1500


def test_a_thread_waiting_on_a_mongodb_that_is_down_holds_up_no_redis_work():
    app = create_app(
        {
            **app_settings(),
            "MONGO_URI": UNREACHABLE_MONGO,
            "REDIS_URL": UNUSED_REDIS,
            "MONGO_TIMEOUT_MS": SERVER_SELECTION_MS,
        }
    )

    def first_request():
        with app.app_context(), contextlib.suppress(pymongo.errors.PyMongoError):
            stores.db  # noqa: B018 - makes sure of the indexes: waits out server selection

    first = threading.Thread(target=first_request)
    first.start()
    time.sleep(0.3)  # the first thread is now waiting for a MongoDB server
    try:
        with app.app_context():
            started = time.monotonic()
            stores.redis  # noqa: B018
            took = time.monotonic() - started
    finally:
        first.join(10)
    assert not first.is_alive()
    assert took < 0.3, f"held up {took:.2f} s by the first thread's index check"


def test_threads_wait_at_most_one_mongodb_timeout_for_another_ones_index_check():
    app = create_app(
        {
            **app_settings(),
            "MONGO_URI": UNREACHABLE_MONGO,
            "REDIS_URL": UNUSED_REDIS,
            "MONGO_TIMEOUT_MS": SERVER_SELECTION_MS,
        }
    )
    took = []

    def request():
        with app.app_context():
            started = time.monotonic()
            with contextlib.suppress(pymongo.errors.PyMongoError):
                stores.db.products.find_one()
            took.append(time.monotonic() - started)

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # One after another, the sixth would wait out five tries (about 7.5 s) before its own.
    assert len(took) == 6
    assert max(took) < 3 * SERVER_SELECTION_MS / 1000 + 0.5, took
