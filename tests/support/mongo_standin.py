"""A MongoDB stand-in for tests: MongoDB's wire protocol in front of mongomock.

No MongoDB server can be installed on the test machine, yet the app's PyMongo path
(`flashcart.stores.connect_mongo`: tz-aware datetimes, write concerns, pymongo's
errors, one connection pool per process) must run somewhere. This is a small
threaded TCP server that speaks the protocol PyMongo speaks (OP_QUERY for the legacy
handshake, answered with OP_REPLY; OP_MSG, with document sequences, for everything
else) and runs each command on one mongomock client under one lock, so every
process that connects sees the same data and each command is atomic.

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
import collections
import contextlib
import datetime
import json
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time

import bson
import mongomock
from bson import SON, Int64

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
    return isinstance(update, dict) and bool(update) and next(iter(update)).startswith("$")


def _write_error(index, error):
    return {"index": index, "code": error.code or 2, "errmsg": str(error)}


class Engine:
    """Executes commands on one mongomock client, one at a time."""

    def __init__(self):
        self.client = mongomock.MongoClient()
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
                deleted += db[collection].delete_one(statement.get("q", {})).deleted_count
            else:
                deleted += db[collection].delete_many(statement.get("q", {})).deleted_count
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
        cursor = db[collection].find(command.get("filter") or {}, command.get("projection"))
        if command.get("sort"):
            cursor = cursor.sort(list(command["sort"].items()))
        if command.get("skip"):
            cursor = cursor.skip(command["skip"])
        if command.get("limit"):
            cursor = cursor.limit(abs(command["limit"]))
        return _cursor(f"{db.name}.{collection}", cursor)

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
            where = command.get("filter", command.get("query"))
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


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MongoStandIn:
    """The stand-in as a subprocess on `port` (a free one unless named)."""

    def __init__(self, port=None, database="flashcart"):
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
