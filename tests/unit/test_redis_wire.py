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


# watch_and_read and exec_packed set redis-py's Pipeline.connection and .watching
# themselves; these pin the redis-py behaviour that relies on.


@pytest.fixture
def rival(redis_server):
    """Another client, on its own connection: a write from another worker."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def test_a_packed_transaction_runs_on_the_connection_that_watched(one_connection):
    one_connection.set("a", "1")
    with one_connection.pipeline() as pipe:
        [value, watcher] = redis_wire.watch_and_read(pipe, ["a"], [("GET", "a"), ("CLIENT", "ID")])
        results = redis_wire.exec_packed(pipe, [("SET", "a", "2"), ("CLIENT", "ID")])

    assert value == "1" and results == ["OK", watcher]
    assert one_connection.client_id() == watcher  # back in the pool, and reused
    assert one_connection.get("a") == "2"


def test_a_watched_key_another_client_changes_fails_the_transaction(one_connection, rival):
    one_connection.set("a", "1")
    with one_connection.pipeline() as pipe:
        redis_wire.watch_and_read(pipe, ["a"], [("GET", "a")])
        rival.set("a", "rival")
        with pytest.raises(redis.WatchError):
            redis_wire.exec_packed(pipe, [("SET", "a", "mine")])

    assert one_connection.get("a") == "rival"


def test_a_pipeline_left_without_exec_unwatches_its_connection(one_connection, rival):
    with one_connection.pipeline() as pipe:
        redis_wire.watch_and_read(pipe, ["a"], [("GET", "a")])
    rival.set("a", "changed")  # would fail the next EXEC if the WATCH still stood

    # The pool's one connection, in a transaction that watches nothing.
    with one_connection.pipeline() as pipe:
        pipe.set("b", "1")
        assert pipe.execute() == [True]


def test_an_error_reply_inside_exec_is_raised(one_connection):
    one_connection.set("text", "not a number")
    with one_connection.pipeline() as pipe:
        redis_wire.watch_and_read(pipe, ["text"], [("GET", "text")])
        with pytest.raises(redis.ResponseError):
            redis_wire.exec_packed(pipe, [("SET", "b", "1"), ("INCR", "text")])

    assert one_connection.get("b") == "1"  # EXEC ran the rest, as Redis does


def test_wait_follows_exec_in_the_same_round_trip_and_says_how_many_replicas_had_it(
    one_connection, monkeypatch
):
    connection = one_connection.connection_pool.get_connection()
    one_connection.connection_pool.release(connection)
    send, sends = connection.send_packed_command, []

    def counted(*args, **kwargs):
        sends.append(1)
        return send(*args, **kwargs)

    monkeypatch.setattr(connection, "send_packed_command", counted)
    with one_connection.pipeline() as pipe:
        redis_wire.watch_and_read(pipe, ["a"], [("GET", "a")])
        sends.clear()
        # No replica here: WAIT gives up after its 20 ms and counts none.
        acked = redis_wire.exec_and_wait(pipe, [("SET", "a", "1")], 1, 20, mark="unused")

    assert (acked, sends) == (0, [1])
    assert one_connection.get("a") == "1"


def test_wait_after_a_failed_exec_still_raises_watch_error(one_connection, rival):
    with one_connection.pipeline() as pipe:
        redis_wire.watch_and_read(pipe, ["a"], [("GET", "a")])
        rival.set("a", "rival")
        with pytest.raises(redis.WatchError):
            redis_wire.exec_and_wait(pipe, [("SET", "a", "mine")], 1, 20, mark="unused")

    assert one_connection.get("a") == "rival"
