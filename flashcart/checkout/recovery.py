"""Recovery: the sweeper and the audit.

The sweeper rebuilds from MongoDB a live sale Redis lost, returns expired holds,
finishes checkouts and cancels that a crash left half-done, closes ended sales once
their last hold is settled, records sell-outs and publishes the events a crash left
in an outbox. The audit compares MongoDB (the durable truth) with Redis and can
rebuild Redis from it. Every step is an idempotent transaction, so several sweepers
may run at once. After each pass the sweeper reports to /metrics (`report.py`): that
it is alive, and now and then what an audit finds, after rebuilding a sale the
audit found out of step twice in a row.
"""

import logging
from collections import Counter

from flask import current_app

from flashcart.checkout import report, saga
from flashcart.errors import Busy, Conflict
from flashcart.orders import ledger
from flashcart.orders import service as orders
from flashcart.products import service as products
from flashcart.sales import service as sales

log = logging.getLogger(__name__)


def sweep():
    """One pass over everything in flight. Returns counts of what it did."""
    engine = sales.inventory()
    grace = current_app.config["SWEEP_GRACE_SECONDS"]
    done = Counter()
    # First: while Redis lacks a live sale, every reservation for it is refused.
    done.update(restore_lost_sales(engine))
    for order in ledger.stale(ledger.PENDING, grace):
        done[f"checkouts_{saga.recover_pending(engine, order)}"] += 1
    for order in ledger.stale(ledger.CANCELLING, grace):
        saga.finish_cancel(engine, order)
        done["cancels_finished"] += 1
    for product in products.products_in_sale():
        product_id = str(product["_id"])
        if products.window_closed(product):
            sales.end_sale(product_id)
            product = products.find(product_id)
        _settle_confirmed_claims(engine, product_id)
        while returned := engine.release_expired(product_id):
            done["units_returned"] += returned
        if product["sale_status"] == products.LIVE and sales.record_if_sold_out(product_id):
            done["sold_out_recorded"] += 1
        if product["sale_status"] == products.ENDED and close_ended_sale(engine, product):
            done["sales_closed"] += 1
    # Last, so the events of what this pass did are out too if their publish failed.
    if published := orders.publish_left_over() + products.publish_left_over():
        done["events_published"] += published
    return done


def restore_lost_sales(engine):
    """Rebuild from MongoDB each live or ended sale Redis does not have (it restarted
    empty, or lost the keys). Returns counts: `sales_rebuilt`, `rebuilds_failed`.

    A sale MongoDB calls live or ended is only ever missing from Redis when Redis
    lost it, or for the moment between a start's two writes, where the rebuild and
    the start write the same thing. The rebuild reads MongoDB inside its WATCH and
    writes only while Redis still lacks the sale and MongoDB still has it live or
    ended, so a sale closed and dropped meanwhile stays dropped.
    """
    done = Counter()
    for product in products.products_in_sale():
        product_id = str(product["_id"])
        if engine.has_sale(product_id):
            continue
        try:
            if sales.rebuild_sale(product_id, engine, only_if_missing=True) is not None:
                log.warning("sweeper: rebuilt sale %s, which Redis had lost", product_id)
                done["sales_rebuilt"] += 1
        except (Busy, Conflict) as error:  # the next pass tries again
            log.error("sweeper: could not rebuild sale %s: %s", product_id, error.detail)
            done["rebuilds_failed"] += 1
    return done


def report_pass():
    """Tell /metrics the sweeper finished a pass; audit first when it is due, and
    rebuild a sale found out of step twice in a row (`repair_drift`)."""
    if report.audit_due():
        report.record_audit(repair_drift(audit_twice()))
    report.record_pass()


def repair_drift(rows):
    """Rebuild from MongoDB each live or ended sale of `rows` (`audit_twice`'s) found
    out of step; the rows, those rebuilt audited again and marked `repaired`.

    The audit's reads are not one look, so a checkout or cancel between them can be
    found twice. The rebuild looks again in one consistent look (its WATCH covers
    every key a unit moves through, and it starts over if a change lands) and writes
    only if Redis differs from what MongoDB says it should hold."""
    repaired = []
    for row in rows:
        if row["ok"] or row["sale_status"] not in (products.LIVE, products.ENDED):
            repaired.append(row)
            continue
        product_id = row["product_id"]
        try:
            rebuilt = sales.rebuild_sale(product_id, only_if_drifted=True)
        except (Busy, Conflict) as error:  # reported as found; the next audit tries again
            log.error("sweeper: could not rebuild sale %s: %s", product_id, error.detail)
            rebuilt = None
        if rebuilt is None:
            repaired.append(row)
            continue
        if row["in_redis"]:
            log.warning("sweeper: rebuilt sale %s, out of step twice in a row: %s", product_id, row)
        else:  # lost since this pass began
            log.warning("sweeper: rebuilt sale %s, which Redis had lost", product_id)
        repaired.append({**audit_product(products.find(product_id)), "repaired": True})
    return repaired


def audit_twice():
    """`audit()`'s rows, a product found out of step looked at again at once.

    The audit reads MongoDB and Redis one after the other, so a reservation or a
    checkout between two reads shows as drift that is not there. The same finding
    twice in a row is what the sweeper reports (as the second look found it)."""
    engine = sales.inventory()
    rows = []
    for row in audit():
        if not row["ok"]:
            row = audit_product(products.find(row["product_id"]), engine)
        rows.append(row)
    return rows


def _settle_confirmed_claims(engine, product_id):
    # A crash after the order became placed but before Redis forgot the claim.
    for reservation_id, order_id in engine.claims(product_id).items():
        order = ledger.find_order(order_id)
        if order is not None and order["status"] != ledger.PENDING:
            engine.settle_claim(reservation_id)


def close_ended_sale(engine, product):
    """Write an ended sale's figures to MongoDB once no hold or claim is left."""
    product_id = str(product["_id"])
    # A checkout or cancel still in flight would change the figures after they are
    # written, and dropping `restored` would let a cancel restore twice.
    if ledger.in_flight(product_id):
        return False
    engine.end_sale(product_id)  # in case ending it died between MongoDB and Redis
    if not engine.close_sale(product_id):
        return False
    products.mark_closed(product_id)
    orders.refresh_closed_figures(product_id)
    engine.drop_sale(product_id)
    return True


def audit_product(product, engine=None):
    """Compare MongoDB's truth with Redis for one product; a dict report row."""
    engine = engine or sales.inventory()
    product_id = str(product["_id"])
    plan = sales.plan_for(product, engine)
    snapshot = engine.snapshot(product_id)
    in_redis = snapshot.status is not None
    holds = engine.holds(product_id)
    # Holds whose orders MongoDB placed: Redis lost their claim (e.g. a failover to
    # a replica that had not received it). Repair drops them; until then they would
    # return their units to stock when they expire.
    sold_holds = ledger.reservations_sold(product_id, [hold.id for hold in holds])
    held_by_user = Counter()
    for hold in holds:
        if hold.id not in sold_holds:
            held_by_user[hold.user_id] += hold.quantity
    held = sum(held_by_user.values())
    owned = Counter(plan.sold_by_user) + held_by_user
    counted = Counter(engine.user_units(product_id))
    # Only a live or ended sale has its state in Redis: a draft has none yet, and a
    # closed one wrote its figures to MongoDB and dropped its keys.
    expected_in_redis = product["sale_status"] in (products.LIVE, products.ENDED)
    expected_available = plan.total - plan.sold - held if expected_in_redis else 0
    row = {
        "product_id": product_id,
        "name": product["name"],
        "sale_status": product["sale_status"],
        "in_redis": in_redis,
        "total": plan.total,
        "sold": plan.sold,
        "redis_sold": snapshot.sold,
        "held": held,
        "holds_sold": sum(hold.quantity for hold in holds if hold.id in sold_holds),
        "available": snapshot.available,
        # The stock level Redis's units count: below `total` while a restock is on
        # its way (or died between MongoDB and Redis).
        "redis_total": engine.counted_total(product_id) if in_redis else None,
        "expected_available": expected_available,
        "drift": snapshot.available - expected_available,
        "oversold": max(0, plan.sold - plan.total),
        "users_over_limit": sum(1 for n in owned.values() if n > plan.limit),
        # Users whose per-user-limit count in Redis disagrees with their holds + orders.
        "limit_counts_off": sum(1 for u in owned | counted if owned[u] != counted[u])
        if in_redis
        else 0,
    }
    row["ok"] = (
        row["drift"] == 0
        and row["oversold"] == 0
        and row["users_over_limit"] == 0
        and row["limit_counts_off"] == 0
        and row["holds_sold"] == 0
        and (row["redis_sold"] == row["sold"] or not in_redis)
        and (row["redis_total"] == row["total"] or not in_redis)
        and in_redis == expected_in_redis
    )
    return row


def audit(repair=False, product_id=None):
    """Audit every product in a sale (or one); with `repair`, rebuild Redis first
    where it drifted. Returns the report rows (after repair)."""
    engine = sales.inventory()
    targets = [products.find(product_id)] if product_id else products.products_in_sale()
    rows = []
    for product in targets:
        row = audit_product(product, engine)
        if repair and not row["ok"] and product["sale_status"] in (products.LIVE, products.ENDED):
            sales.rebuild_sale(row["product_id"], engine)
            row = {**audit_product(products.find(row["product_id"]), engine), "repaired": True}
        rows.append(row)
    return rows
