"""Orders: their records and the moves between states, safe against retries and crashes.

An order is written `pending` (one per reservation, enforced by a unique index), then
becomes `placed` or `failed`; a placed one becomes `cancelling`, then `cancelled`.
Each move happens once, whoever else tries it at the same time. The checkout saga
that pairs these moves with the holds in sales is in flashcart/checkout/saga.py.

Becoming placed and becoming cancelled are events (order.placed, order.cancelled):
each is written into the order's outbox by the same update that moves it, then
published (flashcart/events/outbox.py).
"""

import pymongo.errors
from pymongo import ReturnDocument

from flashcart import metrics
from flashcart.errors import Conflict, NotFound
from flashcart.events import outbox
from flashcart.events.feed import ORDER_CANCELLED, ORDER_PLACED
from flashcart.extensions import stores
from flashcart.orders.ledger import CANCELLED, CANCELLING, FAILED, PENDING, PLACED, placed_units
from flashcart.orders.schemas import OrderOut
from flashcart.products import service as products
from flashcart.stores import as_utc, object_id_or_none, page_of, utcnow

# The order as the API shows it, in JSON values: an event's `data`.
_AS_SHOWN = OrderOut()
# The moves that are events, and their types.
_EVENTS = {PLACED: ORDER_PLACED, CANCELLED: ORDER_CANCELLED}


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


def _set_status(order_id, status, expected, event=None, **fields):
    """One conditional update: the new status and fields, and the event, if any."""
    update = {"$set": {"status": status, **fields}}
    if event is not None:
        update["$push"] = {outbox.OUTBOX: event}
    return _orders().find_one_and_update(
        {"_id": order_id, "status": {"$in": list(expected)}},
        update,
        return_document=ReturnDocument.AFTER,
    )


def _move(order, status, expected, **fields):
    """Move the order from one of `expected` to `status`.

    Returns (the order as it now stands, whether this call moved it): a concurrent
    request may have moved it first. A move that is an event writes it in the same
    update, then publishes it. /metrics counts the orders that reach a final state
    (placed, failed, cancelled).
    """
    changes = {"updated_at": utcnow(), **fields}
    event = None
    if status in _EVENTS:
        shown = _AS_SHOWN.dump(public({**order, "status": status, **changes}))
        event = outbox.pending(
            _EVENTS[status], "order", shown["id"], shown, change=status, at=changes["updated_at"]
        )
    moved = _set_status(order["_id"], status, expected, event=event, **changes)
    if moved is None:
        return _orders().find_one({"_id": order["_id"]}), False
    if status != CANCELLING:
        metrics.order(status)
    if event is not None:
        outbox.publish_soon(_orders(), moved)
    return moved, True


def publish_left_over():
    """Publish the order events a crash left unpublished (the sweeper calls this)."""
    return outbox.publish_left_over(_orders())


def order_for(user_id, reservation_id):
    """The order for the user's reservation, or None."""
    # Naming the user keeps the lookup on one shard when orders are sharded on
    # {user_id, reservation_id} (docs/scaling-out.md); a reservation has one user.
    return _orders().find_one({"user_id": user_id, "reservation_id": reservation_id})


def record_pending(hold):
    """Write the pending order for a live hold, or find the one a concurrent request
    wrote (the unique index lets one through)."""
    product = products.find(hold.product_id)
    now = utcnow()
    order = {
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
    try:
        _orders().insert_one(order)
    except pymongo.errors.DuplicateKeyError:
        return order_for(hold.user_id, hold.id)
    return order


def mark_placed(order):
    """pending -> placed: its hold was claimed. Returns (order, whether this call placed it)."""
    return _move(order, PLACED, [PENDING], placed_at=utcnow())


def mark_failed(order):
    """pending -> failed: its hold expired before it could be claimed."""
    return _move(order, FAILED, [PENDING])


def mark_cancelling(order):
    """placed -> cancelling: only the caller that moves it goes on to restore the units."""
    return _move(order, CANCELLING, [PLACED])


def mark_cancelled(order):
    """cancelling -> cancelled: its units are back on sale (or counted as unsold)."""
    return _move(order, CANCELLED, [CANCELLING], cancelled_at=utcnow())


def not_cancellable(order):
    """The error for cancelling an order that is no longer placed."""
    if order["status"] in (CANCELLING, CANCELLED):
        return OrderAlreadyCancelled()
    return OrderNotCancellable(f"An order that is {order['status']} cannot be cancelled.")


def visible_order(order_id, user_id, is_admin):
    """The order, if the user may see it (its owner, or an admin)."""
    oid = object_id_or_none(order_id)
    order = _orders().find_one({"_id": oid}) if oid else None
    # Another user's order is reported as missing, so ids cannot be probed.
    if order is None or not (is_admin or order["user_id"] == user_id):
        raise OrderNotFound()
    return order


def get_order(*, order_id, user_id, is_admin=False):
    return public(visible_order(order_id, user_id, is_admin))


def list_orders(*, user_id, is_admin=False, page=1, per_page=20, status=None):
    """The caller's orders, newest first; an admin sees everyone's."""
    query = {} if is_admin else {"user_id": user_id}
    if status:
        query["status"] = status
    return page_of(_orders(), query, page=page, per_page=per_page, render=public)


def refresh_closed_figures(product_id):
    """A closed sale's sold and unsold units, recounted from its placed orders.

    Absolute rather than incremental, so a cancel after the close (its units go
    to unsold) and the close itself agree whatever order they run in.
    """
    product = products.find(product_id)
    if product["sale_status"] != products.CLOSED:
        return
    sold = placed_units(product_id)
    products.record_figures(product_id, sold=sold, unsold=product["stock"] - sold)
