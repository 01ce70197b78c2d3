"""Redis Cluster: `REDIS_URL=redis+cluster://host:port[,host:port...]`.

FlashCart runs on redis-py's `RedisCluster` through its public API (redis-py 8.1),
with one change the inventory engine needs:

A transactional pipeline (WATCH/MULTI/EXEC) never retries a command by itself.
redis-py would retry a failed WATCH-time read, or the EXEC, on a fresh connection:
the WATCH is gone with the old connection, so the transaction would commit
unguarded (and an EXEC that did run before its reply was lost would run twice).
So transactions come from a second `RedisCluster` of the same nodes, built with
the public options `retry=Retry(NoBackoff(), 0)` (no retry) and
`reinitialize_steps=1` (refresh the slot map on the first error), which its
public `pipeline(transaction=True)` hands to the pipeline. `Transaction` wraps
that pipeline: if a command failed before EXEC and the slot now lives on another
node (a failover, a moved slot), it raises WatchError: nothing was written, and
the engine runs the transaction again from its WATCH, on the new master, as it
does on one Redis. Otherwise (the node is just down, or EXEC itself failed and
may have run) the error reaches the caller: a 503, which clients retry.

Plain pipelines and single commands keep the client's own quick retries. A plain
pipeline reads several keys of one hash slot with `execute_command("MGET", ...)`
(redis_wire.query); redis-py routes it by slot (its `mget` method is blocked in
cluster pipelines, since keys could span slots; a product's keys never do: hash
tag `{p:<id>}`), and keys of several slots still fail loudly.

The URL takes any number of startup nodes (the client discovers the rest),
`user:password@` before them, and `rediss+cluster://` for TLS. A cluster has only
database 0.
"""

from urllib.parse import unquote

import redis
import redis.exceptions
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.commands import CoreCommands
from redis.retry import Retry

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS

# Errors that mean "not now": a node down, a failover or a slot move under way.
# The API answers them 503 redis_unavailable with Retry-After.
UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,  # CLUSTERDOWN, MASTERDOWN
    redis.exceptions.TryAgainError,  # a slot in migration
    redis.exceptions.AskError,  # and MovedError: a slot moved under a transaction
    redis.exceptions.SlotNotCoveredError,
)


def is_cluster_url(url):
    return url.partition("://")[0] in SCHEMES


def parse_url(url):
    """(startup nodes, client options) from a `redis+cluster://` URL."""
    scheme, _, rest = url.partition("://")
    if scheme not in SCHEMES or "?" in rest:
        raise ValueError(f"not a Redis Cluster URL (redis+cluster://host:port,...): {url!r}")
    rest, _, database = rest.partition("/")
    if database not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    auth, _, hosts = rest.rpartition("@")
    options = {"ssl": True} if SCHEMES[scheme] else {}
    if auth:
        username, _, password = auth.partition(":")
        options.update(username=unquote(username) or None, password=unquote(password) or None)
    nodes = []
    for address in filter(None, (item.strip() for item in hosts.split(","))):
        if address.startswith("["):  # [IPv6]:port
            host, _, port = address[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = address.partition(":")
        nodes.append(ClusterNode(host, int(port or 6379)))
    if not nodes:
        raise ValueError(f"no host:port in the Redis Cluster URL {url!r}")
    return nodes, options


def connect(url, timeout=2.0, **options):
    """A ClusterClient for `url`. Raises ConnectionError if no node answers."""
    nodes, url_options = parse_url(url)
    try:
        return ClusterClient(
            startup_nodes=nodes,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # A few quick retries (each after refreshing the slot map) ride out a
            # moved slot; a failover takes longer and gets a fast 503 instead of
            # keeping a worker waiting.
            retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.2), retries=3),
            **url_options,
            **options,
        )
    except redis.exceptions.RedisClusterException as error:
        # Raised when no startup node answers: the same outage as a refused connection.
        raise redis.exceptions.ConnectionError(str(error)) from error


def ping(client):
    """Every primary answers PING and the cluster says its state is ok."""
    client.ping(target_nodes=RedisCluster.PRIMARIES)
    state = client.cluster_info(target_nodes=RedisCluster.RANDOM).get("cluster_state")
    if state != "ok":
        raise redis.exceptions.ClusterDownError(f"cluster_state:{state}")
    return True


class ClusterClient(RedisCluster):
    """redis-py's RedisCluster whose transactions never retry by themselves (see above)."""

    def __init__(self, *, startup_nodes, **options):
        super().__init__(startup_nodes=startup_nodes, **options)
        try:
            # Its own ClusterNode objects: a client keeps its connections on them.
            self.transactions = RedisCluster(
                startup_nodes=[ClusterNode(node.host, node.port) for node in startup_nodes],
                **{**options, "retry": Retry(NoBackoff(), 0), "reinitialize_steps": 1},
            )
        except BaseException:
            super().close()
            raise

    def pipeline(self, transaction=None, shard_hint=None):
        if shard_hint:
            raise redis.exceptions.RedisClusterException("shard_hint is not used in a cluster")
        if transaction:
            return Transaction(self.transactions.pipeline(transaction=True))
        return super().pipeline(transaction=transaction)

    def close(self):
        if getattr(self, "transactions", None) is not None:
            self.transactions.close()
        super().close()


class Transaction(CoreCommands):
    """A transactional ClusterPipeline, used through its public methods.

    redis-py's command methods (`get`, `hmget`, `delete`...) come from its CoreCommands
    and send through `execute_command` here: a command that failed before EXEC, because
    its slot moved to another node, raises WatchError (nothing was written yet: after
    MULTI commands are only queued, and EXEC is `execute()`).
    """

    def __init__(self, pipe):
        self.pipe = pipe

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.pipe.reset()

    def __len__(self):
        return len(self.pipe)

    def __bool__(self):
        return True

    def execute_command(self, *args, **kwargs):
        return self._rerouted(args, self.pipe.execute_command, *args, **kwargs)

    def watch(self, *names):
        return self._rerouted(("WATCH", *names), self.pipe.watch, *names)

    def unwatch(self):
        return self.pipe.unwatch()

    def multi(self):
        self.pipe.multi()

    def execute(self, raise_on_error=True):
        return self.pipe.execute(raise_on_error)

    def reset(self):
        self.pipe.reset()

    def wait_for_replicas(self, mark, num_replicas, timeout_ms):
        """After EXEC: how many replicas of the slot's primary have the transaction
        within `timeout_ms` (WAIT, at most `num_replicas`).

        WAIT counts the writes of the connection it is sent on, and redis-py gave the
        transaction's connection back at EXEC; so one connection to the primary of
        `mark`'s slot writes `mark` (a short-lived key of that slot) and sends WAIT.
        The replication stream keeps its order: a replica that has the mark has the
        transaction before it. A slot that moved since answers MOVED: an error.
        """
        node = self.pipe.get_redis_connection(self.pipe.get_node_from_key(mark))
        with node.pipeline(transaction=False) as pipe:
            pipe.set(mark, 1, ex=60)
            pipe.wait(num_replicas, timeout_ms)
            return pipe.execute()[-1]

    def _rerouted(self, command, call, *args, **kwargs):
        node = self._node_of(command)
        try:
            return call(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.AskError) as error:
            now = self._node_of(command)
            if node is not None and now not in (None, node):
                raise redis.exceptions.WatchError(
                    f"slot moved from {node} to {now} while watching: run again"
                ) from error
            raise

    def _node_of(self, args):
        """The node now serving the slot of a keyed command, by the client's map."""
        if args[0] in ClusterPipeline.NO_SLOTS_COMMANDS:
            return None
        try:
            return self.pipe.nodes_manager.get_node_from_slot(self.pipe.determine_slot(*args)).name
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException):
            return None
