"""MongoDB as a replica set or sharded cluster: URI options, the orders' write concern,
and indexes for every query (README "Scaling out"). No server is needed: PyMongo
clients are built with connect=False and only their settings are read."""

import mongomock
import pymongo
import pytest

from flashcart.stores import connect_mongo, ensure_indexes, index_plan, orders_collection

REPLICA_SET_URI = (
    "mongodb://db1:27017,db2:27017,db3:27017/shop"
    "?replicaSet=rs0&w=majority&readPreference=primary&retryWrites=true&maxPoolSize=50"
)


def test_replica_set_and_driver_options_come_from_mongo_uri():
    db = connect_mongo(REPLICA_SET_URI, timeout_ms=1500)
    options = db.client.options

    assert db.name == "shop"
    assert options.replica_set_name == "rs0"
    assert options.read_preference == pymongo.ReadPreference.PRIMARY
    assert db.write_concern.document == {"w": "majority"}
    assert options.retry_writes is True
    assert options.pool_options.max_pool_size == 50
    # The fail-fast timeouts are FlashCart's (MONGO_TIMEOUT_MS), whatever the URI says.
    assert options.server_selection_timeout == 1.5
    assert options.pool_options.connect_timeout == 1.5
    db.client.close()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("majority", {"w": "majority"}), ("2", {"w": 2}), ("", {"w": 1})],
)
def test_orders_are_written_with_the_configured_write_concern(setting, expected):
    db = connect_mongo("mongodb://db1:27017/flashcart?w=1")

    assert orders_collection(db, setting).write_concern.document == expected
    assert db.products.write_concern.document == {"w": 1}  # the rest keeps the URI's
    db.client.close()


def test_the_embedded_database_keeps_its_plain_orders_collection():
    db = mongomock.MongoClient().flashcart
    assert orders_collection(db, "majority") is db.orders


def test_every_paged_list_and_sweeper_query_has_an_index(mongo_db):
    db = mongo_db
    ensure_indexes(db)
    keys = {
        collection: [info["key"] for info in db[collection].index_information().values()]
        for collection in index_plan()
    }
    newest_first = [("created_at", -1), ("_id", -1)]

    assert newest_first in keys["products"]  # the catalogue, newest first
    assert [("sale_status", 1)] in keys["products"]  # sales in progress (sweeper, audit)
    assert [("user_id", 1), *newest_first] in keys["orders"]  # my orders
    assert newest_first in keys["orders"]  # every order (admin)
    assert [("reservation_id", 1)] in keys["orders"]  # checkout, one order per hold
    assert [("product_id", 1), ("status", 1)] in keys["orders"]  # audit, in-flight checks
    assert [("status", 1), ("updated_at", 1)] in keys["orders"]  # the sweeper's stale orders
