"""The sweeper and the webhook deliverer as threads of the serving process: on the
embedded in-memory stores only (`make run`, `make dev`), never for real stores or
under test, and once per process. (`make run` end to end: tests/system/test_make_run_workers.py.)"""

import threading

import pytest

from config import MEMORY_URI
from flashcart import create_app
from flashcart.bootstrap import start_embedded_workers, stop_embedded_workers
from flashcart.checkout import report
from tests.support.processes import wait_for


def embedded_threads():
    return [t for t in threading.enumerate() if t.name.startswith("embedded-")]


def last_pass(app):
    with app.app_context():  # a new context each time: the report is read once per context
        return report.read().get("last_pass")


@pytest.fixture
def embedded():
    app = create_app({"ENV_NAME": "development"})  # both stores in memory: `make run`
    yield app
    stop_embedded_workers(app)
    for thread in embedded_threads():
        thread.join(timeout=10)


def test_the_embedded_stores_run_the_sweeper_and_the_deliverer_once_per_process(embedded):
    threads = start_embedded_workers(embedded)

    assert sorted(t.name for t in threads) == ["embedded-deliver", "embedded-sweep"]
    assert all(t.daemon and t.is_alive() for t in threads)
    assert start_embedded_workers(embedded) == [], "a second start (same process) starts none"
    assert wait_for(lambda: last_pass(embedded), "the sweeper's first pass")


def test_stopped_workers_end_after_their_pass(embedded):
    threads = start_embedded_workers(embedded)
    stop_embedded_workers(embedded)
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads)


def test_settings_that_deliver_nothing_leave_the_deliverer_off_and_say_why(caplog):
    app = create_app({"ENV_NAME": "development", "WEBHOOKS_LEASE_SECONDS": 5})
    threads = []
    try:
        threads += start_embedded_workers(app)
        assert [t.name for t in threads] == ["embedded-sweep"]
        assert "the embedded webhook deliverer does not run: WEBHOOKS_LEASE_SECONDS" in caplog.text
    finally:
        stop_embedded_workers(app)
        for thread in threads:
            thread.join(timeout=10)


def test_no_workers_under_test(app):
    assert app.config["TESTING"]
    assert start_embedded_workers(app) == []
    assert embedded_threads() == []


def test_no_workers_beside_a_real_store(redis_server):
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    # The benchmark's pairing: MongoDB in memory, a real Redis. Real stores have
    # `flask sweep` and `flask deliver` beside them.
    paired = create_app(
        {"ENV_NAME": "development", "MONGO_URI": MEMORY_URI, "REDIS_URL": redis_server.url}
    )
    assert not paired.config["TESTING"]
    assert start_embedded_workers(paired) == []
    assert embedded_threads() == []
