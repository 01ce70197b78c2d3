"""A gunicorn worker is forked from the master that built the app (preload_app): it
must open its own MongoDB and Redis clients, and keep the embedded in-memory stores,
which are the data itself. One `os.register_at_fork` hook in flashcart/stores.py."""

import os

from config import MEMORY_URI
from flashcart import create_app
from flashcart.extensions import stores
from tests.support.app import app_settings

# Nothing listens there: building a client does not connect, and nothing is sent.
UNUSED_REDIS = "redis://127.0.0.1:9/0"


def in_a_forked_child(check):
    """Run `check()` in a forked child; True if it returned True there."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(writer, b"1" if check() else b"0")
        finally:
            os._exit(0)
    os.close(writer)
    answer = os.read(reader, 1)
    os.waitpid(child, 0)
    os.close(reader)
    return answer == b"1"


def test_a_forked_child_opens_its_own_redis_client_and_keeps_the_in_memory_mongodb():
    app = create_app({**app_settings(), "MONGO_URI": MEMORY_URI, "REDIS_URL": UNUSED_REDIS})
    with app.app_context():
        parent_redis, parent_db = stores.redis, stores.db
        parent_db.products.insert_one({"name": "made before the fork"})

        def check():
            return (
                stores.redis is not parent_redis
                and stores.db is parent_db
                and stores.db.products.count_documents({}) == 1
            )

        assert in_a_forked_child(check)
        # The parent keeps its own.
        assert stores.redis is parent_redis


def test_a_forked_child_keeps_the_in_memory_redis():
    app = create_app({**app_settings(), "MONGO_URI": MEMORY_URI, "REDIS_URL": MEMORY_URI})
    with app.app_context():
        stores.redis.set("made-before-the-fork", "1")
        parent_redis = stores.redis
        assert in_a_forked_child(
            lambda: stores.redis is parent_redis and stores.redis.get("made-before-the-fork") == "1"
        )
