"""Crash recovery: fault injection at each seam of the checkout/cancel saga, the sweeper
that finishes what a crash left half-done, and the audit that compares MongoDB with Redis.

A "crash" is a monkeypatched step raising RuntimeError once (the request answers 500,
like a process that died there). After the sweeper runs, every test checks the invariant

    total == available (the engine's stock) + held (live holds) + sold (placed orders)

with Redis `sold` equal to MongoDB's placed units and exactly one order per reservation.
"""

import json
import time

import pytest
from bson import ObjectId

from flashcart.checkout import recovery
from flashcart.orders import service as order_service
from flashcart.products import service as product_service
from flashcart.sales import service as sale_service
from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.keys import Keys

HOLD_WAIT = 1.2


@pytest.fixture
def app_config(app_config):
    # The sweeper may touch any half-done order at once (no grace for live requests).
    return {**app_config, "SWEEP_GRACE_SECONDS": 0}


class Crash(RuntimeError):
    """The process 'died' here."""


def crash_once(monkeypatch, owner, name, when=lambda *args, **kwargs: True):
    """Make owner.name raise Crash the first time `when(...)` holds; later calls run."""
    original = getattr(owner, name)
    state = {"crashed": 0}

    def step(*args, **kwargs):
        if not state["crashed"] and when(*args, **kwargs):
            state["crashed"] += 1
            raise Crash(f"crashed in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, step)
    return state


def status_is(target):
    def when(order_id, status, expected, **fields):
        return status == target

    return when


def run_sweep(app):
    with app.app_context():
        return recovery.sweep()


def reserve(client, pid, headers, quantity=1, **extra):
    return client.post(
        f"/api/v1/sales/reserve/{pid}", json={"quantity": quantity}, headers=headers, **extra
    )


def checkout(client, rid, headers):
    return client.post("/api/v1/orders", json={"reservation_id": rid}, headers=headers)


def placed_units(mongo_db, pid):
    return sum(
        order["quantity"] for order in mongo_db.orders.find({"product_id": pid, "status": "placed"})
    )


def audit_row(app, pid):
    with app.app_context():
        return recovery.audit_product(product_service.find(pid))


def assert_invariant(app, mongo_db, redis_client, pid, total):
    """total == available + held + sold, by Redis and by MongoDB's placed orders."""
    with app.app_context():
        snapshot = sale_service.inventory().snapshot(pid)
    sold = placed_units(mongo_db, pid)
    assert snapshot.available >= 0
    assert snapshot.available + snapshot.held + sold == total, (snapshot, sold)
    assert snapshot.sold == sold, (snapshot, sold)
    assert redis_client.hlen(Keys(pid).claimed) == 0, "a claim was left unsettled"
    row = audit_row(app, pid)
    assert row["ok"], row
    return snapshot


def add_units_behind_the_engines_back(redis_client, pid, units):
    """Tamper with Redis: extra available units that no restock or cancel explains."""
    redis_client.incrby(Keys(pid).stripe(0), units)


def orders_for(mongo_db, rid):
    return list(mongo_db.orders.find({"reservation_id": rid}))


# -- checkout dies between the pending order and the claim ------------------------------


def test_checkout_crash_before_claim_is_placed_by_sweeper_while_hold_is_live(
    app, client, make_product, user_headers, mongo_db, redis_client, monkeypatch, sale_state
):
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]
    rid = reserve(client, pid, user_headers, 2).json["id"]
    crash = crash_once(monkeypatch, Inventory, "claim")

    crashed = checkout(client, rid, user_headers)

    assert crashed.status_code == 500
    assert crash["crashed"] == 1
    [pending] = orders_for(mongo_db, rid)
    assert pending["status"] == "pending"
    assert redis_client.exists(Keys(pid).hold(rid)) == 1
    assert sale_state(pid)["sold"] == 0

    done = run_sweep(app)

    assert done["checkouts_placed"] == 1
    [order] = orders_for(mongo_db, rid)
    assert order["_id"] == pending["_id"]
    assert order["status"] == "placed"
    assert redis_client.exists(Keys(pid).hold(rid)) == 0
    snapshot = assert_invariant(app, mongo_db, redis_client, pid, total=5)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (3, 0, 2)

    # The client's retry finds the order the sweeper placed; nothing is counted twice.
    retry = checkout(client, rid, user_headers)
    assert retry.status_code == 200
    assert retry.json["id"] == str(pending["_id"])
    assert retry.json["status"] == "placed"
    assert len(orders_for(mongo_db, rid)) == 1
    assert run_sweep(app) == {}
    assert_invariant(app, mongo_db, redis_client, pid, total=5)


def test_checkout_crash_before_claim_with_expired_hold_is_failed_and_units_come_back(
    short_holds,
    app,
    client,
    make_product,
    user,
    user_headers,
    mongo_db,
    redis_client,
    monkeypatch,
    sale_state,
):
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]
    rid = reserve(client, pid, user_headers, 2).json["id"]
    crash_once(monkeypatch, Inventory, "claim")
    assert checkout(client, rid, user_headers).status_code == 500
    time.sleep(HOLD_WAIT)

    done = run_sweep(app)

    assert done["checkouts_failed"] == 1
    assert done["units_returned"] == 2
    [order] = orders_for(mongo_db, rid)
    assert order["status"] == "failed"
    assert sale_state(pid)["available"] == 5
    assert sale_state(pid)["users"].get(user["id"], 0) == 0
    assert redis_client.exists(Keys(pid).hold(rid)) == 0
    assert redis_client.zcard(Keys(pid).deadlines) == 0
    snapshot = assert_invariant(app, mongo_db, redis_client, pid, total=5)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (5, 0, 0)

    retry = checkout(client, rid, user_headers)
    assert retry.status_code == 410
    assert retry.json["code"] == "reservation_expired"
    assert len(orders_for(mongo_db, rid)) == 1
    assert sale_state(pid)["available"] == 5


# -- checkout dies between the claim and `placed` ---------------------------------------


def test_checkout_crash_after_claim_is_placed_by_sweeper_and_claim_settled(
    app, client, make_product, user_headers, mongo_db, redis_client, monkeypatch, sale_state
):
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]
    rid = reserve(client, pid, user_headers, 2).json["id"]
    crash = crash_once(monkeypatch, order_service, "_set_status", when=status_is("placed"))

    assert checkout(client, rid, user_headers).status_code == 500

    assert crash["crashed"] == 1
    [pending] = orders_for(mongo_db, rid)
    assert pending["status"] == "pending"
    assert redis_client.hget(Keys(pid).claimed, rid) == str(pending["_id"])
    assert sale_state(pid)["sold"] == 2
    # Half-way, the audit already counts the claimed units as sold: no false alarm.
    assert audit_row(app, pid)["ok"]

    done = run_sweep(app)

    assert done["checkouts_placed"] == 1
    [order] = orders_for(mongo_db, rid)
    assert order["status"] == "placed"
    assert redis_client.hgetall(Keys(pid).claimed) == {}
    snapshot = assert_invariant(app, mongo_db, redis_client, pid, total=5)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (3, 0, 2)

    retry = checkout(client, rid, user_headers)
    assert retry.status_code == 200
    assert retry.json["id"] == str(pending["_id"])
    assert len(orders_for(mongo_db, rid)) == 1
    assert sale_state(pid)["sold"] == 2


def test_checkout_crash_after_placed_before_settling_claim_is_settled_by_sweeper(
    app, client, make_product, user_headers, mongo_db, redis_client, monkeypatch
):
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]
    rid = reserve(client, pid, user_headers, 1).json["id"]
    crash_once(monkeypatch, Inventory, "settle_claim")

    assert checkout(client, rid, user_headers).status_code == 500

    [order] = orders_for(mongo_db, rid)
    assert order["status"] == "placed"
    assert redis_client.hget(Keys(pid).claimed, rid) == str(order["_id"])

    done = run_sweep(app)

    assert "checkouts_placed" not in done
    assert redis_client.hgetall(Keys(pid).claimed) == {}
    snapshot = assert_invariant(app, mongo_db, redis_client, pid, total=5)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (4, 0, 1)
    assert len(orders_for(mongo_db, rid)) == 1


# -- cancel dies half-way -----------------------------------------------------------------


@pytest.fixture
def placed_order(client, make_product, user_headers):
    """(product id, order) for a placed order of 2 units out of 5."""
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]
    rid = reserve(client, pid, user_headers, 2).json["id"]
    order = checkout(client, rid, user_headers)
    assert order.status_code == 201
    return pid, order.json


def test_cancel_crash_before_restore_is_finished_by_sweeper_restoring_once(
    app, client, placed_order, user, user_headers, mongo_db, redis_client, monkeypatch, sale_state
):
    pid, order = placed_order
    crash_once(monkeypatch, Inventory, "restore")

    crashed = client.delete(f"/api/v1/orders/{order['id']}", headers=user_headers)

    assert crashed.status_code == 500
    assert mongo_db.orders.find_one({"reservation_id": order["reservation_id"]})["status"] == (
        "cancelling"
    )
    assert sale_state(pid)["available"] == 3
    assert sale_state(pid)["sold"] == 2
    assert audit_row(app, pid)["ok"]

    done = run_sweep(app)

    assert done["cancels_finished"] == 1
    [doc] = orders_for(mongo_db, order["reservation_id"])
    assert doc["status"] == "cancelled"
    assert redis_client.sismember(Keys(pid).restored, order["id"])
    assert sale_state(pid)["users"].get(user["id"], 0) == 0
    snapshot = assert_invariant(app, mongo_db, redis_client, pid, total=5)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (5, 0, 0)

    # Neither another pass nor the client's retry restores the units a second time.
    assert run_sweep(app) == {}
    retry = client.delete(f"/api/v1/orders/{order['id']}", headers=user_headers)
    assert retry.status_code == 409
    assert retry.json["code"] == "order_already_cancelled"
    snapshot = assert_invariant(app, mongo_db, redis_client, pid, total=5)
    assert snapshot.available == 5


def test_cancel_crash_after_restore_before_cancelled_is_finished_restoring_once(
    app, client, placed_order, user, user_headers, mongo_db, redis_client, monkeypatch, sale_state
):
    pid, order = placed_order
    crash_once(monkeypatch, order_service, "_set_status", when=status_is("cancelled"))

    assert client.delete(f"/api/v1/orders/{order['id']}", headers=user_headers).status_code == 500

    [doc] = orders_for(mongo_db, order["reservation_id"])
    assert doc["status"] == "cancelling"
    assert sale_state(pid)["available"] == 5
    assert sale_state(pid)["sold"] == 0
    assert audit_row(app, pid)["ok"]

    done = run_sweep(app)

    assert done["cancels_finished"] == 1
    [doc] = orders_for(mongo_db, order["reservation_id"])
    assert doc["status"] == "cancelled"
    assert sale_state(pid)["available"] == 5
    assert sale_state(pid)["users"].get(user["id"], 0) == 0
    snapshot = assert_invariant(app, mongo_db, redis_client, pid, total=5)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (5, 0, 0)


CANCEL_CRASHES = {
    "before_restore": (Inventory, "restore", lambda *args, **kwargs: True),
    "after_restore": (order_service, "_set_status", status_is("cancelled")),
}


@pytest.mark.parametrize("seam", sorted(CANCEL_CRASHES))
def test_crashed_cancel_finished_after_the_sale_closed_counts_its_units_once(
    seam,
    app,
    client,
    make_product,
    make_user,
    headers_for,
    admin_headers,
    mongo_db,
    redis_client,
    monkeypatch,
):
    """The sale ends while a crashed cancel is still within the grace period: the sweeper
    must not close the sale under it. The pass that finishes the cancel then closes the
    sale with sold=1 (the kept order), unsold=4: the cancelled units counted once."""
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]
    buyer, keeper = headers_for(make_user()), headers_for(make_user())
    cancelled = checkout(client, reserve(client, pid, buyer, 2).json["id"], buyer).json
    kept = checkout(client, reserve(client, pid, keeper, 1).json["id"], keeper).json
    assert kept["status"] == "placed"
    crash_once(monkeypatch, *CANCEL_CRASHES[seam])
    assert client.delete(f"/api/v1/orders/{cancelled['id']}", headers=buyer).status_code == 500
    assert client.post(f"/api/v1/sales/end/{pid}", headers=admin_headers).status_code == 200

    app.config["SWEEP_GRACE_SECONDS"] = 3600  # the crashed cancel is still "young"
    assert run_sweep(app)["sales_closed"] == 0
    app.config["SWEEP_GRACE_SECONDS"] = 0
    done = run_sweep(app)
    assert (done["cancels_finished"], done["sales_closed"]) == (1, 1)

    doc = mongo_db.products.find_one({"_id": ObjectId(pid)})
    assert doc["sale_status"] == "closed"
    [order] = orders_for(mongo_db, cancelled["reservation_id"])
    assert order["status"] == "cancelled"
    assert placed_units(mongo_db, pid) == 1
    assert (doc["sold"], doc["unsold"]) == (1, 4)
    assert redis_client.keys(Keys(pid).prefix + "*") == []


def test_client_retrying_checkout_after_crash_with_same_key_gets_the_same_order(
    client, make_product, user_headers, mongo_db, redis_client, monkeypatch, sale_state
):
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]
    rid = reserve(client, pid, user_headers, 2).json["id"]
    headers = {**user_headers, "Idempotency-Key": "checkout-after-crash"}
    crash_once(monkeypatch, Inventory, "claim")

    first = client.post("/api/v1/orders", json={"reservation_id": rid}, headers=headers)
    retry = client.post("/api/v1/orders", json={"reservation_id": rid}, headers=headers)
    again = client.post("/api/v1/orders", json={"reservation_id": rid}, headers=headers)

    assert first.status_code == 500
    assert retry.status_code == 201  # 5xx answers are not stored: the retry really ran
    assert "Idempotent-Replayed" not in retry.headers
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    [order] = orders_for(mongo_db, rid)
    assert retry.json["id"] == again.json["id"] == str(order["_id"])
    assert order["status"] == "placed"
    assert sale_state(pid)["sold"] == 2
    assert sale_state(pid)["available"] == 3


# -- expired holds through the CLI ------------------------------------------------------


def test_flask_sweep_returns_expired_holds_and_reports_units_returned(
    short_holds,
    app,
    client,
    runner,
    make_product,
    make_user,
    headers_for,
    mongo_db,
    redis_client,
    sale_state,
):
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]
    first, second = make_user(), make_user()
    assert reserve(client, pid, headers_for(first), 2).status_code == 201
    assert reserve(client, pid, headers_for(second), 1).status_code == 201
    assert sale_state(pid)["available"] == 2
    time.sleep(HOLD_WAIT)

    result = runner.invoke(args=["sweep"])

    assert result.exit_code == 0, result.output
    assert "units_returned=3" in result.output
    assert sale_state(pid)["available"] == 5
    assert redis_client.zcard(Keys(pid).deadlines) == 0
    assert redis_client.keys(Keys(pid).prefix + "hold:*") == []
    for shopper in (first, second):
        assert sale_state(pid)["users"].get(shopper["id"], 0) == 0
    assert_invariant(app, mongo_db, redis_client, pid, total=5)

    idle = runner.invoke(args=["sweep"])
    assert idle.exit_code == 0
    assert idle.output.strip() == "sweep: idle"
    assert sale_state(pid)["available"] == 5


# -- the audit ----------------------------------------------------------------------------


def audit_json(runner, *flags):
    result = runner.invoke(args=["audit", "--json", *flags])
    return result.exit_code, json.loads(result.output)


def row_for(rows, pid):
    [row] = [row for row in rows if row["product_id"] == pid]
    return row


def reserve_all_you_can(client, pid, headers, limit):
    """Reserve one unit at a time until refused; returns (units got, last refusal code)."""
    got = 0
    for _ in range(limit + 1):
        response = reserve(client, pid, headers, 1)
        if response.status_code != 201:
            return got, response.json["code"]
        got += 1
    return got, None


def test_audit_of_a_clean_sale_reports_ok(client, runner, make_product, user_headers):
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]
    checkout(client, reserve(client, pid, user_headers, 1).json["id"], user_headers)
    reserve(client, pid, user_headers, 1)

    table = runner.invoke(args=["audit"])
    code, rows = audit_json(runner)

    assert table.exit_code == 0, table.output
    assert "1 sales audited, 0 with drift" in table.output
    assert code == 0
    row = row_for(rows, pid)
    assert row["ok"] is True
    assert (row["total"], row["sold"], row["held"], row["available"], row["drift"]) == (
        5,
        1,
        1,
        3,
        0,
    )


def test_audit_finds_tampered_stock_and_repair_restores_the_invariant(
    app, client, runner, make_product, make_user, headers_for, mongo_db, redis_client
):
    product = make_product(live=True, stock=10, per_user_limit=10)
    pid = product["id"]
    buyer, holder, latecomer = (headers_for(make_user()) for _ in range(3))
    checkout(client, reserve(client, pid, buyer, 2).json["id"], buyer)
    assert reserve(client, pid, holder, 1).status_code == 201
    add_units_behind_the_engines_back(redis_client, pid, 5)

    table = runner.invoke(args=["audit"])
    code, rows = audit_json(runner)

    assert table.exit_code == 1
    assert "1 with drift" in table.output
    assert code == 1
    row = row_for(rows, pid)
    assert (row["ok"], row["drift"], row["available"], row["expected_available"]) == (
        False,
        5,
        12,
        7,
    )

    code, rows = audit_json(runner, "--repair")

    assert code == 0
    row = row_for(rows, pid)
    assert row["repaired"] is True and row["ok"] is True and row["drift"] == 0
    snapshot = assert_invariant(app, mongo_db, redis_client, pid, total=10)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (7, 1, 2)
    # No oversell: only total - sold - held can still be reserved.
    assert reserve_all_you_can(client, pid, latecomer, limit=10) == (7, "sold_out")
    assert runner.invoke(args=["audit"]).exit_code == 0


def lose_sale_keys(redis_client, pid):
    redis_client.delete(*redis_client.keys(Keys(pid).prefix + "*"))


def flush_everything(redis_client, pid):
    redis_client.flushdb()


@pytest.mark.parametrize("lose", [lose_sale_keys, flush_everything], ids=["keys", "flushdb"])
def test_audit_repair_rebuilds_a_sale_redis_lost_keeping_placed_orders_sold(
    lose,
    app,
    client,
    runner,
    make_product,
    make_user,
    headers_for,
    mongo_db,
    redis_client,
    sale_state,
):
    product = make_product(live=True, stock=10, per_user_limit=3)
    pid = product["id"]
    first, second, latecomer = (headers_for(make_user()) for _ in range(3))
    checkout(client, reserve(client, pid, first, 3).json["id"], first)
    checkout(client, reserve(client, pid, second, 2).json["id"], second)
    assert placed_units(mongo_db, pid) == 5
    lose(redis_client, pid)

    code, rows = audit_json(runner)

    assert code == 1
    row = row_for(rows, pid)
    assert row["ok"] is False
    assert row["in_redis"] is False
    assert row["drift"] == -5

    code, rows = audit_json(runner, "--repair")

    assert code == 0, rows
    assert row_for(rows, pid)["ok"] is True
    assert sale_state(pid)["status"] == "live"
    snapshot = assert_invariant(app, mongo_db, redis_client, pid, total=10)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (5, 0, 5)
    # The per-user limit still counts what each bought before the loss...
    assert reserve(client, pid, first, 1).json["code"] == "limit_exceeded"
    assert reserve(client, pid, second, 1).status_code == 201
    # ...and the rest can only buy total - sold: no oversell.
    assert reserve_all_you_can(client, pid, latecomer, limit=3) == (3, "limit_exceeded")
    last = headers_for(make_user())
    assert reserve_all_you_can(client, pid, last, limit=3) == (1, "sold_out")
    assert sale_state(pid)["available"] == 0
    assert_invariant(app, mongo_db, redis_client, pid, total=10)


def test_audit_endpoint_returns_the_cli_row_to_admins_only(
    client, runner, make_product, user_headers, admin_headers, redis_client
):
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]
    checkout(client, reserve(client, pid, user_headers, 2).json["id"], user_headers)
    add_units_behind_the_engines_back(redis_client, pid, 1)

    response = client.get(f"/api/v1/sales/audit/{pid}", headers=admin_headers)

    assert response.status_code == 200
    _, rows = audit_json(runner)
    assert response.json == row_for(rows, pid)
    assert response.json["ok"] is False and response.json["drift"] == 1

    denied = client.get(f"/api/v1/sales/audit/{pid}", headers=user_headers)
    assert denied.status_code == 403
    assert denied.json["code"] == "admin_only"
    assert client.get(f"/api/v1/sales/audit/{pid}").status_code == 401
    unknown = client.get("/api/v1/sales/audit/0123456789abcdef01234567", headers=admin_headers)
    assert unknown.status_code == 404


def test_audit_of_a_product_never_put_on_sale_reports_ok(
    client, runner, make_product, admin_headers, redis_client
):
    pid = make_product(stock=5)["id"]

    response = client.get(f"/api/v1/sales/audit/{pid}", headers=admin_headers)

    assert response.status_code == 200
    row = response.json
    assert (row["sale_status"], row["in_redis"], row["ok"]) == ("draft", False, True)
    assert (row["total"], row["sold"], row["available"], row["drift"]) == (5, 0, 0, 0)
    # Units in Redis for a product that is not on sale are drift all the same.
    add_units_behind_the_engines_back(redis_client, pid, 3)
    tampered = client.get(f"/api/v1/sales/audit/{pid}", headers=admin_headers).json
    assert (tampered["ok"], tampered["drift"]) == (False, 3)


def test_audit_of_a_closed_sale_with_unsold_units_agrees_with_the_cli(
    app, client, runner, make_product, user_headers, admin_headers, mongo_db
):
    pid = make_product(live=True, stock=5, per_user_limit=2)["id"]
    checkout(client, reserve(client, pid, user_headers, 2).json["id"], user_headers)
    assert client.post(f"/api/v1/sales/end/{pid}", headers=admin_headers).status_code == 200
    assert run_sweep(app)["sales_closed"] == 1

    response = client.get(f"/api/v1/sales/audit/{pid}", headers=admin_headers)

    assert response.status_code == 200
    row = response.json
    assert (row["sale_status"], row["in_redis"], row["ok"]) == ("closed", False, True)
    assert (row["total"], row["sold"], row["held"], row["drift"]) == (5, 2, 0, 0)
    stored = mongo_db.products.find_one({"_id": ObjectId(pid)})
    assert (stored["sold"], stored["unsold"]) == (2, 3)
    assert audit_json(runner) == (0, [])  # the CLI audits sales in Redis only


def test_audit_of_a_live_sale_redis_lost_is_not_ok_even_when_sold_out(
    client, runner, make_product, user_headers, redis_client
):
    pid = make_product(live=True, stock=2, per_user_limit=2)["id"]
    checkout(client, reserve(client, pid, user_headers, 2).json["id"], user_headers)
    lose_sale_keys(redis_client, pid)

    code, rows = audit_json(runner)

    assert code == 1
    row = row_for(rows, pid)
    assert (row["in_redis"], row["drift"], row["ok"]) == (False, 0, False)


# -- Redis loses a claim (failover to a replica that had not received it) -------------


@pytest.mark.parametrize("cancelled_later", [False, True])
def test_an_expired_hold_whose_order_was_placed_is_never_sold_again(
    cancelled_later,
    short_holds,
    app,
    client,
    make_product,
    user_headers,
    mongo_db,
    redis_client,
    sale_state,
):
    """The claim is undone in Redis (as a failover can lose it) after the order was placed:
    when the hold expires, its units must stay sold, not go back on sale."""
    product = make_product(live=True, stock=3, per_user_limit=2)
    pid = product["id"]
    keys = Keys(pid)
    reservation = reserve(client, pid, user_headers, 2).json
    hold_key = keys.hold(reservation["id"])
    saved_hold = redis_client.hgetall(hold_key)
    saved_deadline = redis_client.zscore(keys.deadlines, reservation["id"])
    order = checkout(client, reservation["id"], user_headers).json
    assert order["status"] == "placed"
    # The failover: the replica never saw the claim.
    redis_client.hset(hold_key, mapping=saved_hold)
    redis_client.zadd(keys.deadlines, {reservation["id"]: saved_deadline})
    redis_client.decrby(keys.sold, 2)
    redis_client.hdel(keys.claimed, reservation["id"])
    if cancelled_later:
        assert (
            client.delete(f"/api/v1/orders/{order['id']}", headers=user_headers).status_code == 200
        )
    time.sleep(HOLD_WAIT)

    # Lazily, through a stock read, and by the sweeper: neither may sell the units twice.
    client.get(f"/api/v1/sales/stock/{pid}")
    run_sweep(app)

    assert not redis_client.exists(hold_key)
    sold = placed_units(mongo_db, pid)
    state = sale_state(pid)
    assert state["available"] + state["held"] + sold == 3, (state, sold)
    assert state["sold"] == sold == (0 if cancelled_later else 2)
    assert audit_row(app, pid)["ok"]
