"""Scale-out: several API hosts selling one stock, and a Redis Cluster failover mid-rush.

Each "host" is its own gunicorn master with its own workers on its own loopback
port, as separate machines behind a load balancer would be. They share only what
production hosts share: Redis (one server, or the Redis Cluster) and MongoDB, reached
with PyMongo through MONGO_URI: a fresh database on MONGO_TEST_URI's server, else
the wire-protocol stand-in (tests/support/mongo_standin.py).

- One drop through three hosts, on one redis-server and on the cluster: each
  reservation is checked out on another host than the one that took it, and the
  checkout is retried with its Idempotency-Key on a third. Exactly the stock is
  sold, once, and nobody goes over the per-user limit.
- A failover: a rush of reservations on a product whose hash slot one master owns;
  that master is SIGKILLed; its replica is promoted; the hosts find the new master
  by themselves (redis-py refreshes its slot map after the errors). Afterwards the
  runbook (sweep, audit, audit --repair) leaves total = available + held + sold
  exactly, with nothing oversold. The figures are printed (`pytest -s`).
"""

import collections
import contextlib
import os
import random
import shutil
import tempfile
import threading
import time
import uuid

import pytest

from flashcart import create_app
from flashcart.checkout import recovery
from flashcart.orders import service as order_service
from flashcart.sales import service as sale_service
from flashcart.sales.engine.keys import Keys
from flashcart.stores import connect_redis, object_id_or_none
from tests.support import chaos_app, cluster_servers
from tests.support.gunicorn_hosts import GunicornHost, open_drop
from tests.support.mongo import fresh_mongo_uri
from tests.support.threads import run_threads

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not cluster_servers.available(), reason="needs redis-server and redis-cli binaries"
    ),
]

RESERVE = "/api/v1/sales/reserve/{}"
ORDERS = "/api/v1/orders"
JOIN_TIMEOUT = 60


@contextlib.contextmanager
def api_hosts(redis_url, count, workers=2, hold_seconds=60):
    """`count` hosts on `redis_url` sharing one MongoDB; yields (local app, hosts).

    The local app (same config, same stores) plays the operator: it creates accounts
    and runs the sweeper and the audit.
    """
    with contextlib.ExitStack() as cleanup:  # undone in reverse order
        hosts = []
        workdir = tempfile.mkdtemp(prefix="flashcart-hosts-")
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        mongo_uri = cleanup.enter_context(fresh_mongo_uri())
        redis_client = connect_redis(redis_url)
        cleanup.callback(redis_client.close)
        app = create_app(
            chaos_app.settings(mongo_uri, redis_url, hold_seconds), redis_client=redis_client
        )
        cleanup.callback(chaos_app.close_mongo, app)
        env = {k: v for k, v in os.environ.items() if k != "GUNICORN_CMD_ARGS"}
        env.update(chaos_app.env(mongo_uri, redis_url, hold_seconds))
        env.update(FLASHCART_ENV="testing", PYTHONUNBUFFERED="1")
        for _ in range(count):
            hosts.append(GunicornHost(env, workdir, workers).start())
            cleanup.callback(hosts[-1].stop)
        for host in hosts:
            host.wait_ready()
        yield app, hosts


def durable_truth(app, product_id):
    """MongoDB's orders and Redis's figures for the product, at a quiet moment."""
    with app.app_context():
        db = app.extensions["flashcart.stores"].db
        product = db.products.find_one({"_id": object_id_or_none(product_id)})
        orders = list(db.orders.find({"product_id": product_id}))
        placed = [o for o in orders if o["status"] == order_service.PLACED]
        owned = collections.Counter()
        for order in placed:
            owned[order["user_id"]] += order["quantity"]
        engine = sale_service.inventory()
        return {
            "total": product["stock"],
            "snapshot": engine.snapshot(product_id),
            "sold": sum(o["quantity"] for o in placed),
            "by_status": collections.Counter(o["status"] for o in orders),
            "orders_per_reservation": collections.Counter(o["reservation_id"] for o in orders),
            "order_of": {o["reservation_id"]: o for o in orders},
            "owned": owned,
            "redis_units": engine.user_units(product_id),
        }


# -- several hosts, one stock ---------------------------------------------------------

HOSTS = 3
STOCK = 90
LIMIT = 2
USERS = 80
CLIENTS = 16


class Drop:
    """Shoppers that reserve on one host, check out on the next, retry on the third."""

    def __init__(self, hosts, product_id, tokens):
        self.apis = [host.api for host in hosts]
        self.product_id = product_id
        self.tokens = tokens
        self.lock = threading.Lock()
        self.sold_out = threading.Event()
        self.outcomes = collections.Counter()
        self.per_host = collections.Counter()
        self.checked_out = {}  # reservation id -> (user, quantity, order id)
        self.replays = []

    def note(self, outcome, host=None):
        with self.lock:
            self.outcomes[outcome] += 1
            if host is not None:
                self.per_host[host] += 1

    def shop(self, seed):
        rng = random.Random(seed)
        users = sorted(self.tokens)
        while not self.sold_out.is_set():
            user = rng.choice(users)
            first = rng.randrange(len(self.apis))
            status, body, code = self.apis[first].call(
                "POST",
                RESERVE.format(self.product_id),
                self.tokens[user],
                {"quantity": 1 + (rng.random() < 0.3)},
            )
            self.note(f"reserve {status} {code}".strip(), first)
            if status == 201:
                self.check_out(user, body, first)
            elif code == "sold_out":
                self.sold_out.set()
            elif status != 409:
                raise AssertionError(f"reserve answered {status} {body}")

    def check_out(self, user, reservation, first):
        key = {"Idempotency-Key": uuid.uuid4().hex}
        second, third = (first + 1) % len(self.apis), (first + 2) % len(self.apis)
        body = {"reservation_id": reservation["id"]}
        status, order, _ = self.apis[second].call("POST", ORDERS, self.tokens[user], body, key)
        assert status == 201, (status, order)
        self.note("checkout 201", second)
        # The client never saw that answer and retries on another host.
        again, replayed, _ = self.apis[third].call("POST", ORDERS, self.tokens[user], body, key)
        assert (again, replayed["id"]) == (201, order["id"]), (again, replayed)
        with self.lock:
            self.checked_out[reservation["id"]] = (user, reservation["quantity"], order["id"])
            self.replays.append(third)


@pytest.mark.timeout(240)
def test_one_drop_through_three_api_hosts_sells_exactly_the_stock_once(real_redis_url):
    with api_hosts(real_redis_url, HOSTS) as (app, hosts):
        product_id, tokens = open_drop(
            app,
            hosts[0].api,
            name="Scale drop",
            price="9.00",
            stock=STOCK,
            limit=LIMIT,
            shoppers=USERS,
        )
        drop = Drop(hosts, product_id, tokens)
        started = time.monotonic()

        run_threads(CLIENTS, drop.shop, timeout=JOIN_TIMEOUT)

        elapsed = time.monotonic() - started
        with app.app_context():
            recovery.sweep()
            [audit] = recovery.audit()
        state = durable_truth(app, product_id)
        stock_seen = [
            host.api.call("GET", f"/api/v1/sales/stock/{product_id}")[1] for host in hosts
        ]

    backend = "cluster" if real_redis_url.startswith("redis+cluster") else "one redis-server"
    print(
        f"\n{HOSTS} hosts x 2 workers on {backend}: {dict(drop.outcomes)} in {elapsed:.1f}s; "
        f"requests per host {dict(drop.per_host)}; orders {dict(state['by_status'])}"
    )
    snapshot = state["snapshot"]
    assert state["sold"] == STOCK == sum(q for _, q, _ in drop.checked_out.values())
    assert state["by_status"] == {"placed": len(drop.checked_out)}
    assert max(state["orders_per_reservation"].values()) == 1
    assert {o["reservation_id"]: str(o["_id"]) for o in state["order_of"].values()} == {
        rid: order_id for rid, (_, _, order_id) in drop.checked_out.items()
    }
    assert (snapshot.available, snapshot.held, snapshot.sold) == (0, 0, STOCK)
    assert max(state["owned"].values()) <= LIMIT
    assert state["redis_units"] == dict(state["owned"])
    assert audit["ok"] and audit["drift"] == 0 and audit["oversold"] == 0, audit
    assert all(body["available"] == 0 for body in stock_seen)
    # Every host took reservations, checkouts and replays.
    assert len(drop.per_host) == HOSTS and min(drop.per_host.values()) > 5
    assert set(drop.replays) == set(range(HOSTS))


# -- a master dies mid-rush ------------------------------------------------------------

FAILOVER_HOSTS = 2
FAILOVER_STOCK = 100_000
FAILOVER_LIMIT = 1000  # the most a product allows: the rush never runs out
FAILOVER_USERS = 40
FAILOVER_CLIENTS = 12
KILL_AFTER = 2.5  # seconds of rush before the kill
AFTER_RECOVERY = 2.5  # seconds of rush once reservations succeed again
RECOVERY_TIMEOUT = 30


class Rush:
    """Reserve and check out as fast as the hosts answer; every call is timed."""

    def __init__(self, hosts, product_id, tokens):
        self.apis = [host.api for host in hosts]
        self.product_id = product_id
        self.tokens = tokens
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls = []  # (started, ended, op, status, code)
        self.confirmed = {}  # reservation id -> order id, for 2xx checkouts

    def call(self, op, api, path, token, body, headers=None):
        started = time.monotonic()
        status, answer, code = api.call("POST", path, token, body, headers)
        with self.lock:
            self.calls.append((started, time.monotonic(), op, status, code))
        return status, answer

    def run(self, seed):
        rng = random.Random(seed)
        users = sorted(self.tokens)
        while not self.stop.is_set():
            user = rng.choice(users)
            path = RESERVE.format(self.product_id)
            status, hold = self.call("reserve", rng.choice(self.apis), path, self.tokens[user], {})
            if status != 201:
                time.sleep(0.02)
                continue
            checkout, key = {"reservation_id": hold["id"]}, {"Idempotency-Key": uuid.uuid4().hex}
            for _attempt in range(3):
                api = rng.choice(self.apis)
                status, order = self.call("checkout", api, ORDERS, self.tokens[user], checkout, key)
                if status in (200, 201):
                    with self.lock:
                        self.confirmed[hold["id"]] = order["id"]
                    break
                if status is not None and status < 500:
                    break
                time.sleep(0.1)

    def ok(self, op, start=0.0, end=float("inf")):
        """Successful `op` calls that ended between start and end."""
        with self.lock:
            return sum(
                1
                for _, ended, kind, status, _ in self.calls
                if kind == op and status in (200, 201) and start <= ended < end
            )

    def first_ok_started_after(self, op, moment):
        """When the first successful `op` sent after `moment` was answered."""
        with self.lock:
            return min(
                (
                    e
                    for s, e, kind, status, _ in self.calls
                    if kind == op and status == 201 and s > moment
                ),
                default=None,
            )

    def failures(self, start=0.0, end=float("inf")):
        """{(op, status, code): count} of failed calls answered between start and end."""
        with self.lock:
            return collections.Counter(
                (op, status, code)
                for _, ended, op, status, code in self.calls
                if start <= ended < end and (status is None or status >= 400)
            )


class Watch:
    """Samples, every 50 ms: the replica's role and one host's /readyz."""

    def __init__(self, cluster, replica_port, api):
        self.cluster = cluster
        self.replica_port = replica_port
        self.api = api
        self.stop = threading.Event()
        self.promoted_at = None
        self.readiness = []  # (time, status)

    def run(self):
        while not self.stop.wait(0.05):
            if self.promoted_at is None:
                with contextlib.suppress(Exception):
                    if self.cluster.role(self.replica_port) == "master":
                        self.promoted_at = time.monotonic()
            self.readiness.append((time.monotonic(), self.api.call("GET", "/readyz")[0]))

    def not_ready(self, start):
        """(first 503 after start, first 200 after that) or Nones."""
        down = next((t for t, status in self.readiness if t > start and status != 200), None)
        up = next((t for t, status in self.readiness if down and t > down and status == 200), None)
        return down, up


@pytest.fixture
def failover_cluster():
    """A cluster of its own: the test kills one of its masters."""
    cluster = cluster_servers.ClusterServers().start()
    try:
        yield cluster
    finally:
        cluster.stop()


def audit_figures(rows):
    keys = ("drift", "holds_sold", "sold", "redis_sold", "held", "available", "oversold", "ok")
    return [{key: row[key] for key in keys} for row in rows]


@pytest.mark.timeout(240)
def test_a_master_killed_mid_rush_fails_over_and_the_stock_still_adds_up(failover_cluster):
    cluster = failover_cluster
    with api_hosts(cluster.url, FAILOVER_HOSTS) as (app, hosts):
        product_id, tokens = open_drop(
            app,
            hosts[0].api,
            name="Scale drop",
            price="9.00",
            stock=FAILOVER_STOCK,
            limit=FAILOVER_LIMIT,
            shoppers=FAILOVER_USERS,
        )
        master = cluster.master_of(Keys(product_id).sale)
        replica = cluster.replica_of(master)
        rush = Rush(hosts, product_id, tokens)
        watch = Watch(cluster, replica, hosts[0].api)
        threads = [threading.Thread(target=watch.run, daemon=True)]
        threads += [
            threading.Thread(target=rush.run, args=(n,), daemon=True)
            for n in range(FAILOVER_CLIENTS)
        ]
        started = time.monotonic()
        recovered_at = None
        try:
            for thread in threads:
                thread.start()
            time.sleep(KILL_AFTER)
            cluster.kill(master)  # SIGKILL, and reaped: nothing sent after this reaches it
            killed_at = time.monotonic()
            deadline = killed_at + RECOVERY_TIMEOUT
            while time.monotonic() < deadline:
                recovered_at = rush.first_ok_started_after("reserve", killed_at)
                if recovered_at is not None:
                    break
                time.sleep(0.05)
            time.sleep(AFTER_RECOVERY)
        finally:
            rush.stop.set()
            watch.stop.set()
            for thread in threads:
                thread.join(JOIN_TIMEOUT)
        ended = time.monotonic()
        assert recovered_at is not None, (
            f"no reservation succeeded {RECOVERY_TIMEOUT}s after the kill"
        )
        cluster.wait_healthy()

        # The runbook, at a quiet moment: finish half-done checkouts, audit, repair.
        with app.app_context():
            swept = recovery.sweep()
            found = recovery.audit()
            repaired = recovery.audit(repair=True)
            recovery.sweep()
            final = recovery.audit()
        state = durable_truth(app, product_id)

    snapshot = state["snapshot"]
    window = {
        f"{op} {status} {code}": n
        for (op, status, code), n in rush.failures(killed_at, recovered_at).items()
    }
    not_ready = watch.not_ready(killed_at)
    print(
        "\nFAILOVER SUMMARY"
        f"\n  {FAILOVER_HOSTS} hosts x 2 workers, {FAILOVER_CLIENTS} clients; master :{master} "
        f"(owner of the product's slot) SIGKILLed at t+{killed_at - started:.1f}s, "
        f"replica :{replica} promoted after "
        f"{(watch.promoted_at - killed_at) if watch.promoted_at else float('nan'):.2f}s"
        f"\n  reservations ok: before {rush.ok('reserve', started, killed_at)}, during the "
        f"failover {rush.ok('reserve', killed_at, recovered_at)}, after "
        f"{rush.ok('reserve', recovered_at, ended)}; checkouts ok "
        f"{rush.ok('checkout', started, ended)}"
        f"\n  time to recover (kill -> first reservation ok): {recovered_at - killed_at:.2f}s; "
        f"/readyz 503 from t+{(not_ready[0] or killed_at) - killed_at:.2f}s to "
        f"t+{(not_ready[1] or killed_at) - killed_at:.2f}s after the kill"
        f"\n  answers while failing over: {dict(window)}"
        f"\n  sweep {dict(swept)}; audit before repair {audit_figures(found)}"
        f"\n  after repair {audit_figures(repaired)}; final {audit_figures(final)}"
        f"\n  orders {dict(state['by_status'])}; total {state['total']} = available "
        f"{snapshot.available} + held {snapshot.held} + sold {state['sold']} "
        f"(redis sold {snapshot.sold})"
    )

    # The failover really happened during the rush, and the API came back by itself.
    assert watch.promoted_at is not None, "the replica was never promoted"
    assert cluster.role(replica) == "master"
    assert rush.ok("reserve", started, killed_at) > 20
    assert rush.ok("reserve", recovered_at, ended) > 20
    assert window, "nobody noticed the master die"
    # Clients were told "retry" (or that a reservation the old master took is gone);
    # never a 500, never a dropped connection.
    expected = {(503, "redis_unavailable"), (503, "busy"), (404, "reservation_not_found")}
    assert {(status, code) for _, status, code in rush.failures()} <= expected, rush.failures()
    # Nothing oversold, then everything exact after the repair.
    assert all(row["oversold"] == 0 for row in found), found
    assert all(row["ok"] and row["drift"] == 0 for row in repaired + final), (repaired, final)
    assert not state["by_status"].get("pending") and not state["by_status"].get("cancelling")
    assert state["total"] == snapshot.available + snapshot.held + state["sold"]
    assert snapshot.sold == state["sold"]
    assert max(state["orders_per_reservation"].values()) == 1
    # A checkout the client was told succeeded stays sold.
    assert all(state["order_of"][rid]["status"] == "placed" for rid in rush.confirmed), (
        "a confirmed checkout was lost"
    )
