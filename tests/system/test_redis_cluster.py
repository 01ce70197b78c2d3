"""FlashCart on a real Redis Cluster (tests/support/cluster_servers.py starts one per session).

What a cluster adds: keys live in 16384 hash slots spread over masters, a WATCH/MULTI
transaction may only touch keys of one slot, and the client must follow the slot map
through failovers. The concurrency scenarios of tests/system/test_inventory_concurrency.py
and tests/system/test_api_concurrency.py run on the cluster too (`real_redis_url`); the
failover and several API hosts are in tests/system/test_scale_out.py.
"""

import contextlib

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from flashcart import create_app
from flashcart.auth import service as accounts
from flashcart.checkout import recovery
from flashcart.idempotency import _record_key
from flashcart.products.service import TRENDING_KEY, cache_key
from flashcart.redis_cluster import ClusterClient, parse_url
from flashcart.sales import service as sale_service
from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.keys import LIVE, Keys
from flashcart.sales.engine.records import SalePlan
from flashcart.stores import connect_redis
from tests.support.app import PASSWORD, app_settings

RESERVE = "/api/v1/sales/reserve/{}"
ORDERS = "/api/v1/orders"


# -- the URL -------------------------------------------------------------------------


def test_a_cluster_url_names_startup_nodes_credentials_and_tls():
    nodes, options = parse_url("rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002")

    assert [(node.host, node.port) for node in nodes] == [
        ("10.0.0.1", 7000),
        ("10.0.0.2", 6379),
        ("::1", 7002),
    ]
    assert options == {"ssl": True, "username": "app", "password": "s@cret"}
    assert parse_url("redis+cluster://h:7000/0")[1] == {}


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://h:7000/1", "redis+cluster://", "redis+cluster://h:7000?x=1", "redis://h"],
)
def test_a_bad_cluster_url_is_refused_with_a_reason(url):
    with pytest.raises(ValueError, match="database 0|host:port|not a Redis Cluster URL"):
        parse_url(url)


def test_an_unreachable_cluster_is_a_connection_error_so_the_api_answers_503():
    with pytest.raises(redis.ConnectionError):
        connect_redis("redis+cluster://127.0.0.1:1", timeout=0.2)


# -- the key design ------------------------------------------------------------------


def test_every_key_of_a_product_shares_one_hash_slot_and_each_user_has_its_own():
    keys = Keys("6650f0c2a1b2c3d4e5f60718")
    product_keys = [
        keys.sale,
        keys.sold,
        keys.deadlines,
        keys.claimed,
        keys.restored,
        keys.buyers,
        keys.hold("6650f0c2a1b2c3d4e5f60718.x"),
        keys.user("u1"),
        *keys.stripes(64),
        cache_key("6650f0c2a1b2c3d4e5f60718"),
    ]
    assert len({key_slot(key.encode()) for key in product_keys}) == 1
    user_keys = [_record_key("u1", "a"), _record_key("u1", "b")]
    assert len({key_slot(key.encode()) for key in user_keys}) == 1
    # Different products land on different slots, so drops spread over the masters.
    slots = {key_slot(Keys(f"{n:024x}").sale.encode()) for n in range(200)}
    assert len(slots) > 150


def test_a_transaction_over_two_products_is_refused_by_the_client(redis_cluster):
    client = connect_redis(redis_cluster.url)
    refused = pytest.raises(redis.exceptions.RedisClusterException, match="same key slot")
    with client.pipeline(transaction=True) as pipe, refused:
        pipe.watch(Keys("a" * 24).sale, Keys("b" * 24).sale)
    client.close()


@contextlib.contextmanager
def watching_then_dropped(client, key):
    """A transaction that WATCHed `key`; then its connection drops and another client
    changes the key. Yields the pipeline at that moment."""
    node = redis.Redis(port=client.get_node_from_key(key).port, decode_responses=True)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            assert pipe.get(key) == "1"
            node.client_kill_filter(_type="normal")  # every client connection, not ours
            node.set(key, 0)  # someone else takes the last unit
            yield pipe
    finally:
        node.close()


def test_a_transaction_that_lost_its_connection_after_watch_never_commits(redis_cluster):
    """redis-py 8.1's RedisCluster would re-send the read on a new connection, without
    the WATCH, and commit (stock -1). FlashCart's cluster client fails instead."""
    client = connect_redis(redis_cluster.url)
    key = Keys("c" * 24).stripe(0)
    client.set(key, 1)
    with pytest.raises(redis.ConnectionError), watching_then_dropped(client, key) as pipe:
        pipe.get(key)
        pipe.multi()
        pipe.decr(key)
        pipe.execute()
    assert client.get(key) == "0"
    client.close()


def test_a_transaction_sent_where_the_slot_no_longer_lives_runs_again_on_its_owner(
    redis_cluster,
):
    """As after a failover or a moved slot: the first WATCH gets MOVED, the client
    refreshes its slot map and the engine runs the transaction again, there."""
    client = connect_redis(redis_cluster.url)
    product_id, retries = "f" * 24, []
    engine = Inventory(client, on_retry=lambda: retries.append(1))
    engine.open_sale(product_id, SalePlan(status=LIVE, limit=5, total=5, sold_by_user={}))
    slot = client.keyslot(Keys(product_id).sale)
    owner = client.nodes_manager.slots_cache[slot][0].name
    for each in (client, client.transactions):  # both slot maps are out of date
        stale = next(node for node in each.get_primaries() if node.name != owner)
        each.nodes_manager.slots_cache[slot] = [stale]

    engine.reserve(product_id, "u1", 2)

    assert retries == [1]
    assert client.transactions.get_node_from_key(Keys(product_id).sale).name == owner
    assert engine.snapshot(product_id).held == 2
    client.close()


def test_a_plain_pipeline_may_read_many_keys_of_one_slot_but_not_of_two(redis_cluster):
    client = connect_redis(redis_cluster.url)
    keys = Keys("d" * 24)
    client.set(keys.stripe(0), 3)
    with client.pipeline(transaction=False) as pipe:  # as redis_wire.query sends it
        pipe.execute_command("MGET", *keys.stripes(2))
        pipe.zincrby(TRENDING_KEY, 1, "d" * 24)  # another slot, another node perhaps
        assert pipe.execute() == [["3", None], 1.0]
    refused = pytest.raises(redis.exceptions.RedisClusterException, match="same key slot")
    with client.pipeline(transaction=False) as pipe, refused:
        pipe.execute_command("MGET", keys.sale, Keys("e" * 24).sale)
        pipe.execute()
    client.close()


def test_flashcart_connects_with_its_own_cluster_client(redis_cluster):
    client = connect_redis(redis_cluster.url, timeout=0.5)
    assert isinstance(client, ClusterClient)
    assert {(node.host, node.port) for node in client.get_primaries()} <= {
        ("127.0.0.1", port) for port in redis_cluster.ports
    }
    assert len(client.get_primaries()) == 3
    assert (
        sorted(redis_cluster.role(port) for port in redis_cluster.ports)
        == ["master"] * 3 + ["slave"] * 3
    )
    client.close()


# -- the API on a cluster --------------------------------------------------------------


@pytest.fixture
def cluster_app(redis_cluster, mongo_db):
    """The app as production builds it: REDIS_URL names the cluster, no client handed in,
    and rate limits on (their counters live in the cluster too)."""
    redis_cluster.flushall()
    config = app_settings() | {
        "REDIS_URL": redis_cluster.url,
        "RATELIMIT_ENABLED": True,
        "RATELIMIT_GLOBAL": "",
        "RATELIMIT_RESERVE_PER_USER": "4 per minute",
        "SWEEP_GRACE_SECONDS": 0,
    }
    return create_app(config, db=mongo_db)


@pytest.fixture
def cluster_client(cluster_app):
    return cluster_app.test_client()


def auth(app, role, email):
    """(user, Authorization header) for a new account."""
    with app.app_context():
        user = accounts.register(email=email, password=PASSWORD, name="N", role=role)
        return user, {"Authorization": f"Bearer {accounts.issue_token(user)['access_token']}"}


def test_an_api_host_starts_while_the_cluster_is_unreachable_and_answers_503(mongo_db):
    config = app_settings() | {
        "REDIS_URL": "redis+cluster://127.0.0.1:1,127.0.0.1:2",
        "REDIS_TIMEOUT_SECONDS": 0.3,
        # limits' own cluster storage would connect (and fail) while the app is built.
        "RATELIMIT_ENABLED": True,
        # Off, so that no request marks the limiter's storage dead: the limiter object
        # is shared by the apps of this test process (one app per process in production).
        "RATELIMIT_GLOBAL": "",
    }
    client = create_app(config, db=mongo_db).test_client()

    assert client.get("/api/v1/products").status_code == 200  # MongoDB only
    for path in ("/readyz", f"/api/v1/sales/stock/{'a' * 24}"):
        response = client.get(path)
        assert (response.status_code, response.json["code"]) == (503, "redis_unavailable")


def test_readyz_on_a_cluster_pings_every_primary(cluster_client):
    response = cluster_client.get("/readyz")
    assert response.status_code == 200, response.json


def test_a_drop_on_a_cluster_trending_idempotency_rate_limits_sweep_and_audit(
    cluster_app, cluster_client, redis_cluster
):
    app, client = cluster_app, cluster_client
    _, admin = auth(app, "admin", "admin@x.io")
    shopper, headers = auth(app, "user", "shopper@x.io")
    products = []
    for name in ("A", "B", "C"):
        body = {"name": name, "price": "5.00", "stock": 6, "per_user_limit": 3}
        created = client.post("/api/v1/products", json=body, headers=admin)
        assert created.status_code == 201
        assert client.post(f"/api/v1/sales/start/{created.json['id']}", headers=admin).status_code
        products.append(created.json["id"])
    a, b, c = products
    cluster = RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", port) for port in redis_cluster.ports],
        decode_responses=True,
    )
    # The three sales live on their own slots (often on different masters).
    assert len({cluster.keyslot(Keys(p).sale) for p in products}) == 3

    # Trending: one sorted set across every product's slot.
    for product_id, views in ((b, 3), (c, 2), (a, 1)):
        for _ in range(views):
            assert client.get(f"/api/v1/products/{product_id}").status_code == 200
    trending = client.get("/api/v1/products/trending").json
    assert [(item["product"]["id"], item["views"]) for item in trending] == [(b, 3), (c, 2), (a, 1)]

    # An idempotent reservation: replayed, not repeated (the key is the user's, not A's).
    key = {"Idempotency-Key": "reserve-a-1"}
    first = client.post(RESERVE.format(a), json={"quantity": 2}, headers=headers | key)
    again = client.post(RESERVE.format(a), json={"quantity": 2}, headers=headers | key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json == first.json
    assert client.get(f"/api/v1/sales/stock/{a}").json["available"] == 4

    # Check out A, reserve B (then let it go), cancel A's order.
    order = client.post(ORDERS, json={"reservation_id": first.json["id"]}, headers=headers)
    assert order.status_code == 201
    held_b = client.post(RESERVE.format(b), json={"quantity": 1}, headers=headers)
    assert held_b.status_code == 201
    assert client.delete(f"{ORDERS}/{order.json['id']}", headers=headers).status_code == 200

    # The per-user reservation limit counts in the cluster: 4 per minute, 3 used so far
    # (the limit is checked before the Idempotency-Key, so the replay counted).
    assert client.post(RESERVE.format(c), json={}, headers=headers).status_code == 201
    limited = client.post(RESERVE.format(c), json={}, headers=headers)
    assert limited.status_code == 429 and limited.json["code"] == "too_many_requests"
    assert any(k.startswith("LIMITS:") for k in cluster.keys(target_nodes=cluster.PRIMARIES))

    # The sweeper and the audit go product by product: no cross-slot transaction.
    with app.app_context():
        engine = sale_service.inventory()
        far_future = Inventory(engine.redis, clock=lambda: 4e9)
        assert far_future.release_expired(b) == 1
        recovery.sweep()
        rows = {row["product_id"]: row for row in recovery.audit()}
    assert all(row["ok"] for row in rows.values()), rows
    assert [(rows[p]["available"], rows[p]["held"], rows[p]["sold"]) for p in products] == [
        (6, 0, 0),
        (6, 0, 0),
        (5, 1, 0),
    ]
    cluster.close()


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.MovedError("3999 127.0.0.1:6381"),
        redis.exceptions.SlotNotCoveredError("slot 3999 not covered"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_cluster_mid_failover_or_resharding_answers_503_redis_unavailable(
    client, make_product, user_headers, monkeypatch, error
):
    product = make_product(live=True)

    def unavailable(*args, **kwargs):
        raise error

    monkeypatch.setattr(Inventory, "reserve", unavailable)
    response = client.post(RESERVE.format(product["id"]), json={}, headers=user_headers)

    assert response.status_code == 503
    assert response.json["code"] == "redis_unavailable"
    assert int(response.headers["Retry-After"]) > 0


# -- a failover that lost a claim ------------------------------------------------------


@contextlib.contextmanager
def writes_lost(url, product_id):
    """Whatever the block does to the product's Redis keys is undone afterwards, as when
    a master dies before its replica received those writes and the replica takes over."""
    if url.startswith("redis+cluster://"):
        raw = RedisCluster(startup_nodes=parse_url(url)[0])
        list_keys = lambda pattern: raw.keys(pattern, target_nodes=raw.PRIMARIES)  # noqa: E731
    else:
        raw = redis.Redis.from_url(url)
        list_keys = raw.keys
    pattern = Keys(product_id).prefix + "*"
    before = {key: raw.dump(key) for key in list_keys(pattern)}
    try:
        yield
    finally:
        for key in list_keys(pattern):
            if key not in before:
                raw.delete(key)
        for key, payload in before.items():
            raw.restore(key, 0, payload, replace=True)
        raw.close()


@pytest.fixture
def app_config(real_redis_url):
    return {"REDIS_URL": real_redis_url, "SWEEP_GRACE_SECONDS": 0}


@pytest.fixture
def redis_client(real_redis_url):
    client = connect_redis(real_redis_url)
    yield client
    client.close()


def test_a_claim_lost_in_a_failover_is_found_by_audit_and_repair_sells_it_once(
    app, client, make_product, user_headers, user, real_redis_url, sale_state
):
    product_id = make_product(live=True, stock=5, per_user_limit=2)["id"]
    reserved = client.post(RESERVE.format(product_id), json={"quantity": 2}, headers=user_headers)
    with writes_lost(real_redis_url, product_id):
        order = client.post(
            ORDERS, json={"reservation_id": reserved.json["id"]}, headers=user_headers
        )
        assert order.status_code == 201 and order.json["status"] == "placed"

    # Redis is back before the claim: the hold is live again, nothing sold.
    assert sale_state(product_id) | {"users": None} == {
        "status": "live",
        "available": 3,
        "held": 2,
        "sold": 0,
        "limit": 2,
        "users": None,
    }
    with app.app_context():
        [found] = recovery.audit()
        [repaired] = recovery.audit(repair=True)
        engine = sale_service.inventory()
        # The hold is gone: even an engine that does not ask MongoDB before returning
        # an expired hold's units (as the app's does) finds nothing to put back.
        assert Inventory(engine.redis, clock=lambda: 4e9).release_expired(product_id) == 0
        [after] = recovery.audit()

    assert (found["ok"], found["holds_sold"], found["sold"], found["redis_sold"]) == (
        False,
        2,
        2,
        0,
    )
    assert (found["oversold"], found["drift"]) == (0, 0)
    assert repaired["ok"] and repaired["repaired"] and after["ok"]
    assert sale_state(product_id) == {
        "status": "live",
        "available": 3,
        "held": 0,
        "sold": 2,
        "limit": 2,
        "users": {user["id"]: 2},
    }
