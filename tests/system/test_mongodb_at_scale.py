"""MongoDB as a replica set or sharded cluster: URI options, the orders' write concern,
and indexes for every query (docs/scaling-out.md). Settings are read from PyMongo
clients built with connect=False; what goes over the wire is read from the MongoDB
stand-in (tests/support/mongo_standin.py), which records every command it receives."""

import os

import mongomock
import pymongo
import pytest

from flashcart import create_app
from flashcart.auth import service as accounts
from flashcart.extensions import stores
from flashcart.stores import connect_mongo, ensure_indexes, index_plan, orders_collection
from tests.support.app import PASSWORD, app_settings
from tests.support.mongo_standin import MongoStandIn

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
    assert [("outbox._id", 1)] in keys["orders"]  # the sweeper's unpublished events
    assert [("outbox._id", 1)] in keys["products"]
    assert [("seq", 1)] in keys["events"]  # the feed's order, and the next seq
    assert [("type", 1), ("seq", 1)] in keys["events"]  # the feed of some types


@pytest.fixture(scope="module")
def standin():
    with MongoStandIn() as server:
        yield server


WRITES = {"insert", "update", "findAndModify", "delete"}
ORDERS = "/api/v1/orders"
DROP = {"name": "Drop", "price": "10.00", "stock": 5, "per_user_limit": 2}


@pytest.mark.parametrize(
    ("setting", "sent"),
    [(None, {"w": "majority"}), ("2", {"w": 2}), ("", None)],
    ids=["default majority", "two members", "the URI's"],
)
def test_every_order_write_sends_the_orders_write_concern_to_the_server(
    standin, app_config, redis_client, setting, sent
):
    # The app connects by itself, as a worker does; the stand-in (whatever
    # MONGO_TEST_URI says) shows the commands that reached the server.
    database = f"write_concern_{os.urandom(4).hex()}"
    config = app_settings() | app_config | {"MONGO_URI": standin.url_of(database)}
    if setting is not None:
        config["MONGO_ORDERS_WRITE_CONCERN"] = setting
    app = create_app(config, redis_client=redis_client)
    client = app.test_client()
    with app.app_context():
        admin, shopper = (
            accounts.register(email=f"{role}@example.com", password=PASSWORD, name=role, role=role)
            for role in ("admin", "user")
        )
        as_admin, as_shopper = (
            {"Authorization": f"Bearer {accounts.issue_token(user)['access_token']}"}
            for user in (admin, shopper)
        )

    product = client.post("/api/v1/products", json=DROP, headers=as_admin).json
    client.post(f"/api/v1/sales/start/{product['id']}", headers=as_admin)
    reserved = client.post(f"/api/v1/sales/reserve/{product['id']}", json={}, headers=as_shopper)
    order = client.post(ORDERS, json={"reservation_id": reserved.json["id"]}, headers=as_shopper)
    cancelled = client.delete(f"{ORDERS}/{order.json['id']}", headers=as_shopper)
    with app.app_context():
        stores.db.client.close()

    assert (order.status_code, cancelled.json["status"]) == (201, "cancelled")
    with pymongo.MongoClient(standin.url) as mongo:
        received = mongo.admin.command("standInCommands", 1, db=database)["commands"]
    writes = [c for c in received if c["command"] in WRITES]
    # Orders and their events (docs/events.md) are written alike.
    durable = ("orders", "events")
    order_writes = [c["writeConcern"] for c in writes if c["collection"] in durable]
    other_writes = [c["writeConcern"] for c in writes if c["collection"] not in durable]
    assert len(order_writes) >= 2  # the order is written, then placed (and cancelled)
    assert any(c["collection"] == "events" for c in writes)
    assert order_writes == [sent] * len(order_writes)
    assert other_writes and other_writes == [None] * len(other_writes)
