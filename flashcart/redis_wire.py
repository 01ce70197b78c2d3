"""Several Redis commands in one round trip, without redis-py's per-command layers.

redis-py packs each command through its encoder and passes each reply through
response callbacks; on the hot paths that cost more client CPU than Redis spends
answering. Packing with hiredis (redis-py's own C packer) and reading raw replies
halved a reservation's client CPU (docs/performance.md). Callers get raw replies:
strings (the clients decode responses), integers, lists and None.
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
    """Run read `commands` (no transaction) in one round trip; returns their replies.

    Retried on a lost connection as the connection's Retry says, like a redis-py
    command (reads only: a write could run twice). A Redis Cluster client takes its
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
