"""Orders: checkout of a reservation and cancellation, safe against retries and crashes.

Checkout is a small saga. The order is written to MongoDB as `pending` (one per
reservation, enforced by a unique index), the hold is claimed in Redis (the arbiter:
an expired hold cannot be claimed), then the order becomes `placed`. Cancel moves a
placed order to `cancelling`, restores its units exactly once, then marks it
`cancelled`. A process that dies between steps leaves a state the sweeper finishes.
"""

from datetime import timedelta

import pymongo.errors
from pymongo import ReturnDocument

from flashcart import metrics
from flashcart.errors import Conflict, NotFound
from flashcart.extensions import stores
from flashcart.products import service as products
from flashcart.sales import service as sales
from flashcart.sales.inventory import Inventory, ReservationExpired, ReservationNotFound
from flashcart.stores import as_utc, object_id_or_none, page_of, utcnow

PENDING, PLACED, CANCELLING, CANCELLED, FAILED = (
    "pending",
    "placed",
    "cancelling",
    "cancelled",
    "failed",
)


class OrderNotFound(NotFound):
    """No order with this id."""

    code = "order_not_found"


class OrderAlreadyCancelled(Conflict):
    """This order has already been cancelled."""

    code = "order_already_cancelled"


class OrderNotCancellable(Conflict):
    """Only a placed order can be cancelled."""

    code = "order_not_cancellable"


def _orders():
    return stores.orders


def public(doc):
    return {
        "id": str(doc["_id"]),
        "reservation_id": doc["reservation_id"],
        "user_id": doc["user_id"],
        "product_id": doc["product_id"],
        "product_name": doc["product_name"],
        "quantity": doc["quantity"],
        "unit_price": products.from_cents(doc["unit_price_cents"]),
        "total": products.from_cents(doc["unit_price_cents"] * doc["quantity"]),
        "status": doc["status"],
        "created_at": as_utc(doc["created_at"]),
        "updated_at": as_utc(doc["updated_at"]),
    }


def _set_status(order_id, status, expected, **fields):
    return _orders().find_one_and_update(
        {"_id": order_id, "status": {"$in": list(expected)}},
        {"$set": {"status": status, "updated_at": utcnow(), **fields}},
        return_document=ReturnDocument.AFTER,
    )


def _pending_order(hold, product):
    now = utcnow()
    return {
        "reservation_id": hold.id,
        "user_id": hold.user_id,
        "product_id": hold.product_id,
        "product_name": product["name"],
        "quantity": hold.quantity,
        "unit_price_cents": product["price_cents"],
        "status": PENDING,
        "created_at": now,
        "updated_at": now,
    }


def place_order(*, user_id, reservation_id):
    """Turn the user's live reservation into a placed order.

    Returns (order, created): created is true for the one request that placed
    it. A retry or a concurrent duplicate gets the same order; never a second.
    """
    inventory = sales.inventory()
    order = _order_for(user_id, reservation_id)
    if order is None:
        order = _start_checkout(inventory, user_id, reservation_id)
    if order["user_id"] != user_id:
        raise ReservationNotFound()
    created = False
    if order["status"] == PENDING:
        order, created = _confirm(inventory, order)
    if order["status"] == FAILED:
        raise ReservationExpired()
    return public(order), created


def _start_checkout(inventory, user_id, reservation_id):
    """Write the pending order for the user's live hold (or find the one written)."""
    hold = inventory.get_hold(reservation_id)
    if hold is None or hold.user_id != user_id:
        # A concurrent checkout may have claimed the hold a moment ago.
        order = _order_for(user_id, reservation_id)
        if order is not None:
            return order
        # Whoever returned the expired hold first (a stock read, the sweeper), it expired.
        if inventory.expired_for(reservation_id, user_id):
            raise ReservationExpired()
        raise ReservationNotFound()
    if hold.expires_at <= inventory.clock():
        inventory.release(reservation_id)
        raise ReservationExpired()
    order = _pending_order(hold, products.find(hold.product_id))
    try:
        _orders().insert_one(order)
    except pymongo.errors.DuplicateKeyError:
        return _order_for(user_id, reservation_id)
    return order


def _order_for(user_id, reservation_id):
    # Naming the user keeps the lookup on one shard when orders are sharded on
    # {user_id, reservation_id} (README "Scaling out"); a reservation has one user.
    return _orders().find_one({"user_id": user_id, "reservation_id": reservation_id})


def _confirm(inventory, order):
    """Claim the pending order's hold, then mark the order placed (or failed).

    Returns (order as it now stands, whether this call placed it): a concurrent
    request may have placed it first.
    """
    try:
        inventory.claim(order["reservation_id"], order["user_id"], str(order["_id"]))
    except (ReservationExpired, ReservationNotFound):
        failed = _set_status(order["_id"], FAILED, expected=[PENDING])
        if failed:
            metrics.order(FAILED)
        return failed or _orders().find_one({"_id": order["_id"]}), False
    placed = _set_status(order["_id"], PLACED, expected=[PENDING], placed_at=utcnow())
    if placed:
        metrics.order(PLACED)
    inventory.settle_claim(order["reservation_id"])
    return placed or _orders().find_one({"_id": order["_id"]}), placed is not None


def _visible_order(order_id, user_id, is_admin):
    oid = object_id_or_none(order_id)
    order = _orders().find_one({"_id": oid}) if oid else None
    # Another user's order is reported as missing, so ids cannot be probed.
    if order is None or not (is_admin or order["user_id"] == user_id):
        raise OrderNotFound()
    return order


def get_order(*, order_id, user_id, is_admin=False):
    return public(_visible_order(order_id, user_id, is_admin))


def list_orders(*, user_id, is_admin=False, page=1, per_page=20, status=None):
    """The caller's orders, newest first; an admin sees everyone's."""
    query = {} if is_admin else {"user_id": user_id}
    if status:
        query["status"] = status
    return page_of(_orders(), query, page=page, per_page=per_page, render=public)


def cancel_order(*, order_id, user_id, is_admin=False):
    """Cancel a placed order and put its units back on sale, exactly once.

    Only the request that moves the order out of `placed` answers; a duplicate
    gets a 409 (the sweeper finishes a cancel that a crash interrupted).
    """
    order = _visible_order(order_id, user_id, is_admin)
    if order["status"] == PLACED:
        cancelling = _set_status(order["_id"], CANCELLING, expected=[PLACED])
        if cancelling is not None:
            return public(finish_cancel(sales.inventory(), cancelling))
        order = _orders().find_one({"_id": order["_id"]})
    if order["status"] in (CANCELLING, CANCELLED):
        raise OrderAlreadyCancelled()
    raise OrderNotCancellable(f"An order that is {order['status']} cannot be cancelled.")


def finish_cancel(inventory: Inventory, order):
    """Restore a cancelling order's units (idempotent) and mark it cancelled."""
    restored = inventory.restore(
        order["product_id"], str(order["_id"]), order["user_id"], order["quantity"]
    )
    if not restored:
        # The sale may be closed: its written-back figures take the units instead.
        refresh_closed_figures(order["product_id"])
    done = _set_status(order["_id"], CANCELLED, expected=[CANCELLING], cancelled_at=utcnow())
    if done:
        metrics.order(CANCELLED)
    return done or _orders().find_one({"_id": order["_id"]})


def recover_pending(inventory: Inventory, order):
    """Finish a checkout that stopped half-way: placed if its hold can be claimed
    (or already was), failed otherwise. Returns the order's new status."""
    order, _ = _confirm(inventory, order)
    return order["status"]


def stale(status, older_than_seconds):
    """Orders stuck in `status` for longer than the given time (crash leftovers)."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    return list(_orders().find({"status": status, "updated_at": {"$lt": cutoff}}))


def in_flight(product_id):
    """Whether any of the product's orders is half-way through checkout or cancel."""
    return (
        _orders().count_documents(
            {"product_id": product_id, "status": {"$in": [PENDING, CANCELLING]}}, limit=1
        )
        > 0
    )


def find_order(order_id):
    oid = object_id_or_none(order_id)
    return _orders().find_one({"_id": oid}) if oid else None


def reservations_sold(product_id, reservation_ids):
    """Which of `reservation_ids` became orders that were placed (and maybe cancelled
    since): their holds are used up, whatever Redis still says."""
    if not reservation_ids:
        return set()
    query = {
        "product_id": product_id,
        "reservation_id": {"$in": list(reservation_ids)},
        "status": {"$in": [PLACED, CANCELLING, CANCELLED]},
    }
    return {order["reservation_id"] for order in _orders().find(query, {"reservation_id": 1})}


def refresh_closed_figures(product_id):
    """A closed sale's sold and unsold units, recounted from its placed orders.

    Absolute rather than incremental, so a cancel after the close (its units go
    to unsold) and the close itself agree whatever order they run in.
    """
    product = products.find(product_id)
    if product["sale_status"] != products.CLOSED:
        return
    query = {"product_id": product_id, "status": PLACED}
    sold = sum(o["quantity"] for o in _orders().find(query, {"quantity": 1}))
    products.record_figures(product_id, sold=sold, unsold=product["stock"] - sold)


def units_sold_by_user(product_id, restored=(), claimed=()):
    """{user id: units} sold for the product, by MongoDB's orders.

    Counted: placed orders, cancelling ones whose units are not yet `restored`,
    and pending ones whose hold Redis has already `claimed` (both sets of order ids).
    """
    units = {}
    query = {"product_id": product_id, "status": {"$in": [PLACED, CANCELLING, PENDING]}}
    for order in _orders().find(query, {"user_id": 1, "quantity": 1, "status": 1}):
        order_id = str(order["_id"])
        if (
            order["status"] == PLACED
            or (order["status"] == CANCELLING and order_id not in restored)
            or (order["status"] == PENDING and order_id in claimed)
        ):
            units[order["user_id"]] = units.get(order["user_id"], 0) + order["quantity"]
    return units
