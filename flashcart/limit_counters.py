"""Rate-limit counters: the `limits` library's fixed windows, kept in Redis.

A Redis outage must not turn every request into an error, nor lift the limits: while
Redis cannot be reached the counters are this process's memory, and Redis is tried
again after 1, 2, 4 ... up to 32 s.
"""

import logging
import threading
import time

import redis.exceptions
from limits import RateLimitItem
from limits.errors import StorageError
from limits.storage import (
    MemoryStorage,
    RedisClusterStorage,
    RedisStorage,
    Storage,
    storage_from_string,
)
from limits.strategies import FixedWindowRateLimiter

from flashcart import redis_cluster

log = logging.getLogger(__name__)
STORAGE_ERRORS = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,  # not a RedisError
    StorageError,
)
KEY_PREFIX = "fc:rl"
RETRY_SECONDS_MAX = 32


class Counters:
    """Hits and tests of rate limits, shared through the storage at `uri`."""

    def __init__(self, uri, timeout, *, the_apps_redis=False):
        """`the_apps_redis`: `uri` is the Redis the app's other commands go to, so
        they may count a window in their round trips (`key_of`)."""
        options = {}
        if redis_cluster.is_cluster_url(uri):
            options = {"ssl": True} if uri.startswith("rediss") else {}
            uri = ClusterCounters.STORAGE_SCHEME[0] + "://" + uri.partition("://")[2]
        if uri.startswith(("redis", ClusterCounters.STORAGE_SCHEME[0])):
            options |= {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        storage = storage_from_string(uri, **options)
        self._shared = FixedWindowRateLimiter(storage)
        self._key_prefix = None
        if the_apps_redis and isinstance(storage, RedisStorage):
            self._key_prefix = storage.key_prefix
        self._local = None  # made at the first outage (its storage starts a thread)
        # While Redis is away (a wait of 0: it is not): when it is tried again. A
        # worker's threads share these; one of them tries, the others count locally.
        self._lock = threading.Lock()
        self._wait_seconds = 0
        self._shared_again_at = 0.0

    def hit(self, item: RateLimitItem, *identifiers):
        """Count one request; False if it is one too many."""
        return self._count("hit", item, identifiers)

    def test(self, item: RateLimitItem, *identifiers):
        """Whether one more request would still be within the limit (counts nothing)."""
        return self._count("test", item, identifiers)

    def key_of(self, item: RateLimitItem, *identifiers):
        """The Redis key of a window, where another round trip to the app's Redis may
        count it (the limits library's fixed window: INCRBY, then an expiry if it has
        none); None where the counters are elsewhere, or in memory for an outage."""
        if self._key_prefix is None or self._wait_seconds:
            return None
        return f"{self._key_prefix}:{item.key_for(KEY_PREFIX, *identifiers)}"

    def seconds_to_reset(self, item: RateLimitItem, *identifiers):
        reset_at = self._count("get_window_stats", item, identifiers).reset_time
        return max(1, round(reset_at - time.time()))

    def _count(self, operation, item, identifiers):
        retrying = self._wait_seconds and self._claim_a_retry()
        if not self._wait_seconds or retrying:
            try:
                answer = getattr(self._shared, operation)(item, KEY_PREFIX, *identifiers)
            except STORAGE_ERRORS:
                self._shared_failed(retrying)
            else:
                if retrying:
                    self._shared_back()
                return answer
        return getattr(self._local, operation)(item, KEY_PREFIX, *identifiers)

    def _claim_a_retry(self):
        """Whether this thread is the one to try Redis again now."""
        with self._lock:
            now = time.monotonic()
            if not self._wait_seconds or now < self._shared_again_at:
                return False
            self._shared_again_at = now + self._wait_seconds  # the others wait
            return True

    def _shared_failed(self, retrying):
        with self._lock:
            if self._local is None:
                self._local = FixedWindowRateLimiter(MemoryStorage())
            if retrying:
                self._wait_seconds = min(RETRY_SECONDS_MAX, self._wait_seconds * 2)
            elif self._wait_seconds:
                return  # another request in flight found it away first
            else:
                self._wait_seconds = 1
                log.warning("rate-limit counters unreachable: counting in memory", exc_info=True)
            self._shared_again_at = time.monotonic() + self._wait_seconds

    def _shared_back(self):
        with self._lock:
            self._wait_seconds = 0
        log.info("rate-limit counters are in Redis again")


class ClusterCounters(Storage):
    """limits' Redis Cluster storage, connected on first use instead of at start-up.

    limits' own `redis+cluster://` storage connects when it is made, so an API host
    could not even start while the cluster is unreachable; with one Redis it starts
    and answers 503 until Redis is back. This keeps it so: until the cluster answers,
    the limits count in memory (as in any Redis outage).
    """

    STORAGE_SCHEME = ["flashcart+redis-cluster"]

    def __init__(self, uri, wrap_exceptions=False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._uri = "redis+cluster://" + uri.partition("://")[2]
        self._options = options
        self._storage = None

    def _counters(self):
        if self._storage is None:
            try:
                self._storage = RedisClusterStorage(self._uri, **self._options)
            except redis.exceptions.RedisClusterException as error:  # no node answered
                raise redis.exceptions.ConnectionError(str(error)) from error
        return self._storage

    @property
    def base_exceptions(self):
        return (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)

    def incr(self, key, expiry, amount=1):
        return self._counters().incr(key, expiry, amount=amount)

    def get(self, key):
        return self._counters().get(key)

    def get_expiry(self, key):
        return self._counters().get_expiry(key)

    def check(self):
        try:
            return self._counters().check()
        except redis.exceptions.RedisError:
            return False

    def reset(self):
        return self._counters().reset()

    def clear(self, key):
        return self._counters().clear(key)
