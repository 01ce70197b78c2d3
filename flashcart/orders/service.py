"""Orders: checkout of a reservation and cancellation, safe against retries and crashes.

Checkout is a small saga. The order is written to MongoDB as `pending` (one per
reservation, enforced by a unique index), the hold is claimed in Redis (the arbiter:
an expired hold cannot be claimed), then the order becomes `placed`. Cancel moves a
placed order to `cancelling`, restores its units exactly once, then marks it
`cancelled`. A process that dies between steps leaves a state the sweeper finishes.
"""

from datetime import UTC, datetime, timedelta

import pymongo.errors
from pymongo import ReturnDocument

from flashcart import metrics
from flashcart.errors import Conflict, NotFound
from flashcart.extensions import stores
from flashcart.products import service as products
from flashcart.sales import service as sales
from flashcart.sales.inventory import Inventory, ReservationExpired, ReservationNotFound
from flashcart.stores import as_utc, object_id_or_none, page_of

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
    return stores.db.orders


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
        {"$set": {"status": status, "updated_at": datetime.now(UTC), **fields}},
        return_document=ReturnDocument.AFTER,
    )


def _pending_order(hold, product):
    now = datetime.now(UTC)
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

    Returns (order, created). A retry for the same reservation returns the same
    order with created=False; it never makes a second one.
    """
    inventory = sales.inventory()
    order = _orders().find_one({"reservation_id": reservation_id})
    if order is None:
        hold = inventory.get_hold(reservation_id)
        if hold is None or hold.user_id != user_id:
            raise ReservationNotFound()
        if hold.expires_at <= inventory.clock():
            inventory.release(reservation_id)
            raise ReservationExpired()
        product = products.find(hold.product_id)
        order = _pending_order(hold, product)
        try:
            _orders().insert_one(order)
        except pymongo.errors.DuplicateKeyError:
            order = _orders().find_one({"reservation_id": reservation_id})
    if order["user_id"] != user_id:
        raise ReservationNotFound()
    if order["status"] == FAILED:
        raise ReservationExpired()
    if order["status"] != PENDING:
        return public(order), False
    return public(_confirm(inventory, order)), True


def _confirm(inventory, order):
    """Claim the pending order's hold, then mark the order placed."""
    try:
        inventory.claim(order["reservation_id"], order["user_id"], str(order["_id"]))
    except (ReservationExpired, ReservationNotFound):
        if _set_status(order["_id"], FAILED, expected=[PENDING]):
            metrics.order(FAILED)
        raise ReservationExpired() from None
    placed = _set_status(order["_id"], PLACED, expected=[PENDING], placed_at=datetime.now(UTC))
    if placed:
        metrics.order(PLACED)
    inventory.settle_claim(order["reservation_id"])
    return placed or _orders().find_one({"_id": order["_id"]})


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
    """Cancel a placed order and put its units back on sale, exactly once."""
    order = _visible_order(order_id, user_id, is_admin)
    if order["status"] == PLACED:
        order = _set_status(order["_id"], CANCELLING, expected=[PLACED]) or _orders().find_one(
            {"_id": order["_id"]}
        )
    if order["status"] == CANCELLED:
        raise OrderAlreadyCancelled()
    if order["status"] != CANCELLING:
        raise OrderNotCancellable(f"An order that is {order['status']} cannot be cancelled.")
    return public(finish_cancel(sales.inventory(), order))


def finish_cancel(inventory: Inventory, order):
    """Restore a cancelling order's units (idempotent) and mark it cancelled."""
    restored = inventory.restore(
        order["product_id"], str(order["_id"]), order["user_id"], order["quantity"]
    )
    if not restored:
        # The sale may be closed: its written-back figures take the units instead.
        products.return_unsold(order["product_id"], order["quantity"])
    done = _set_status(
        order["_id"], CANCELLED, expected=[CANCELLING], cancelled_at=datetime.now(UTC)
    )
    if done:
        metrics.order(CANCELLED)
    return done or _orders().find_one({"_id": order["_id"]})


def recover_pending(inventory: Inventory, order):
    """Finish a checkout that stopped half-way: placed if its hold can be claimed
    (or already was), failed otherwise. Returns the order's new status."""
    try:
        return _confirm(inventory, order)["status"]
    except ReservationExpired:
        return FAILED


def stale(status, older_than_seconds):
    """Orders stuck in `status` for longer than the given time (crash leftovers)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
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
