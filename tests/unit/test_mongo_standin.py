"""The MongoDB stand-in (tests/support/mongo_standin.py) answers PyMongo like a MongoDB server,
for every operation the app uses: the multi-process tests and MONGO_TEST_URI rely on it."""

import os
import random
from datetime import UTC, datetime, timedelta

import mongomock
import pymongo
import pytest
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from tests.support.mongo_standin import MongoStandIn


@pytest.fixture(scope="module")
def standin():
    with MongoStandIn() as server:
        yield server


@pytest.fixture
def mongo_client(standin):
    client = pymongo.MongoClient(standin.url, tz_aware=True, serverSelectionTimeoutMS=2000)
    yield client
    client.close()


@pytest.fixture
def db(mongo_client):
    name = f"standin_{os.urandom(4).hex()}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


def test_a_unique_index_refuses_a_second_document_with_duplicate_key_error(db):
    db.users.create_index([("email", pymongo.ASCENDING)], unique=True)
    db.users.insert_one({"email": "a@example.com"})

    with pytest.raises(DuplicateKeyError) as raised:
        db.users.insert_one({"email": "a@example.com"})

    assert raised.value.code == 11000
    assert db.users.count_documents({}) == 1
    assert db.users.index_information()["email_1"]["unique"] is True


def test_insert_one_sets_the_id_and_find_one_reads_the_document_back(db):
    document = {"name": "Drop", "price": 1000}
    inserted = db.products.insert_one(document).inserted_id

    assert document["_id"] == inserted
    assert db.products.find_one({"_id": inserted}) == {
        "_id": inserted,
        "name": "Drop",
        "price": 1000,
    }
    assert db.products.find_one({"_id": ObjectId()}) is None


def test_datetimes_come_back_tz_aware_to_the_millisecond(db):
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    db.orders.insert_one({"created_at": moment})

    stored = db.orders.find_one()["created_at"]

    assert stored.utcoffset().total_seconds() == 0
    assert stored == moment.replace(microsecond=678000)


def test_find_honours_filter_sort_projection_skip_and_limit(db):
    db.orders.insert_many([{"n": n, "odd": n % 2 == 1, "extra": "x"} for n in range(10)])

    found = list(
        db.orders.find({"odd": True}, {"n": 1, "_id": 0}).sort([("n", -1)]).skip(1).limit(2)
    )

    assert found == [{"n": 7}, {"n": 5}]
    assert db.orders.count_documents({"odd": False}) == 5
    assert db.orders.count_documents({}, skip=8) == 2


def test_find_one_and_update_returns_the_document_before_or_after_by_sort(db):
    db.orders.insert_many([{"n": 1, "state": "new"}, {"n": 2, "state": "new"}])

    before = db.orders.find_one_and_update(
        {"state": "new"}, {"$set": {"state": "taken"}}, sort=[("n", -1)]
    )
    after = db.orders.find_one_and_update(
        {"state": "new"},
        {"$set": {"state": "taken"}},
        projection={"_id": 0},
        return_document=ReturnDocument.AFTER,
    )
    none_left = db.orders.find_one_and_update({"state": "new"}, {"$set": {"state": "x"}})

    assert (before["n"], before["state"]) == (2, "new")
    assert after == {"n": 1, "state": "taken"}
    assert none_left is None


def test_find_one_and_update_with_upsert_creates_the_document(db):
    created = db.counters.find_one_and_update(
        {"name": "views"},
        {"$inc": {"count": 1}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )

    assert created["name"] == "views" and created["count"] == 1
    assert db.counters.count_documents({}) == 1


def test_update_one_reports_matched_modified_and_upserted(db):
    db.products.insert_one({"_id": 1, "sold": 0})

    matched = db.products.update_one({"_id": 1}, {"$inc": {"sold": 2}})
    missing = db.products.update_one({"_id": 2}, {"$inc": {"sold": 2}})
    upserted = db.products.update_one({"_id": 3}, {"$set": {"sold": 5}}, upsert=True)

    assert (matched.matched_count, matched.modified_count) == (1, 1)
    assert (missing.matched_count, missing.upserted_id) == (0, None)
    assert upserted.upserted_id == 3
    assert [d["sold"] for d in db.products.find().sort("_id")] == [2, 5]


def test_update_many_delete_and_distinct(db):
    db.orders.insert_many([{"user": u, "status": "placed"} for u in ("a", "a", "b")])

    assert db.orders.update_many({"user": "a"}, {"$set": {"status": "x"}}).modified_count == 2
    assert sorted(db.orders.distinct("user")) == ["a", "b"]
    assert db.orders.delete_one({"user": "a"}).deleted_count == 1
    assert db.orders.delete_many({}).deleted_count == 2


def test_ping_list_collections_drop_and_unknown_commands(mongo_client, db):
    db.orders.insert_one({})

    assert db.command("ping")["ok"] == 1.0
    assert db.list_collection_names() == ["orders"]
    db.orders.drop()
    assert db.list_collection_names() == []
    with pytest.raises(OperationFailure) as raised:
        db.command("noSuchCommand")
    assert raised.value.code == 59


def test_the_write_concern_a_collection_is_written_with_is_recorded(db):
    db.orders.with_options(write_concern=pymongo.WriteConcern(w="majority")).insert_one({})
    db.users.insert_one({})

    received = db.command("standInCommands", 1, db=db.name)["commands"]

    inserts = {c["collection"]: c.get("writeConcern") for c in received if c["command"] == "insert"}
    assert inserts == {"orders": {"w": "majority"}, "users": None}


def test_two_clients_see_the_same_data(standin, db):
    other = pymongo.MongoClient(standin.url, serverSelectionTimeoutMS=2000)
    try:
        db.products.insert_one({"_id": "shared"})
        assert other[db.name].products.find_one() == {"_id": "shared"}
    finally:
        other.close()


def test_a_frozen_standin_times_out_and_answers_again_when_thawed(standin, db):
    db.command("ping")
    standin.freeze()
    try:
        with pytest.raises(PyMongoError), pymongo.timeout(0.3):
            db.command("ping")
    finally:
        standin.thaw()
    assert db.command("ping")["ok"] == 1.0


def test_a_client_can_be_pointed_at_the_port_before_the_standin_starts():
    standin = MongoStandIn()
    client = pymongo.MongoClient(standin.url, serverSelectionTimeoutMS=10_000)
    try:
        with pytest.raises(PyMongoError), pymongo.timeout(0.3):
            client.admin.command("ping")
        with standin:
            assert client.admin.command("ping")["ok"] == 1.0
    finally:
        client.close()


# The stand-in keeps its own indexes beside mongomock (on the fields the indexes
# name); these show they stay right as documents come, change and go.


def test_lookups_by_indexed_fields_follow_updates_upserts_and_deletes(db):
    db.orders.create_index("status")
    db.orders.insert_many([{"_id": n, "status": "pending"} for n in range(5)])

    db.orders.update_one({"_id": 1}, {"$set": {"status": "placed"}})
    db.orders.update_many({"_id": {"$in": [2, 3]}}, {"$set": {"status": "failed"}})
    db.orders.find_one_and_update({"status": "pending"}, {"$set": {"status": "placed"}})
    db.orders.update_one({"_id": 9}, {"$set": {"status": "placed"}}, upsert=True)
    db.orders.replace_one({"_id": 4}, {"status": "cancelled"})
    db.orders.delete_one({"_id": 1})

    def ids(status):
        return [d["_id"] for d in db.orders.find({"status": status})]

    assert ids("pending") == []
    assert ids("placed") == [0, 9]
    assert ids("failed") == [2, 3]
    assert [d["_id"] for d in db.orders.find({"status": {"$in": ["cancelled", "failed"]}})] == [
        2,
        3,
        4,
    ]
    assert db.orders.count_documents({"_id": 1}) == 0
    assert db.orders.count_documents({"status": "placed", "_id": 9}) == 1


def test_a_unique_index_follows_updates_and_deletes_and_refuses_a_duplicate_made_by_update(db):
    db.users.create_index("email", unique=True)
    db.users.insert_many([{"_id": 1, "email": "a"}, {"_id": 2, "email": "b"}])
    db.users.create_index("email", unique=True)  # again, as each app process does at start

    with pytest.raises(DuplicateKeyError):
        db.users.update_one({"_id": 2}, {"$set": {"email": "a"}})
    with pytest.raises(DuplicateKeyError):
        db.users.update_one({"_id": 3}, {"$set": {"email": "b"}}, upsert=True)
    db.users.update_one({"_id": 1}, {"$set": {"email": "c"}})
    db.users.insert_one({"_id": 4, "email": "a"})  # "a" is free again
    db.users.delete_one({"_id": 2})
    db.users.insert_one({"_id": 5, "email": "b"})

    assert sorted((d["email"], d["_id"]) for d in db.users.find()) == [
        ("a", 4),
        ("b", 5),
        ("c", 1),
    ]
    assert db.users.find_one({"email": "b"})["_id"] == 5
    assert db.users.find_one({"email": "c"})["_id"] == 1


def test_a_unique_index_is_refused_over_duplicates_and_gone_with_its_collection(db):
    db.users.insert_many([{"email": "a"}, {"email": "a"}])

    with pytest.raises(DuplicateKeyError):
        db.users.create_index("email", unique=True)
    db.users.drop()
    db.users.create_index("email", unique=True)
    db.users.insert_one({"email": "a"})
    with pytest.raises(DuplicateKeyError):
        db.users.insert_one({"email": "a"})
    db.drop_collection("users")
    db.users.insert_many([{"email": "a"}, {"email": "a"}])

    assert db.users.count_documents({"email": "a"}) == 2


def test_the_highest_seq_and_the_seqs_after_one_follow_inserts_updates_and_deletes(db):
    db.events.create_index("seq", unique=True)
    db.events.insert_many([{"seq": n, "n": n} for n in range(1, 8)])

    def highest():
        return db.events.find_one({}, {"seq": 1, "_id": 0}, sort=[("seq", -1)])

    assert highest() == {"seq": 7}
    db.events.delete_one({"seq": 7})
    assert highest() == {"seq": 6}
    db.events.update_one({"seq": 2}, {"$set": {"seq": 20}})
    assert highest() == {"seq": 20}
    assert [d["n"] for d in db.events.find({"seq": {"$gt": 4}}).sort("seq", 1).limit(2)] == [5, 6]
    assert [d["n"] for d in db.events.find({"seq": {"$gte": 5, "$lt": 20}})] == [5, 6]
    # Without a sort, in the order they were inserted (n 2 holds seq 20 now).
    assert [d["n"] for d in db.events.find({"seq": {"$gt": 3}, "n": {"$ne": 4}}).limit(2)] == [
        2,
        5,
    ]
    # A value of another type sorts by MongoDB's rules, not the index's.
    assert [d["n"] for d in db.events.find().sort("seq", -1)] == [2, 6, 5, 4, 3, 1]
    db.events.insert_one({"seq": "x", "n": 0})
    assert highest() == {"seq": "x"}


def test_queries_through_an_array_of_documents_follow_push_and_pull(db):
    db.orders.create_index("outbox._id")
    db.orders.insert_many([{"_id": 1, "outbox": []}, {"_id": 2}])
    db.orders.update_one({"_id": 1}, {"$push": {"outbox": {"_id": "e1"}}})
    db.orders.update_one({"_id": 2}, {"$push": {"outbox": {"_id": "e2"}}})

    assert [d["_id"] for d in db.orders.find({"outbox._id": {"$gt": ""}})] == [1, 2]
    db.orders.update_one({"_id": 1}, {"$pull": {"outbox": {"_id": "e1"}}})
    assert [d["_id"] for d in db.orders.find({"outbox._id": {"$gt": ""}})] == [2]
    assert [d["_id"] for d in db.orders.find({"outbox._id": "e2"})] == [2]


def test_a_ttl_index_expires_documents_past_their_time(db):
    db.sessions.create_index("expires_at", expireAfterSeconds=0)
    now = datetime.now(UTC)
    db.sessions.insert_many(
        [
            {"_id": "old", "expires_at": now - timedelta(seconds=1)},
            {"_id": "new", "expires_at": now + timedelta(hours=1)},
        ]
    )

    assert [d["_id"] for d in db.sessions.find()] == ["new"]
    assert db.sessions.find_one({"_id": "old"}) is None


class RandomOperations:
    """Operations drawn at random over a few indexed fields and values of mixed types."""

    VALUES = (0, 1, 1.0, 2, 3, "x", "y", None, [1, 2], ["x"], {"k": 1})
    KINDS = ("insert", "update", "upsert", "many", "delete", "find", "top", "count", "all")

    def __init__(self, seed):
        self.chance = random.Random(seed)

    def value(self):
        return self.chance.choice(self.VALUES)

    def document(self, step):
        nested = self.chance.choice([{"d": self.value()}, [{"d": 1}, {"d": "x"}], 5])
        doc = {"_id": step, "a": self.value(), "b": self.chance.randrange(4), "c": nested}
        if self.chance.random() < 0.3:
            doc["u"] = self.chance.randrange(30)
        return doc

    def query(self):
        field = self.chance.choice(["a", "b", "c.d", "_id", "u"])
        condition = self.chance.choice(
            [
                self.value(),
                {"$in": [self.value(), self.value()]},
                {"$gt": self.chance.choice([0, 1, "x"])},
                {"$lte": self.chance.choice([1, 2.5, "y"])},
                {"$gte": 1, "$lt": 3},
                {"$ne": self.value()},
            ]
        )
        if self.chance.random() < 0.3:
            return {field: condition, "b": {"$gte": 0}}
        return {field: condition}

    def operation(self, step):
        """(kind, a function of a collection that runs it and returns its answer)."""
        kind, q, doc = self.chance.choice(self.KINDS), self.query(), self.document(step)
        change = {"$set": {"a": self.value(), "c": {"d": self.value()}}, "$inc": {"b": 1}}
        direction = self.chance.choice([1, -1])
        if "u" in doc:
            change["$set"]["u"] = doc["u"]
        calls = {
            "insert": lambda c: c.insert_one(dict(doc)).inserted_id,
            "update": lambda c: c.update_one(q, change).modified_count,
            "upsert": lambda c: (
                c.update_one({"_id": f"u{step % 7}"}, change, upsert=True).upserted_id
            ),
            "many": lambda c: c.update_many(q, {"$inc": {"b": 1}}).modified_count,
            "delete": lambda c: c.delete_one(q).deleted_count,
            "find": lambda c: list(c.find(q)),
            "top": lambda c: list(c.find(q).sort([("b", -1), ("_id", 1)]).limit(3)),
            "count": lambda c: c.count_documents(q),
            "all": lambda c: list(c.find().sort("b", direction)),
        }
        return (kind, q), calls[kind]


def _answer(operation, collection):
    try:
        return operation(collection)
    except DuplicateKeyError:
        return "duplicate"


def test_random_operations_answer_as_mongomock_alone_does(db):
    plain, ours = mongomock.MongoClient()["plain"]["things"], db.things
    for collection in (plain, ours):
        collection.create_index("a")
        collection.create_index([("b", 1), ("a", -1)])
        collection.create_index("c.d")
        collection.create_index("u", unique=True, sparse=True)
    operations = RandomOperations(seed=20)

    for step in range(400):
        what, operation = operations.operation(step)

        assert _answer(operation, plain) == _answer(operation, ours), (step, what)
        assert list(plain.find()) == list(ours.find()), (step, what)
