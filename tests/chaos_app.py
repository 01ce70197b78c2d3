"""Test plumbing for tests/test_chaos.py: one mongomock database shared by processes.

No MongoDB server exists on the test machine and mongomock lives inside one process,
so several gunicorn workers could not see the same orders. Here ONE process, a
`multiprocessing.managers.BaseManager` server, owns a mongomock database; every other
process (the gunicorn workers, the test itself) talks to it through `SharedDatabase`,
a thin stand-in for a pymongo `Database` that supports exactly the collection methods
flashcart/ calls:

    insert_one, find_one, find (with .sort/.skip/.limit), find_one_and_update,
    update_one, count_documents, create_index, and db.command("ping")

Every call runs under one lock in the server process, so the operations are atomic
as in MongoDB (one document at a time), and the unique indexes (one order per
reservation) are enforced for all processes. Results are plain picklable values;
cursors are materialised to lists. Errors come back as pymongo errors.

`make_app()` is the gunicorn app factory (`chaos_app:make_app()`), configured from
CHAOS_* environment variables; `make_production_app()` serves production settings.
"""

import os
import threading
from multiprocessing.managers import BaseManager

import pymongo.errors
from bson import ObjectId
from pymongo.results import InsertOneResult, UpdateResult

ENV_ADDRESS = "CHAOS_MONGO_ADDRESS"
ENV_AUTHKEY = "CHAOS_MONGO_AUTHKEY"
ENV_REDIS_URL = "CHAOS_REDIS_URL"
ENV_HOLD_SECONDS = "CHAOS_HOLD_SECONDS"

_service = None


class MongoService:
    """Lives in the manager's server process and owns the mongomock database."""

    def __init__(self):
        import mongomock

        self._db = mongomock.MongoClient().flashcart
        self._lock = threading.Lock()
        self._calls = 0

    def call(self, collection, method, args, kwargs):
        """Run one collection method; returns ("ok", value) or (error kind, message)."""
        with self._lock:
            self._calls += 1
            try:
                return "ok", self._run(self._db[collection], method, args, kwargs)
            except pymongo.errors.DuplicateKeyError as error:
                return "duplicate_key", str(error)
            except pymongo.errors.PyMongoError as error:
                return "operation_failure", f"{type(error).__name__}: {error}"

    @staticmethod
    def _run(collection, method, args, kwargs):
        if method == "find":
            spec = args[0]
            cursor = collection.find(spec["filter"], spec["projection"])
            if spec["sort"]:
                cursor = cursor.sort(spec["sort"])
            if spec["skip"]:
                cursor = cursor.skip(spec["skip"])
            if spec["limit"]:
                cursor = cursor.limit(spec["limit"])
            return list(cursor)
        if method == "insert_one":
            return collection.insert_one(*args, **kwargs).inserted_id
        if method == "update_one":
            return collection.update_one(*args, **kwargs).raw_result
        if method in ("find_one", "find_one_and_update", "count_documents", "create_index"):
            return getattr(collection, method)(*args, **kwargs)
        raise NotImplementedError(f"the shared test database does not support {method}()")

    def calls(self):
        return self._calls


def _start_service():
    global _service
    _service = MongoService()


def _get_service():
    return _service


class MongoManager(BaseManager):
    """Serves the one MongoService; clients connect by address and authkey."""


MongoManager.register("mongo_service", callable=_get_service, exposed=("call", "calls"))


def start_server(ctx):
    """Start the server process (the caller owns it: `manager.shutdown()`)."""
    authkey = os.urandom(16)
    manager = MongoManager(address=("127.0.0.1", 0), authkey=authkey, ctx=ctx)
    manager.start(initializer=_start_service)
    manager.chaos_authkey = authkey
    return manager


class SharedDatabase:
    """What `stores.db` is in the chaos test: collections backed by the shared server.

    Each (process, thread) opens its own connection to the server on first use, so
    the object survives os.fork (gunicorn) and works from many threads.
    """

    def __init__(self, address, authkey):
        self._address = tuple(address)
        self._authkey = bytes(authkey)
        self._local = threading.local()

    @classmethod
    def from_env(cls):
        host, port = os.environ[ENV_ADDRESS].rsplit(":", 1)
        return cls((host, int(port)), bytes.fromhex(os.environ[ENV_AUTHKEY]))

    def env(self):
        return {
            ENV_ADDRESS: f"{self._address[0]}:{self._address[1]}",
            ENV_AUTHKEY: self._authkey.hex(),
        }

    def _remote(self):
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            manager = MongoManager(address=self._address, authkey=self._authkey)
            manager.connect()
            local.service = manager.mongo_service()
            local.pid = os.getpid()
        return local.service

    def _call(self, collection, method, *args, **kwargs):
        status, value = self._remote().call(collection, method, args, kwargs)
        if status == "ok":
            return value
        if status == "duplicate_key":
            raise pymongo.errors.DuplicateKeyError(value, 11000)
        raise pymongo.errors.OperationFailure(value)

    def server_calls(self):
        return self._remote().calls()

    def command(self, name, *args, **kwargs):
        if name != "ping":
            raise NotImplementedError(f"the shared test database does not support {name}")
        self._remote().calls()
        return {"ok": 1.0}

    def __getitem__(self, name):
        return SharedCollection(self, name)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return SharedCollection(self, name)


class SharedCollection:
    def __init__(self, database, name):
        self._database = database
        self.name = name

    def _call(self, method, *args, **kwargs):
        return self._database._call(self.name, method, *args, **kwargs)

    def insert_one(self, document):
        # Like pymongo, the id is chosen here and set on the caller's document.
        document.setdefault("_id", ObjectId())
        return InsertOneResult(self._call("insert_one", document), acknowledged=True)

    def find_one(self, filter=None, *args, **kwargs):  # noqa: A002 (pymongo's name)
        return self._call("find_one", filter, *args, **kwargs)

    def find(self, filter=None, projection=None):  # noqa: A002
        return ListCursor(self, filter or {}, projection)

    def find_one_and_update(self, filter, update, **kwargs):  # noqa: A002
        return self._call("find_one_and_update", filter, update, **kwargs)

    def update_one(self, filter, update, **kwargs):  # noqa: A002
        return UpdateResult(self._call("update_one", filter, update, **kwargs), True)

    def count_documents(self, filter, **kwargs):  # noqa: A002
        return self._call("count_documents", filter, **kwargs)

    def create_index(self, keys, **kwargs):
        return self._call("create_index", keys, **kwargs)


class ListCursor:
    """`find()`'s cursor: records sort/skip/limit, then fetches one list when read."""

    def __init__(self, collection, filter, projection):  # noqa: A002
        self._collection = collection
        self._spec = {"filter": filter, "projection": projection, "sort": None}
        self._spec.update(skip=0, limit=0)
        self._items = None

    def sort(self, key_or_list, direction=None):
        self._spec["sort"] = (
            [(key_or_list, direction or pymongo.ASCENDING)]
            if isinstance(key_or_list, str)
            else list(key_or_list)
        )
        return self

    def skip(self, count):
        self._spec["skip"] = count
        return self

    def limit(self, count):
        self._spec["limit"] = count
        return self

    def __iter__(self):
        if self._items is None:
            self._items = self._collection._call("find", self._spec)
        return iter(self._items)


def settings(redis_url, hold_seconds, **overrides):
    """TestingConfig as a dict, with the chaos test's overrides."""
    from config import TestingConfig

    values = {key: getattr(TestingConfig, key) for key in dir(TestingConfig) if key.isupper()}
    values.update(
        ENV_NAME="testing",
        REDIS_URL=redis_url,
        HOLD_SECONDS=hold_seconds,
        SWEEP_GRACE_SECONDS=0,
    )
    values.update(overrides)
    return values


def make_app():
    """The gunicorn app factory: one per worker, after the fork."""
    from flashcart import create_app

    config = settings(os.environ[ENV_REDIS_URL], int(os.environ[ENV_HOLD_SECONDS]))
    # No redis_client: each worker connects on first use (stores connects lazily).
    return create_app(config, db=SharedDatabase.from_env())


def make_production_app():
    """The gunicorn app factory for production settings (gunicorn.conf.py, the
    environment's variables) on the shared database: the bench app's configuration,
    whose in-memory MongoDB this database stands in for."""
    from bench.app import BenchConfig
    from flashcart import create_app

    return create_app(BenchConfig, db=SharedDatabase.from_env())
