"""A MongoDB stand-in for tests: MongoDB's wire protocol in front of mongomock.

No MongoDB server can be installed on the test machine, yet the app's PyMongo path
(`flashcart.stores.connect_mongo`: tz-aware datetimes, write concerns, pymongo's
errors, one connection pool per process) must run somewhere. This is a small
threaded TCP server that speaks the protocol PyMongo speaks (OP_QUERY for the legacy
handshake, answered with OP_REPLY; OP_MSG, with document sequences, for everything
else) and runs each command under one lock, so every process that connects sees the
same data and each command is atomic. Documents are kept per collection beside maps
for the fields the collection's indexes name, so a command costs what its matches
cost, not what the collection holds; mongomock runs each command on the candidates
(see "The store" below).

It answers as a standalone server (no transactions, no retryable writes). Cursors
return every result in their first batch. Every command's name, database,
collection and write concern is recorded; the test-only command
`{"standInCommands": 1, "db": name}` returns those for one database. With
MONGO_STANDIN_TIMINGS=path it writes the seconds spent per command, collection and
filter shape to that JSON file every 5 s (where a long run's time goes).

Run it alone with `python tests/support/mongo_standin.py --port N`, or from a test with
`MongoStandIn(port=None).start()` ... `.stop()` (also a context manager).
"""

import argparse
import bisect
import collections
import contextlib
import datetime
import itertools
import json
import os
import signal
import socketserver
import struct
import subprocess
import sys
import threading
import time

import bson
import mongomock
from bson import SON, Int64, ObjectId

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
CHECKSUM_PRESENT, MORE_TO_COME = 1 << 0, 1 << 1
MAX_WIRE_VERSION = 21  # MongoDB 7.0
HEADER = struct.Struct("<iiii")


class CommandError(Exception):
    def __init__(self, code, message, code_name=""):
        super().__init__(message)
        self.code, self.code_name = code, code_name


def _cursor(namespace, documents, batch="firstBatch"):
    return {"cursor": {"id": Int64(0), "ns": namespace, batch: list(documents)}, "ok": 1.0}


def _is_operator_update(update):
    """An update of operators (or a filter's condition of them), not a document."""
    return isinstance(update, dict) and bool(update) and next(iter(update)).startswith("$")


def _write_error(index, error):
    return {"index": index, "code": error.code or 2, "errmsg": str(error)}


# The store: the documents, indexed the way the app's createIndexes asked, with
# mongomock evaluating each command on the few documents an index leaves.
#
# mongomock scans every document of a collection on every command (and again for
# each unique index on every write), so its cost grows with the data. Here each
# collection keeps its documents in a dict and, for every field an index names, a
# map from value to documents. A command's filter picks the smallest set of
# candidates those maps allow (a superset of what matches); mongomock then runs the
# command itself (filter, update operators, sort, projection) on a scratch
# collection holding just those candidates, and the changed documents come back.
# Uniqueness and TTL expiry are checked here, from the same maps.

_NULL, _NUMBER, _STRING, _OBJECT_ID, _BOOL, _DATETIME = range(6)
_RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
_CROSS_COLLECTION_STAGES = {"$lookup", "$graphLookup", "$unionWith", "$out", "$merge"}


def _index_key(value):
    """A value's key in an index: equal for values MongoDB holds equal (1, 1.0,
    Int64(1)), ordered within one type; None for a value no key stands for."""
    if value is None:
        return (_NULL, 0)
    if isinstance(value, bool):
        return (_BOOL, value)
    if isinstance(value, int | float):
        return (_NUMBER, value) if value == value else None  # NaN equals nothing
    if isinstance(value, str):
        return (_STRING, value)
    if isinstance(value, ObjectId):
        return (_OBJECT_ID, value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        return (_DATETIME, value)
    return None


def _exact_key(value):
    """A key for any value (an _id, a unique index's field): `_index_key`'s where
    it has one, else the value's BSON."""
    return _index_key(value) or ("bson", bson.encode({"": value}))


def _values_at(document, path):
    """The values at a dotted `path`, through arrays of documents as MongoDB goes;
    None where the walk is beyond this (an array index, arrays in arrays)."""
    values = [document]
    for part in path.split("."):
        found = []
        for value in values:
            if isinstance(value, dict):
                if part in value:
                    found.append(value[part])
            elif isinstance(value, list):
                if part.isdigit() or any(isinstance(item, list) for item in value):
                    return None
                found.extend(
                    item[part] for item in value if isinstance(item, dict) and part in item
                )
        values = found
    return values


def _path_keys(document, path):
    """The index keys of the values at `path`: a set (empty if there is no value
    there), or None if one of them has no key (an array, a document...)."""
    values = _values_at(document, path)
    if values is None:
        return None
    keys = {None if isinstance(value, list) else _index_key(value) for value in values}
    return None if None in keys else keys


def _copy(document):
    return bson.decode(bson.encode(document))


class _FieldIndex:
    """Documents (by position) by the values at one path."""

    def __init__(self, path):
        self.path = path
        self.positions = {}  # key -> {position}
        self.sorted_keys = collections.defaultdict(list)  # type -> its keys, in order
        self.unplaced = set()  # documents with a value no key stands for: always candidates
        self.absent = set()  # documents with no value at the path
        self.keys_of = {}  # position -> its keys (None: unplaced)
        self.multikey = set()  # documents with several values here (arrays)

    def add(self, position, document):
        keys = _path_keys(document, self.path)
        self.keys_of[position] = keys
        if keys is None:
            self.unplaced.add(position)
        elif not keys:
            self.absent.add(position)
        elif len(keys) > 1:
            self.multikey.add(position)
        for key in keys or ():
            holders = self.positions.get(key)
            if holders is None:
                holders = self.positions[key] = set()
                bisect.insort(self.sorted_keys[key[0]], key)
            holders.add(position)

    def remove(self, position):
        keys = self.keys_of.pop(position)
        self.unplaced.discard(position)
        self.absent.discard(position)
        self.multikey.discard(position)
        for key in keys or ():
            holders = self.positions[key]
            holders.discard(position)
            if not holders:
                del self.positions[key]
                ordered = self.sorted_keys[key[0]]
                del ordered[bisect.bisect_left(ordered, key)]

    def lookup(self, condition):
        """How to narrow `condition` (a filter's value for this path): (about how many
        candidates, a function returning the positions of a superset of the documents
        it can match), or None if this index cannot narrow it."""
        if not _is_operator_update(condition):
            return self._equal([condition])
        if "$eq" in condition:
            return self._equal([condition["$eq"]])
        if isinstance(condition.get("$in"), list):
            return self._equal(condition["$in"])
        bounds = {op: _index_key(condition[op]) for op in _RANGE_OPERATORS if op in condition}
        types = {key[0] if key else None for key in bounds.values()}
        if not bounds or len(types) != 1 or None in types or _NULL in types:
            return None
        (kind,) = types
        ordered = self.sorted_keys.get(kind, [])
        low = max((bounds[op] for op in ("$gt", "$gte") if op in bounds), default=None)
        high = min((bounds[op] for op in ("$lt", "$lte") if op in bounds), default=None)
        start = bisect.bisect_left(ordered, low) if low else 0
        end = bisect.bisect_right(ordered, high) if high else len(ordered)
        others = [keys for other, keys in self.sorted_keys.items() if other != kind]

        def found():
            positions = set(self.unplaced)
            for key in ordered[start:end]:
                positions |= self.positions[key]
            for keys in others:  # values of other types: left to the filter
                for key in keys:
                    positions |= self.positions[key]
            return positions

        return len(self.unplaced) + end - start + sum(map(len, others)), found

    def _equal(self, values):
        keys = [_index_key(value) for value in values]
        if any(key is None or key[0] == _NULL for key in keys):
            return None  # null also matches a missing value; arrays, documents, regexes...
        holders = [self.positions[key] for key in keys if key in self.positions]

        def found():
            return set(self.unplaced).union(*holders)

        return len(self.unplaced) + sum(map(len, holders)), found

    def within(self, condition):
        """The positions of exactly the documents `condition` (only range operators)
        matches, when every document has one value here, of the bounds' type; else None."""
        if not set(condition) <= set(_RANGE_OPERATORS) or self.in_order(False) is None:
            return None
        bounds = {op: _index_key(value) for op, value in condition.items()}
        ((kind, ordered),) = [(kind, keys) for kind, keys in self.sorted_keys.items() if keys]
        if any(key is None or key[0] != kind for key in bounds.values()):
            return None
        start, end = 0, len(ordered)
        for op, key in bounds.items():
            if op in ("$gt", "$gte"):
                start = max(
                    start,
                    (bisect.bisect_right if op == "$gt" else bisect.bisect_left)(ordered, key),
                )
            else:
                end = min(
                    end, (bisect.bisect_left if op == "$lt" else bisect.bisect_right)(ordered, key)
                )
        return set().union(*(self.positions[key] for key in ordered[start:end]))

    def in_order(self, descending):
        """Positions bucket by bucket in the index's order, if every document has
        one value of one type here (else None: the order is left to mongomock)."""
        kinds = [keys for keys in self.sorted_keys.values() if keys]
        if self.unplaced or self.absent or self.multikey or len(kinds) != 1:
            return None
        keys = reversed(kinds[0]) if descending else kinds[0]
        return (self.positions[key] for key in keys)


class _Scratch:
    """A mongomock collection that holds a command's candidates while it runs."""

    def __init__(self):
        self.collection = mongomock.MongoClient()["scratch"]["documents"]

    @contextlib.contextmanager
    def holding(self, documents):
        if documents:
            self.collection.insert_many([_copy(document) for document in documents])
        try:
            yield self.collection
        finally:
            self.collection.drop()

    def matches(self, document, query):
        with self.holding([document]) as collection:
            return collection.count_documents(query) > 0


def _duplicate(index_name):
    return mongomock.DuplicateKeyError(f"E11000 duplicate key error index: {index_name}", 11000)


class _Unique:
    """A unique index: its documents' keys."""

    def __init__(self, name, info, scratch):
        self.name, self.info, self.scratch = name, repr(info), scratch
        self.fields = [field for field, _ in info["key"]]
        self.sparse = info.get("sparse", False)
        self.partial = info.get("partialFilterExpression")
        self.positions = {}  # key -> position

    def key(self, document):
        """The document's key in this index, or None if the index leaves it out."""
        values = []
        for field in self.fields:
            value = document
            for part in field.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            values.append(value)
        if self.sparse and all(value is None for value in values):
            return None
        if self.partial is not None and not self.scratch.matches(document, self.partial):
            return None
        return tuple(_exact_key(value) for value in values)


class Collection:
    """One collection: its documents, and mongomock's empty `shadow` of it, which
    keeps the collection's existence and its indexes."""

    def __init__(self, shadow, scratch):
        self.shadow, self.scratch = shadow, scratch
        self.documents = {}  # position (insertion order) -> document
        self.id_positions = {}  # _exact_key(_id) -> position
        self.next_position = 0
        self.fields, self.uniques, self.ttls = {}, [], []
        self.refresh_indexes()

    @property
    def name(self):
        return self.shadow.name

    # Indexes.
    def refresh_indexes(self):
        information = self.shadow.index_information()
        paths = {"_id"} | {field for info in information.values() for field, _ in info["key"]}
        for path in paths - set(self.fields):
            index = self.fields[path] = _FieldIndex(path)
            for position, document in self.documents.items():
                index.add(position, document)
        for path in set(self.fields) - paths:
            del self.fields[path]
        kept = {(unique.name, unique.info): unique for unique in self.uniques}
        self.uniques = [
            kept.get((name, repr(info))) or self._built_unique(name, info)
            for name, info in information.items()
            if info.get("unique") and name != "_id_"
        ]
        self.ttls = [
            (info["key"][0][0], info["expireAfterSeconds"])
            for info in information.values()
            if len(info["key"]) == 1
            and "." not in info["key"][0][0]  # mongomock expires by top-level fields only
            and isinstance(info.get("expireAfterSeconds"), int | float)
        ]

    def _built_unique(self, name, info):
        unique = _Unique(name, info, self.scratch)
        for position, document in self.documents.items():
            key = unique.key(document)
            if key is not None:
                if key in unique.positions:
                    raise _duplicate(name)
                unique.positions[key] = position
        return unique

    def create_index(self, keys, **options):
        existing = self.shadow.index_information().get(options.get("name"), {})
        if options.get("unique") and not existing.get("unique"):
            info = {"key": keys, **options}
            self._built_unique(options.get("name", "new index"), info)  # refuses duplicates
        name = self.shadow.create_index(keys, **options)
        self.refresh_indexes()
        return name

    def index_information(self):
        return self.shadow.index_information()

    def drop_indexes(self):
        self.shadow.drop_indexes()
        self.refresh_indexes()

    def drop_index(self, index):
        self.shadow.drop_index(index)
        self.refresh_indexes()

    # Documents in and out of the indexes.
    def _put(self, position, document):
        """Store `document` at `position` (a new one, or replacing the document
        there), or raise DuplicateKeyError and change nothing."""
        old = self.documents.get(position)
        id_key = _exact_key(document["_id"])
        if self.id_positions.get(id_key, position) != position:
            raise _duplicate("_id_")
        keys = [unique.key(document) for unique in self.uniques]
        for unique, key in zip(self.uniques, keys, strict=True):
            if key is not None and unique.positions.get(key, position) != position:
                raise _duplicate(unique.name)
        if old is not None:
            self._unindex(position, old)
        self.documents[position] = document
        self.id_positions[id_key] = position
        for index in self.fields.values():
            index.add(position, document)
        for unique, key in zip(self.uniques, keys, strict=True):
            if key is not None:
                unique.positions[key] = position

    def _unindex(self, position, document):
        del self.id_positions[_exact_key(document["_id"])]
        for index in self.fields.values():
            index.remove(position)
        for unique in self.uniques:
            key = unique.key(document)
            if key is not None and unique.positions.get(key) == position:
                del unique.positions[key]

    def _remove(self, position):
        self._unindex(position, self.documents.pop(position))

    def _add(self, document):
        if not self.shadow.database.list_collection_names().count(self.name):
            self.shadow.database.create_collection(self.name)
        self._put(self.next_position, document)
        self.next_position += 1

    def _expire(self):
        """Drop the documents a TTL index says are expired (as mongomock did)."""
        for field, seconds in self.ttls:
            cutoff = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            cutoff -= datetime.timedelta(seconds=seconds)
            index = self.fields[field]
            expired = set()
            for key in index.sorted_keys.get(_DATETIME, []):
                if key[1] > cutoff:
                    break
                expired |= index.positions[key]
            for position in index.unplaced:  # arrays: their earliest date counts
                value = self.documents[position].get(field)
                dates = (
                    [v for v in value if isinstance(v, datetime.datetime)]
                    if isinstance(value, list)
                    else []
                )
                if dates and min(dates) <= cutoff:
                    expired.add(position)
            for position in expired:
                self._remove(position)

    def _candidates(self, query):
        """The positions of a superset of the documents `query` matches (None: all)."""
        self._expire()
        best = None
        if isinstance(query, dict):
            for field, condition in query.items():
                index = self.fields.get(field)
                plan = index.lookup(condition) if index else None
                if plan is not None and (best is None or plan[0] < best[0]):
                    best = plan
        return best[1]() if best else None

    def _at(self, positions):
        """The documents at `positions` (None: all), in insertion order."""
        if positions is None:
            return list(self.documents.values())
        return [self.documents[position] for position in sorted(positions)]

    # Reads.
    def find(self, query=None, projection=None, sort=None, skip=0, limit=0):
        query = query or {}
        exact = self._matches(query) if projection is None else None
        ordered = self._in_order(exact, sort) if exact is not None else None
        if ordered is not None:  # a big read (the whole collection) without mongomock
            chosen = ordered[skip : skip + limit if limit else None]
            return [self.documents[position] for position in chosen]  # never changed in place
        positions = self._candidates(query)
        if sort and limit:
            positions = self._first_by_sort(query, sort, positions, skip + limit)
        with self.scratch.holding(self._at(positions)) as collection:
            return list(collection.find(query, projection, sort=sort, skip=skip, limit=limit))

    def _matches(self, query):
        """The positions of exactly the documents `query` matches, when the maps can
        tell: no condition, or one plain value for an indexed field none of whose
        values the map left out. Else None."""
        self._expire()
        if not query:
            return set(self.documents)
        if len(query) != 1:
            return None
        ((field, condition),) = query.items()
        index = self.fields.get(field)
        if index is not None and isinstance(condition, dict) and condition:
            return index.within(condition)
        if index is None or index.unplaced or isinstance(condition, dict | list):
            return None
        key = _index_key(condition)
        if key is None or key[0] == _NULL:
            return None
        return set(index.positions.get(key, ()))

    def _in_order(self, positions, sort):
        """`positions` in `sort`'s order (ties in insertion order, as mongomock sorts),
        when no sort or one by an index that orders every document; else None."""
        ordered = sorted(positions)
        if not sort:
            return ordered
        if len(sort) != 1 or not isinstance(sort[0][1], int | float):
            return None
        field, direction = sort[0]
        index = self.fields.get(field)
        if index is None or index.in_order(direction < 0) is None:
            return None
        return sorted(ordered, key=lambda p: next(iter(index.keys_of[p])), reverse=direction < 0)

    def _first_by_sort(self, query, sort, positions, wanted):
        """Of the candidate `positions`, those up to the `wanted`-th match in the
        order of the sort's first field, when its index gives that order (else all)."""
        field, direction = sort[0]
        index = self.fields.get(field)
        count = len(self.documents) if positions is None else len(positions)
        if index is None or not isinstance(direction, int | float) or count <= wanted:
            return positions
        buckets = index.in_order(direction < 0)
        if buckets is None:
            return positions
        if positions is not None:  # the candidates' own buckets, not the whole index's

            def key(position):
                return next(iter(index.keys_of[position]))

            ordered = sorted(positions, key=key, reverse=direction < 0)
            buckets = (set(group) for _, group in itertools.groupby(ordered, key=key))
        chosen, enough = [], wanted
        for bucket in buckets:  # whole buckets: ties stay together
            chosen.extend(bucket)
            if len(chosen) >= enough:
                with self.scratch.holding(self._at(chosen)) as collection:
                    if collection.count_documents(query) >= wanted:
                        return set(chosen)
                enough = 2 * len(chosen)
        return positions

    def find_one(self, query=None, projection=None, sort=None):
        found = self.find(query, projection, sort=sort, limit=1)
        return found[0] if found else None

    def count_documents(self, query, **options):
        with self.scratch.holding(self._at(self._candidates(query))) as collection:
            return collection.count_documents(query, **options)

    def distinct(self, key, query=None):
        with self.scratch.holding(self._at(self._candidates(query or {}))) as collection:
            return collection.distinct(key, query or {})

    def aggregate(self, pipeline):
        stages = {next(iter(stage)) for stage in pipeline if isinstance(stage, dict) and stage}
        if stages & _CROSS_COLLECTION_STAGES:
            raise NotImplementedError(f"the stand-in does not run {sorted(stages)}")
        first = pipeline[0] if pipeline and isinstance(pipeline[0], dict) else {}
        query = first.get("$match", {})  # count_documents starts with one, for one
        with self.scratch.holding(self._at(self._candidates(query))) as collection:
            return list(collection.aggregate(pipeline))

    # Writes.
    def insert_one(self, document):
        with self.scratch.holding([]) as collection:
            collection.insert_one(document)  # mongomock's checks; sets the _id if missing
            stored = _copy(collection.find_one())
        self._expire()
        self._add(stored)

    def update_one(self, query, update, upsert=False):
        return self._update(query, update, upsert, "update_one")

    def update_many(self, query, update, upsert=False):
        return self._update(query, update, upsert, "update_many")

    def replace_one(self, query, replacement, upsert=False):
        return self._update(query, replacement, upsert, "replace_one")

    def _update(self, query, update, upsert, method):
        positions = self._candidates(query)
        candidates = sorted(self.documents) if positions is None else sorted(positions)
        with self.scratch.holding(self._at(candidates)) as collection:
            result = getattr(collection, method)(query, update, upsert=upsert)
            after = {_exact_key(document["_id"]): document for document in collection.find()}
        for position in candidates:
            document = self.documents[position]
            changed = _copy(after.pop(_exact_key(document["_id"])))
            if changed != document:
                self._put(position, changed)
        for document in after.values():  # the upserted one
            self._add(_copy(document))
        return result

    def delete_one(self, query):
        return self._delete(query, 1)

    def delete_many(self, query):
        return self._delete(query, None)

    def _delete(self, query, limit):
        with self.scratch.holding(self._at(self._candidates(query))) as collection:
            matched = [d["_id"] for d in collection.find(query, {"_id": 1}, limit=limit or 0)]
        for _id in matched:
            self._remove(self.id_positions[_exact_key(_id)])
        return len(matched)


class Database:
    def __init__(self, store, name):
        self.store, self.name = store, name
        self.shadow = store.shadow[name]

    def __getitem__(self, name):
        return self.store.collection(self.name, name)

    def list_collection_names(self):
        return self.shadow.list_collection_names()

    def create_collection(self, name):
        self.shadow.create_collection(name)

    def drop_collection(self, name):
        self.shadow.drop_collection(name)
        self.store.collections.pop((self.name, name), None)


class Store:
    """The databases: mongomock's client as the `shadow` of names and indexes, and
    a Collection of documents for each."""

    def __init__(self):
        self.shadow = mongomock.MongoClient()
        self.scratch = _Scratch()
        self.collections = {}

    def __getitem__(self, name):
        return Database(self, name)

    def collection(self, database, name):
        key = (database, name)
        if key not in self.collections:
            self.collections[key] = Collection(self.shadow[database][name], self.scratch)
        return self.collections[key]

    def list_database_names(self):
        return self.shadow.list_database_names()

    def drop_database(self, name):
        self.shadow.drop_database(name)
        for key in [key for key in self.collections if key[0] == name]:
            del self.collections[key]


class Engine:
    """Executes commands on the Store, one at a time."""

    def __init__(self):
        self.client = Store()
        self.lock = threading.Lock()
        self.connections = 0
        self.received = collections.deque(maxlen=50_000)
        self.timings = Timings(os.environ.get("MONGO_STANDIN_TIMINGS"))

    def run(self, command):
        name = next(iter(command))
        database = command.get("$db", "admin")
        if name != "standInCommands":
            self.received.append(
                {
                    "command": name,
                    "db": database,
                    "collection": command[name] if isinstance(command[name], str) else None,
                    "writeConcern": command.get("writeConcern"),
                }
            )
        handler = getattr(self, "cmd_" + name.lower(), None)
        if handler is None:
            return self._error(59, f"no such command: '{name}'", "CommandNotFound")
        with self.lock, self.timings.timed(name, command):
            try:
                return handler(self.client[database], command[name], command)
            except CommandError as error:
                return self._error(error.code, str(error), error.code_name)
            except mongomock.OperationFailure as error:
                return self._error(error.code or 2, str(error), "")
            except (NotImplementedError, TypeError, ValueError, KeyError) as error:
                return self._error(2, f"{type(error).__name__}: {error}", "BadValue")

    @staticmethod
    def _error(code, message, code_name):
        return {"ok": 0.0, "errmsg": message, "code": code, "codeName": code_name}

    # The handshake and server information.
    def cmd_hello(self, db, value, command):
        return {
            "helloOk": True,
            "isWritablePrimary": True,
            "ismaster": True,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": datetime.datetime.now(datetime.UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": self.connections,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
            "ok": 1.0,
        }

    cmd_ismaster = cmd_hello

    def cmd_ping(self, db, value, command):
        return {"ok": 1.0}

    def cmd_buildinfo(self, db, value, command):
        return {"version": "7.0.0", "versionArray": [7, 0, 0, 0], "ok": 1.0}

    def cmd_endsessions(self, db, value, command):
        return {"ok": 1.0}

    def cmd_standincommands(self, db, value, command):
        wanted = command.get("db")
        return {"commands": [c for c in self.received if c["db"] == wanted], "ok": 1.0}

    # Writes.
    def cmd_insert(self, db, collection, command):
        errors, inserted = [], 0
        for index, document in enumerate(command.get("documents", [])):
            try:
                db[collection].insert_one(document)
                inserted += 1
            except mongomock.OperationFailure as error:
                errors.append(_write_error(index, error))
                if command.get("ordered", True):
                    break
        return self._write_reply(inserted, errors)

    def cmd_update(self, db, collection, command):
        errors, matched, modified, upserted = [], 0, 0, []
        for index, statement in enumerate(command.get("updates", [])):
            query, update = statement.get("q", {}), statement["u"]
            upsert = statement.get("upsert", False)
            try:
                if not _is_operator_update(update):
                    result = db[collection].replace_one(query, update, upsert=upsert)
                elif statement.get("multi"):
                    result = db[collection].update_many(query, update, upsert=upsert)
                else:
                    result = db[collection].update_one(query, update, upsert=upsert)
            except mongomock.OperationFailure as error:
                errors.append(_write_error(index, error))
                if command.get("ordered", True):
                    break
                continue
            if result.upserted_id is not None:
                upserted.append({"index": index, "_id": result.upserted_id})
            else:
                matched += result.matched_count
                modified += result.modified_count
        reply = self._write_reply(matched + len(upserted), errors)
        reply["nModified"] = modified
        if upserted:
            reply["upserted"] = upserted
        return reply

    def cmd_delete(self, db, collection, command):
        deleted = 0
        for statement in command.get("deletes", []):
            if statement.get("limit", 0) == 1:
                deleted += db[collection].delete_one(statement.get("q", {}))
            else:
                deleted += db[collection].delete_many(statement.get("q", {}))
        return self._write_reply(deleted, [])

    @staticmethod
    def _write_reply(count, errors):
        reply = {"n": count, "ok": 1.0}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def cmd_findandmodify(self, db, name, command):
        collection = db[name]
        query, update = command.get("query") or {}, command.get("update")
        fields = command.get("fields")
        sort = list((command.get("sort") or {}).items()) or None
        found = collection.find_one(query, sort=sort)
        last_error = {"n": 0, "updatedExisting": False}
        value = None
        if found is not None:
            by_id = {"_id": found["_id"]}
            before = collection.find_one(by_id, fields)
            last_error["n"] = 1
            if command.get("remove"):
                collection.delete_one(by_id)
                value = before
            else:
                last_error["updatedExisting"] = True
                self._apply(collection, by_id, update, upsert=False)
                value = collection.find_one(by_id, fields) if command.get("new") else before
        elif command.get("upsert") and not command.get("remove"):
            upserted_id = self._apply(collection, query, update, upsert=True).upserted_id
            last_error.update(n=1, upserted=upserted_id)
            if command.get("new"):
                value = collection.find_one({"_id": upserted_id}, fields)
        return {"lastErrorObject": last_error, "value": value, "ok": 1.0}

    @staticmethod
    def _apply(collection, query, update, upsert):
        if _is_operator_update(update):
            return collection.update_one(query, update, upsert=upsert)
        return collection.replace_one(query, update, upsert=upsert)

    # Reads.
    def cmd_find(self, db, collection, command):
        found = db[collection].find(
            command.get("filter") or {},
            command.get("projection"),
            sort=list(command["sort"].items()) if command.get("sort") else None,
            skip=command.get("skip") or 0,
            limit=abs(command.get("limit") or 0),
        )
        return _cursor(f"{db.name}.{collection}", found)

    def cmd_getmore(self, db, cursor_id, command):
        return _cursor(f"{db.name}.{command.get('collection')}", [], "nextBatch")

    def cmd_killcursors(self, db, collection, command):
        return {"cursorsKilled": [], "cursorsNotFound": command.get("cursors", []), "ok": 1.0}

    def cmd_aggregate(self, db, collection, command):
        results = db[collection].aggregate(command.get("pipeline", []))
        return _cursor(f"{db.name}.{collection}", results)

    def cmd_count(self, db, collection, command):
        options = {key: command[key] for key in ("skip", "limit") if command.get(key)}
        return {
            "n": db[collection].count_documents(command.get("query") or {}, **options),
            "ok": 1.0,
        }

    def cmd_distinct(self, db, collection, command):
        values = db[collection].distinct(command["key"], command.get("query") or {})
        return {"values": values, "ok": 1.0}

    # Indexes, collections, databases.
    def cmd_createindexes(self, db, collection, command):
        before = len(db[collection].index_information())
        for spec in command.get("indexes", []):
            options = {k: v for k, v in spec.items() if k not in ("key", "v")}
            db[collection].create_index(list(spec["key"].items()), **options)
        after = len(db[collection].index_information())
        return {"numIndexesBefore": before, "numIndexesAfter": after, "ok": 1.0}

    def cmd_listindexes(self, db, collection, command):
        if collection not in db.list_collection_names():
            raise CommandError(
                26, f"ns does not exist: {db.name}.{collection}", "NamespaceNotFound"
            )
        specs = [
            {"v": 2, "key": SON(info["key"]), "name": name}
            | {k: v for k, v in info.items() if k not in ("key", "v")}
            for name, info in db[collection].index_information().items()
        ]
        return _cursor(f"{db.name}.{collection}", specs)

    def cmd_listcollections(self, db, value, command):
        wanted = (command.get("filter") or {}).get("name")
        names = [n for n in db.list_collection_names() if wanted in (None, n)]
        infos = [
            {"name": n, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for n in names
        ]
        return _cursor(f"{db.name}.$cmd.listCollections", infos)

    def cmd_create(self, db, collection, command):
        if collection in db.list_collection_names():
            raise CommandError(
                48, f"Collection {db.name}.{collection} already exists.", "NamespaceExists"
            )
        db.create_collection(collection)
        return {"ok": 1.0}

    def cmd_drop(self, db, collection, command):
        db.drop_collection(collection)
        return {"ok": 1.0}

    def cmd_dropdatabase(self, db, value, command):
        self.client.drop_database(db.name)
        return {"ok": 1.0}

    def cmd_dropindexes(self, db, collection, command):
        index = command.get("index", "*")
        if index == "*":
            db[collection].drop_indexes()
        else:
            db[collection].drop_index(index if isinstance(index, str) else list(index.items()))
        return {"ok": 1.0}

    def cmd_listdatabases(self, db, value, command):
        names = self.client.list_database_names()
        return {
            "databases": [{"name": n, "sizeOnDisk": 0, "empty": False} for n in names],
            "ok": 1.0,
        }


def _shape(value):
    """A filter's shape: its fields and operators, each value replaced by its type."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value[:1]]
    return type(value).__name__


class Timings:
    """Seconds spent per command, collection and filter shape, written as JSON to
    `path` every few seconds (MONGO_STANDIN_TIMINGS: to see where a long run goes)."""

    def __init__(self, path, every=5.0):
        self.path, self.every = path, every
        self.totals = collections.defaultdict(lambda: [0, 0.0])
        self.written = time.monotonic()

    @contextlib.contextmanager
    def timed(self, name, command):
        if not self.path:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            sort = command.get("sort")
            where = command.get("filter", command.get("query", command.get("pipeline")))
            for key in ("updates", "deletes"):
                if command.get(key):
                    where = command[key][0].get("q")
            collection = command[name] if isinstance(command[name], str) else ""
            shape = json.dumps([name, collection, _shape(where), _shape(sort)])
            total = self.totals[shape]
            total[0] += 1
            total[1] += elapsed
            if time.monotonic() - self.written > self.every:
                self.write()

    def write(self):
        self.written = time.monotonic()
        rows = sorted(self.totals.items(), key=lambda row: -row[1][1])
        with open(self.path + ".tmp", "w") as out:
            json.dump([{"shape": s, "count": c, "seconds": t} for s, (c, t) in rows], out)
        os.replace(self.path + ".tmp", self.path)


def _read_exactly(sock, size):
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("client closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _documents(data):
    """The BSON documents laid end to end in `data`."""
    offset = 0
    while offset < len(data):
        (size,) = struct.unpack_from("<i", data, offset)
        yield bson.decode(data[offset : offset + size])
        offset += size


def _cstring(data, offset):
    end = data.index(b"\x00", offset)
    return data[offset:end].decode(), end + 1


def parse_op_msg(body):
    """(flags, the command with its document sequences merged in)."""
    (flags,) = struct.unpack_from("<I", body)
    end = len(body) - (4 if flags & CHECKSUM_PRESENT else 0)
    offset, command, sequences = 4, None, {}
    while offset < end:
        kind = body[offset]
        (size,) = struct.unpack_from("<i", body, offset + 1)
        if kind == 0:
            command = bson.decode(body[offset + 1 : offset + 1 + size])
        else:
            identifier, start = _cstring(body, offset + 5)
            sequences[identifier] = list(_documents(body[start : offset + 1 + size]))
        offset += 1 + size
    command.update(sequences)
    return flags, command


def parse_op_query(body):
    """The command of a legacy OP_QUERY (PyMongo's first `hello`)."""
    namespace, offset = _cstring(body, 4)
    offset += 8  # numberToSkip, numberToReturn
    (size,) = struct.unpack_from("<i", body, offset)
    command = bson.decode(body[offset : offset + size])
    if "$query" in command:
        command = command["$query"]
    command.setdefault("$db", namespace.split(".", 1)[0])
    return command


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        engine = self.server.engine
        with engine.lock:
            engine.connections += 1
        sock = self.request
        try:
            while True:
                length, request_id, _, opcode = HEADER.unpack(_read_exactly(sock, HEADER.size))
                body = _read_exactly(sock, length - HEADER.size)
                if opcode == OP_QUERY:
                    reply = bson.encode(engine.run(parse_op_query(body)))
                    payload = struct.pack("<iqii", 0, 0, 0, 1) + reply
                    sock.sendall(HEADER.pack(16 + len(payload), 0, request_id, OP_REPLY) + payload)
                elif opcode == OP_MSG:
                    flags, command = parse_op_msg(body)
                    reply = engine.run(command)
                    if flags & MORE_TO_COME:
                        continue  # an unacknowledged write (w=0): no answer
                    payload = struct.pack("<IB", 0, 0) + bson.encode(reply)
                    sock.sendall(HEADER.pack(16 + len(payload), 0, request_id, OP_MSG) + payload)
                else:
                    return  # OP_COMPRESSED etc.: never advertised, so never expected
        except (ConnectionError, OSError):
            return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(port, host="127.0.0.1"):
    server = Server((host, port), Handler)
    server.engine = Engine()
    server.serve_forever()


class MongoStandIn:
    """The stand-in as a subprocess on `port` (a free one unless named)."""

    def __init__(self, port=None, database="flashcart"):
        # Here, not at the top: run as a script, this file has no `tests` package.
        from tests.support.ports import free_port

        self.port = port or free_port()
        self.database = database
        self.process = None

    @property
    def url(self):
        return self.url_of(self.database)

    def url_of(self, database):
        """The URL of another database on this server."""
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def start(self, timeout=15):
        """Spawn the server and wait until it answers a ping."""
        import pymongo

        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
        )
        client = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=200, connectTimeoutMS=200)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.admin.command("ping")
                    return self
                except pymongo.errors.PyMongoError as error:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        message = f"the MongoDB stand-in did not start on port {self.port}"
                        raise RuntimeError(message) from error
        finally:
            client.close()

    def stop(self):
        if self.process:
            self.process.kill()
            self.process.wait()
            self.process = None

    def freeze(self):
        """Stop answering (SIGSTOP): connections stay open, requests time out.

        Returns once the process is stopped: a signal is only queued when kill()
        returns, and a request sent meanwhile could still be answered."""
        self.process.send_signal(signal.SIGSTOP)
        self._wait_for_state(stopped=True)

    def thaw(self):
        self.process.send_signal(signal.SIGCONT)
        self._wait_for_state(stopped=False)

    def _wait_for_state(self, stopped, timeout=10):
        deadline = time.monotonic() + timeout
        while self._stopped() != stopped:
            if time.monotonic() > deadline:
                change = "stop" if stopped else "resume"
                raise RuntimeError(f"the MongoDB stand-in did not {change}")
            time.sleep(0.005)

    def _stopped(self):
        with open(f"/proc/{self.process.pid}/stat") as stat:
            # The state follows the command name, which is in parentheses.
            return stat.read().rpartition(")")[2].split()[0] in ("T", "t")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=27017)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    serve(args.port, args.host)


if __name__ == "__main__":
    main()
