"""redis_wire: the hot paths' raw round trips, on the real redis-server."""

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from flashcart import redis_wire


@pytest.fixture
def one_connection(redis_server):
    """A client whose pool has a single connection: what one call leaves, the next gets."""
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    pool = redis.BlockingConnectionPool.from_url(
        redis_server.url,
        max_connections=1,
        decode_responses=True,
        retry=Retry(NoBackoff(), 3),  # as the app's client retries (stores.connect_redis)
    )
    client = redis.Redis(connection_pool=pool)
    client.flushdb()
    yield client
    pool.disconnect()


def test_replies_come_back_in_order(one_connection):
    one_connection.set("a", "1")

    replies = redis_wire.query(one_connection, [("GET", "a"), ("EXISTS", "b"), ("MGET", "a", "b")])

    assert replies == ["1", 0, ["1", None]]


def test_without_hiredis_redis_py_packs_the_same_commands(one_connection, monkeypatch):
    monkeypatch.setattr(redis_wire, "_pack_command", None)
    one_connection.set("a", "1")

    assert redis_wire.query(one_connection, [("GET", "a"), ("GET", "b")]) == ["1", None]


def test_a_read_whose_connection_drops_is_retried(one_connection, monkeypatch):
    one_connection.set("a", "1")
    connection = one_connection.connection_pool.get_connection()
    one_connection.connection_pool.release(connection)
    send, failures = connection.send_packed_command, []

    def drop_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise redis.ConnectionError("connection reset by peer")
        return send(*args, **kwargs)

    monkeypatch.setattr(connection, "send_packed_command", drop_once)

    assert redis_wire.query(one_connection, [("GET", "a")]) == ["1"]
    assert failures == [1]


def test_a_command_that_cannot_be_sent_drops_the_connection(one_connection):
    connection = one_connection.connection_pool.get_connection()
    connection.send_command("WATCH", "a")
    assert connection.read_response() in ("OK", b"OK")

    with pytest.raises(TypeError):
        redis_wire.round_trip(connection, [("SET", "a", object())])  # not packable

    assert connection._sock is None  # the WATCH went with it
    one_connection.connection_pool.release(connection)
    assert one_connection.get("a") is None
