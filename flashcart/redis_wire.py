"""Several Redis commands in one round trip, without redis-py's per-command layers.

redis-py packs each command through its encoder and passes each reply through
response callbacks; on the hot paths that cost more client CPU than Redis spends
answering. Packing with hiredis (redis-py's own C packer) and reading raw replies
halved a reservation's client CPU (docs/performance.md). Callers get raw replies:
strings (the clients decode responses), integers, lists and None.

`watch_and_read` and `exec_packed` (with its twin `exec_and_wait`) are the one place
the app uses redis-py's pipeline internals (`pipe.connection`, `pipe.watching`), for
the reservation's two round trips; tests/unit/test_redis_wire.py pins the redis-py
behaviour they rely on. They are kept because they pay: `make bench-cpu` put the
engine at 91 µs of client CPU per reservation with them and 209 µs through redis-py's
own watch/multi/execute (app reserve 1430 against 1658 µs), on the same busy box.
"""

import redis

try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is in requirements.txt
    _pack_command = None


def round_trip(connection, commands):
    """Send `commands` at once on `connection` and read their replies.

    On any failure replies may be left unread (or a WATCH left standing), so the
    connection is dropped rather than handed to the next caller.
    """
    try:
        if _pack_command is None:
            connection.send_packed_command(connection.pack_commands(commands))
        else:
            connection.send_packed_command([b"".join(map(_pack_command, commands))])
        return [connection.read_response() for _ in commands]
    except BaseException:
        connection.disconnect()
        raise


def query(client, commands):
    """Run `commands` (no transaction) in one round trip; returns their replies.

    Retried on a lost connection as the connection's Retry says, like a redis-py
    command, so a write could run twice: only reads, and writes that may (a
    rate-limit counter counting a request twice). A Redis Cluster client takes its
    own pipeline, which routes each command to the node owning its key.
    """
    if not isinstance(client, redis.Redis):
        if len(commands) == 1:
            return [client.execute_command(*commands[0])]
        with client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute()
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        return connection.retry.call_with_retry(
            lambda: round_trip(connection, commands), lambda _error: connection.disconnect()
        )
    finally:
        pool.release(connection)


def watch_and_read(pipe, watch_keys, reads):
    """WATCH `watch_keys` and run the read commands in one round trip.

    redis-py sends WATCH and then each read separately once a pipeline is watching
    (four round trips for a reservation instead of two). Packing them, this sets the
    pipeline's connection and its `watching` flag the way `Pipeline.watch` does, so
    that `exec_packed` sends EXEC there and a pipeline left without EXEC sends
    UNWATCH before it returns the connection to the pool. Other pipelines (Redis
    Cluster's) take the ordinary path.
    """
    if not isinstance(pipe, redis.client.Pipeline):
        pipe.watch(*watch_keys)
        return [pipe.execute_command(*command) for command in reads]
    connection = pipe.connection or pipe.connection_pool.get_connection()
    pipe.connection = connection
    replies = round_trip(connection, [("WATCH", *watch_keys), *reads])
    pipe.watching = True  # so that leaving without EXEC sends UNWATCH
    return replies[1:]


def exec_packed(pipe, commands):
    """MULTI, `commands`, EXEC in one round trip on the watching connection.

    `watch_and_read`'s twin: it skips redis-py's generic transaction bookkeeping.
    Raises WatchError if a watched key changed, and a command's error reply.
    """
    if not isinstance(pipe, redis.client.Pipeline) or pipe.connection is None:
        pipe.multi()
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()
    try:
        results = round_trip(pipe.connection, [("MULTI",), *commands, ("EXEC",)])[-1]
    finally:
        pipe.watching = False
    return _committed(results)


def exec_and_wait(pipe, commands, replicas, timeout_ms, mark):
    """`exec_packed`, then WAIT: returns how many replicas had the transaction within
    `timeout_ms` (at most `replicas`: WAIT returns as soon as that many have it).

    WAIT counts the replicas that have every write sent so far on the connection it
    is sent on, so it follows EXEC on the watching connection, in the same round trip
    (after a failed EXEC it waits for nothing new, and WatchError is raised as ever).
    A Redis Cluster transaction hands its connection back at EXEC: its
    `wait_for_replicas` writes `mark` (a key of the same slot) and sends WAIT on one
    connection to the slot's primary instead.
    """
    if not isinstance(pipe, redis.client.Pipeline):
        exec_packed(pipe, commands)
        return pipe.wait_for_replicas(mark, replicas, timeout_ms)
    wait = ("WAIT", replicas, timeout_ms)
    try:
        *_, results, acked = round_trip(pipe.connection, [("MULTI",), *commands, ("EXEC",), wait])
    finally:
        pipe.watching = False
    _committed(results)
    return acked


def _committed(results):
    """EXEC's replies, or the error: WatchError if a watched key changed."""
    if results is None:
        raise redis.WatchError("a watched key changed")
    for result in results:
        if isinstance(result, redis.ResponseError):
            raise result
    return results
