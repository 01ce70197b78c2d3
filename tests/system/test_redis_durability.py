"""What a 201 on reserve promises under each Redis durability setting (docs/operations.md
"What survives what"), on real redis-server processes.

- REDIS_ACK_REPLICAS=N: the reservation is on N replicas before the 201; fewer within
  REDIS_ACK_TIMEOUT_MS and the hold is released, the answer 503. On one primary with
  a replica, and on a Redis Cluster (per slot's primary).
- The default, 0: the primary's word, whatever its replicas do.
- The append-only file (everysec, the compose default, or always): a held reservation
  survives the Redis process being killed and restarted. Where the two differ (the
  machine losing power: everysec may lose the last second) cannot be shown here.
"""

import threading
import time

import pytest
import redis
from redis.crc import key_slot

from flashcart import create_app
from flashcart.auth import service as accounts
from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.keys import Keys
from tests.support.app import PASSWORD, app_settings
from tests.support.redis_server import RedisServer

RESERVE = "/api/v1/sales/reserve/{}"
STOCK = 5


def wait_in_sync(primary, replica, timeout=10):
    """Until the replica's link is up and the primary counts it (WAIT can then count it)."""
    deadline = time.monotonic() + timeout
    with redis.Redis(port=replica.port) as r, redis.Redis(port=primary.port) as p:
        while True:
            if (
                r.info("replication")["master_link_status"] == "up"
                and p.info("replication")["connected_slaves"] >= 1
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the replica did not sync")
            time.sleep(0.05)


@pytest.fixture
def primary():
    # A replica's first sync starts at once (Redis waits 5 s by default for others).
    with RedisServer(args=["--repl-diskless-sync-delay", "0"]) as server:
        yield server


@pytest.fixture
def replica(primary):
    server = RedisServer(
        args=["--replicaof", "127.0.0.1", str(primary.port), "--enable-debug-command", "local"]
    ).start()
    try:
        wait_in_sync(primary, server)
        yield server
    finally:
        server.stop()


def shop(redis_url, mongo_db, **settings):
    """An app on `redis_url` (connected as production does), a live product of STOCK
    units (limit 3), and a shopper: (client, product id, shopper id, headers)."""
    app = create_app(app_settings() | {"REDIS_URL": redis_url} | settings, db=mongo_db)
    client = app.test_client()
    with app.app_context():
        admin = accounts.register(email="a@x.io", password=PASSWORD, name="A", role="admin")
        shopper = accounts.register(email="s@x.io", password=PASSWORD, name="S")
        admin_token = accounts.issue_token(admin)["access_token"]
        shopper_token = accounts.issue_token(shopper)["access_token"]
    admin_headers = {"Authorization": f"Bearer {admin_token}"}
    body = {"name": "Drop", "price": "5.00", "stock": STOCK, "per_user_limit": 3}
    product = client.post("/api/v1/products", json=body, headers=admin_headers).json["id"]
    assert client.post(f"/api/v1/sales/start/{product}", headers=admin_headers).status_code == 200
    return client, product, shopper["id"], {"Authorization": f"Bearer {shopper_token}"}


def sale(client_redis, product_id):
    """(available, held, sold, {user: units}) as the engine reads them on `client_redis`."""
    engine = Inventory(client_redis)
    snapshot = engine.snapshot(product_id)
    return snapshot.available, snapshot.held, snapshot.sold, engine.user_units(product_id)


def asleep(server, seconds):
    """Make `server` answer nothing (replication included) for `seconds`, from now."""
    client = redis.Redis(port=server.port, socket_timeout=seconds + 5)
    thread = threading.Thread(target=client.execute_command, args=("DEBUG", "SLEEP", seconds))
    thread.start()
    time.sleep(0.1)  # DEBUG SLEEP has begun
    return thread


# -- one primary and its replica -----------------------------------------------------


def test_with_ack_replicas_a_201_waits_until_the_replica_has_the_reservation(
    primary, replica, mongo_db
):
    client, product, shopper, headers = shop(
        primary.url, mongo_db, REDIS_ACK_REPLICAS=1, REDIS_ACK_TIMEOUT_MS=5000
    )
    sleeper = asleep(replica, 1.0)
    started = time.monotonic()
    response = client.post(RESERVE.format(product), json={"quantity": 2}, headers=headers)
    waited = time.monotonic() - started
    sleeper.join()

    assert response.status_code == 201, response.json
    # The answer waited for the sleeping replica (the primary alone answers at once).
    assert waited > 0.5
    with redis.Redis.from_url(replica.url, decode_responses=True) as on_replica:
        hold = on_replica.hgetall(Keys(product).hold(response.json["id"]))
        assert (hold["user"], hold["quantity"]) == (shopper, "2")
        assert sale(on_replica, product) == (STOCK - 2, 2, 0, {shopper: 2})


def test_with_ack_replicas_and_the_replica_down_reserve_is_503_and_nothing_is_held(
    primary, replica, mongo_db
):
    client, product, shopper, headers = shop(
        primary.url, mongo_db, REDIS_ACK_REPLICAS=1, REDIS_ACK_TIMEOUT_MS=200
    )
    replica.stop()

    response = client.post(RESERVE.format(product), json={"quantity": 2}, headers=headers)

    assert response.status_code == 503
    assert response.json["code"] == "service_unavailable"
    assert response.headers["Retry-After"] == "2"
    assert "0 of 1 Redis replicas" in response.json["detail"]
    # The hold was taken back: total = available + held + sold, the count untouched.
    with redis.Redis.from_url(primary.url, decode_responses=True) as on_primary:
        available, held, sold, users = sale(on_primary, product)
        assert (available, held, sold) == (STOCK, 0, 0)
        assert users.get(shopper, 0) == 0
        assert on_primary.zcard(Keys(product).deadlines) == 0

    # The replica back: reservations succeed again, by themselves.
    replica.start()
    wait_in_sync(primary, replica)
    again = client.post(RESERVE.format(product), json={"quantity": 2}, headers=headers)
    assert again.status_code == 201, again.json


def test_with_ack_replicas_a_replica_slower_than_the_timeout_means_503(primary, replica, mongo_db):
    client, product, shopper, headers = shop(
        primary.url, mongo_db, REDIS_ACK_REPLICAS=1, REDIS_ACK_TIMEOUT_MS=200
    )
    sleeper = asleep(replica, 1.0)
    response = client.post(RESERVE.format(product), json={"quantity": 1}, headers=headers)
    sleeper.join()

    assert (response.status_code, response.json["code"]) == (503, "service_unavailable")
    with redis.Redis.from_url(primary.url, decode_responses=True) as on_primary:
        available, held, sold, users = sale(on_primary, product)
    assert (available, held, sold, users.get(shopper, 0)) == (STOCK, 0, 0, 0)


def test_by_default_a_201_is_the_primarys_word_whatever_its_replicas_do(primary, replica, mongo_db):
    client, product, shopper, headers = shop(primary.url, mongo_db)
    replica.stop()

    response = client.post(RESERVE.format(product), json={"quantity": 2}, headers=headers)

    assert response.status_code == 201, response.json
    with redis.Redis.from_url(primary.url, decode_responses=True) as on_primary:
        assert sale(on_primary, product) == (STOCK - 2, 2, 0, {shopper: 2})


def test_ack_replicas_needs_a_timeout_since_wait_0_blocks_for_ever():
    with pytest.raises(ValueError, match="ack_timeout_ms"):
        Inventory(redis.Redis(), ack_replicas=1, ack_timeout_ms=0)
    with pytest.raises(ValueError, match="ack_replicas"):
        Inventory(redis.Redis(), ack_replicas=-1)


# -- the append-only file ------------------------------------------------------------


@pytest.mark.parametrize("fsync", ["everysec", "always"])
def test_a_held_reservation_survives_redis_killed_and_restarted_with_its_aof(mongo_db, fsync):
    with RedisServer(args=["--appendonly", "yes", "--appendfsync", fsync]) as server:
        client, product, shopper, headers = shop(server.url, mongo_db)
        response = client.post(RESERVE.format(product), json={"quantity": 2}, headers=headers)
        assert response.status_code == 201

        server.restart()  # SIGKILL: no goodbye, the AOF as it was written

        with redis.Redis.from_url(server.url, decode_responses=True) as restarted:
            assert restarted.hgetall(Keys(product).hold(response.json["id"]))["user"] == shopper
            assert sale(restarted, product) == (STOCK - 2, 2, 0, {shopper: 2})


# -- a Redis Cluster -----------------------------------------------------------------


def on_cluster_replica(redis_cluster, key):
    """`key`'s hash, read on a replica of the master of its slot (READONLY)."""
    port = redis_cluster.replica_of(redis_cluster.master_of(key))
    with redis.Redis(port=port, decode_responses=True) as node, node.pipeline(False) as pipe:
        pipe.execute_command("READONLY")
        pipe.hgetall(key)
        return pipe.execute()[-1]


def test_on_a_cluster_ack_replicas_waits_on_the_primary_of_the_products_slot(
    redis_cluster, mongo_db
):
    redis_cluster.flushall()
    client, product, shopper, headers = shop(
        redis_cluster.url, mongo_db, REDIS_ACK_REPLICAS=1, REDIS_ACK_TIMEOUT_MS=2000
    )
    response = client.post(RESERVE.format(product), json={"quantity": 2}, headers=headers)

    assert response.status_code == 201, response.json
    hold_key = Keys(product).hold(response.json["id"])
    assert on_cluster_replica(redis_cluster, hold_key)["user"] == shopper
    # The mark written before WAIT lives in the product's slot.
    assert key_slot(Keys(product).acked.encode()) == key_slot(hold_key.encode())


def test_on_a_cluster_asking_more_replicas_than_a_primary_has_means_503_and_no_hold(
    redis_cluster, mongo_db
):
    redis_cluster.flushall()
    client, product, shopper, headers = shop(
        redis_cluster.url, mongo_db, REDIS_ACK_REPLICAS=2, REDIS_ACK_TIMEOUT_MS=200
    )
    response = client.post(RESERVE.format(product), json={"quantity": 2}, headers=headers)

    assert (response.status_code, response.json["code"]) == (503, "service_unavailable")
    assert "1 of 2 Redis replicas" in response.json["detail"]
    with redis_cluster.client() as cluster:
        available, held, sold, users = sale(cluster, product)
    assert (available, held, sold, users.get(shopper, 0)) == (STOCK, 0, 0, 0)
