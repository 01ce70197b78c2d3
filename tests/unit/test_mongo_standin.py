"""The MongoDB stand-in (tests/support/mongo_standin.py) answers PyMongo like a MongoDB server,
for every operation the app uses: the multi-process tests and MONGO_TEST_URI rely on it."""

import os
from datetime import UTC, datetime

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
