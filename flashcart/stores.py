"""MongoDB and Redis connections, built from config, lazily and once per process.

PyMongo clients are not fork-safe, so nothing connects at import or in `create_app`:
each gunicorn worker opens its own clients on first use, and a forked process drops
any it inherited (one `os.register_at_fork` hook, below). `memory://` selects the
embedded in-memory backends (mongomock, fakeredis) for development and tests.
"""

import logging
import os
import re
import threading
import weakref
from datetime import UTC, datetime

import pymongo
import pymongo.errors
import redis
from bson import ObjectId
from flask import current_app
from pymongo import ASCENDING, DESCENDING

from config import MEMORY_URI
from flashcart import redis_cluster

log = logging.getLogger(__name__)

# Every query has an index; docs/scaling-out.md gives the shard keys they suit.
_NEWEST_FIRST = [("created_at", DESCENDING), ("_id", DESCENDING)]  # page_of's sort
# One order per reservation: the database refuses a second one. A sharded collection
# takes a unique index only if it begins with the shard key; a reservation belongs
# to one user, so the rule is the same either way.
_ONE_ORDER_PER_RESERVATION = [("reservation_id", ASCENDING)]
_ONE_ORDER_PER_RESERVATION_SHARDED = [("user_id", ASCENDING), ("reservation_id", ASCENDING)]
# Events waiting in a document's outbox (flashcart/events/outbox.py).
_UNPUBLISHED = [("outbox._id", ASCENDING)]


def index_plan(orders_sharded=False):
    """{collection: [(keys, options)]}: every index the queries need.

    `orders_sharded` (MONGO_ORDERS_SHARDED) when `orders` is sharded on
    {user_id: 1, reservation_id: 1}.
    """
    unique_order = _ONE_ORDER_PER_RESERVATION
    if orders_sharded:
        unique_order = _ONE_ORDER_PER_RESERVATION_SHARDED
    return {
        "users": [([("email", ASCENDING)], {"unique": True})],
        # Login sessions are read by _id; MongoDB drops each once its tokens have expired.
        "sessions": [([("expires_at", ASCENDING)], {"expireAfterSeconds": 0})],
        "products": [
            (_NEWEST_FIRST, {}),
            # The sweeper and the audit look for sales in progress every few seconds.
            ([("sale_status", ASCENDING)], {}),
            (_UNPUBLISHED, {}),
        ],
        "orders": [
            (unique_order, {"unique": True}),
            # "My orders" (and checkout's lookup, which names the user too).
            ([("user_id", ASCENDING), *_NEWEST_FIRST], {}),
            # An admin's list of every order.
            (_NEWEST_FIRST, {}),
            ([("product_id", ASCENDING), ("status", ASCENDING)], {}),
            ([("status", ASCENDING), ("updated_at", ASCENDING)], {}),
            # The sweeper's look for events a crash left unpublished (flashcart/events/).
            (_UNPUBLISHED, {}),
        ],
        # The event feed: publishers take the next seq under this unique index, and
        # consumers page by it (all events, or one type's).
        "events": [
            ([("seq", ASCENDING)], {"unique": True}),
            ([("type", ASCENDING), ("seq", ASCENDING)], {}),
        ],
        # The deliverer leases the least recently visited active endpoint.
        "webhook_endpoints": [([("active", ASCENDING), ("visited_at", ASCENDING)], {})],
        "webhook_deliveries": [
            # One delivery per endpoint and event: a repeated fan-out adds nothing.
            ([("endpoint_id", ASCENDING), ("event_id", ASCENDING)], {"unique": True}),
            # An endpoint's pending deliveries in event order, and those about one
            # resource (is an earlier one waiting?); its log, newest first.
            ([("endpoint_id", ASCENDING), ("status", ASCENDING), ("seq", ASCENDING)], {}),
            (
                [
                    ("endpoint_id", ASCENDING),
                    ("resource", ASCENDING),
                    ("status", ASCENDING),
                    ("seq", ASCENDING),
                ],
                {},
            ),
            ([("endpoint_id", ASCENDING), ("seq", DESCENDING)], {}),
            # The backlog gauge: the oldest event still pending.
            ([("status", ASCENDING), ("event_created_at", ASCENDING)], {}),
        ],
    }


class IndexSetupError(RuntimeError):
    """MongoDB refused an index: the configuration does not fit the database."""


def ensure_indexes(db, *, orders_sharded=False):
    """Create the indexes `index_plan` lists (MongoDB keeps existing ones as they are).

    Raises IndexSetupError, naming the index and the remedy, when MongoDB refuses one.
    """
    for collection, indexes in index_plan(orders_sharded).items():
        for keys, options in indexes:
            try:
                db[collection].create_index(keys, **options)
            except pymongo.errors.OperationFailure as error:
                raise IndexSetupError(
                    f"MongoDB refused the index {dict(keys)} {options or ''} on "
                    f"`{collection}`: {error}. If `orders` is sharded on "
                    "{user_id: 1, reservation_id: 1}, set MONGO_ORDERS_SHARDED=true; "
                    "otherwise drop the conflicting index and run `flask init`."
                ) from error


def connect_redis(url, timeout=2.0, **options):
    """A Redis client for `url`: one server, `redis+cluster://` for a Redis Cluster
    (flashcart/redis_cluster.py), or `memory://` (fakeredis)."""
    if url == MEMORY_URI:
        import fakeredis

        return fakeredis.FakeRedis(decode_responses=True)
    if redis_cluster.is_cluster_url(url):
        return redis_cluster.connect(url, timeout, **options)
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=15,
        **options,
    )


def ping_redis(client):
    """PING one server, or every primary of a cluster (whose state must be ok)."""
    if isinstance(client, redis_cluster.RedisCluster):
        return redis_cluster.ping(client)
    return client.ping()


def connect_mongo(uri, timeout_ms=2000):
    """The database named in `uri`. Replica set, read preference, write concern,
    TLS and pool options come from the URI; the timeouts from MONGO_TIMEOUT_MS."""
    if uri == MEMORY_URI:
        import mongomock

        return mongomock.MongoClient().flashcart
    client = pymongo.MongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 2, 5000),
        tz_aware=True,
        connect=False,
    )
    return client.get_default_database("flashcart")


def orders_collection(db, write_concern):
    """`db.orders`, written with `write_concern` ("majority", a number of members, or
    "" for the URI's) when `db` is a real MongoDB database."""
    return with_write_concern(db.orders, write_concern)


def with_write_concern(collection, write_concern):
    """`collection`, written with `write_concern` ("majority", a number of members,
    or "" for the URI's) when it is a real MongoDB collection."""
    if not write_concern or not isinstance(collection, pymongo.collection.Collection):
        return collection
    w = int(write_concern) if write_concern.isdigit() else write_concern
    return collection.with_options(write_concern=pymongo.WriteConcern(w=w))


class _Connections:
    # Every app's connections in this process, for the fork hook below.
    _everyone = weakref.WeakSet()

    def __init__(self, config, db=None, redis_client=None):
        self.config = config
        self._db = db
        self._redis = redis_client
        self._db_handed_in = db is not None
        self._redis_handed_in = redis_client is not None
        self._probe = None
        self._indexed = False
        self._orders = None
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()
        _Connections._everyone.add(self)

    def _forget_inherited(self):
        """In a forked child: drop the parent's sockets (the in-memory stores are the
        data itself, and stay). Runs before the child does anything else."""
        # Another thread of the parent may have held a lock: it is never released here.
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()
        if self.config["MONGO_URI"] != MEMORY_URI:
            self._db = None
            self._indexed = False
            self._orders = None
        if self.config["REDIS_URL"] != MEMORY_URI:
            self._redis = None
            self._probe = None

    @classmethod
    def forget_inherited(cls):
        for connections in list(cls._everyone):
            connections._forget_inherited()

    @property
    def db(self):
        db = self._database()
        # One thread makes sure of the indexes while the others wait, but no longer than
        # one MongoDB timeout: behind a MongoDB that is down, each would otherwise wait
        # out every earlier one's try.
        if not self._indexed:
            wait = self.config["MONGO_TIMEOUT_MS"] / 1000
            if self._index_lock.acquire(timeout=wait):
                try:
                    if not self._indexed:
                        self._ensure_indexes_once()
                finally:
                    self._index_lock.release()
        return db

    def _database(self):
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._db = connect_mongo(
                        self.config["MONGO_URI"], self.config["MONGO_TIMEOUT_MS"]
                    )
        return self._db

    def ensure_indexes(self):
        ensure_indexes(self._database(), orders_sharded=self.config["MONGO_ORDERS_SHARDED"])
        self._indexed = True

    def _ensure_indexes_once(self):
        # `flask init` creates them before the API starts, and fails there, once, if
        # MongoDB refuses one. Here they are a safety net: a refusal is logged once per
        # process, not raised again by every request.
        try:
            self.ensure_indexes()
        except IndexSetupError as error:
            log.error("%s", error)
            self._indexed = True

    @property
    def orders(self):
        db = self.db
        if self._orders is None or self._orders[0] is not db:
            self._orders = (db, orders_collection(db, self.config["MONGO_ORDERS_WRITE_CONCERN"]))
        return self._orders[1]

    @property
    def redis(self):
        if self._redis is None:
            with self._lock:
                if self._redis is None:
                    self._redis = connect_redis(
                        self.config["REDIS_URL"], self.config["REDIS_TIMEOUT_SECONDS"]
                    )
        return self._redis

    def ping_redis(self, timeout):
        if self._redis_handed_in or self.config["REDIS_URL"] == MEMORY_URI:
            return ping_redis(self.redis)
        if self._probe is None:
            # Its own small pool: the probe's short timeout must not apply to real work.
            self._probe = connect_redis(self.config["REDIS_URL"], timeout)
        return ping_redis(self._probe)

    def ping_mongo(self, timeout):
        with pymongo.timeout(timeout):
            return self._database().command("ping")


# A gunicorn worker is forked from the master that built the app (preload_app).
os.register_at_fork(after_in_child=_Connections.forget_inherited)


class Stores:
    """`stores.db` and `stores.redis` for the current app."""

    def init_app(self, app, db=None, redis_client=None):
        """Bind to `app`; tests may hand in ready clients (mongomock, a test Redis)."""
        app.extensions["flashcart.stores"] = _Connections(app.config, db, redis_client)

    @staticmethod
    def _connections():
        return current_app.extensions["flashcart.stores"]

    @property
    def db(self):
        return self._connections().db

    @property
    def orders(self):
        """The orders collection, written with MONGO_ORDERS_WRITE_CONCERN."""
        return self._connections().orders

    @property
    def redis(self):
        return self._connections().redis

    def durable(self, name):
        """The collection `name`, written like orders (MONGO_ORDERS_WRITE_CONCERN): for
        records that must not be lost once answered, such as events."""
        connections = self._connections()
        return with_write_concern(
            connections.db[name], connections.config["MONGO_ORDERS_WRITE_CONCERN"]
        )

    def ping_redis(self, timeout):
        """PING Redis; raises a redis ConnectionError/TimeoutError after `timeout` s."""
        return self._connections().ping_redis(timeout)

    def ping_mongo(self, timeout):
        """Ping MongoDB; raises a PyMongoError after about `timeout` seconds."""
        return self._connections().ping_mongo(timeout)

    def ensure_indexes(self):
        """Create every index the queries need; IndexSetupError if MongoDB refuses one."""
        return self._connections().ensure_indexes()


# An id as the API hands it out. bson would also read upper case, but Redis keys,
# caches and counts use the text: another spelling of a live product's id would be
# a second product there, so it names nothing.
CANONICAL_ID = re.compile(r"[0-9a-f]{24}")


def object_id_or_none(value):
    """The ObjectId of an id in its one canonical form (24 lower-case hex digits),
    or None for anything else."""
    if isinstance(value, str) and CANONICAL_ID.fullmatch(value):
        return ObjectId(value)
    return None


def utcnow():
    """Now in UTC, to the millisecond: what MongoDB keeps, so answers match later reads."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(moment):
    """A timezone-aware UTC datetime (mongomock hands back naive ones)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def page_of(collection, query, *, page, per_page, render):
    """One page of `collection` matching `query`, newest first, as an envelope."""
    total = collection.count_documents(query)
    cursor = (
        collection.find(query)
        .sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        .skip((page - 1) * per_page)
        .limit(per_page)
    )
    return {
        "items": [render(doc) for doc in cursor],
        "page": page,
        "per_page": per_page,
        "total": total,
    }
