"""Checkout and cancel: a small saga across a hold (sales) and an order (orders).

Checkout writes the order to MongoDB as `pending` (one per reservation), claims the
hold in Redis (the arbiter: an expired hold cannot be claimed), then marks the order
`placed`. Cancel moves a placed order to `cancelling`, restores its units exactly
once, then marks it `cancelled`. A process that dies between steps leaves a state
the sweeper finishes (flashcart/checkout/recovery.py).
"""

from flashcart.orders import service as orders
from flashcart.sales import service as sales
from flashcart.sales.engine.errors import ReservationExpired, ReservationNotFound
from flashcart.sales.engine.inventory import Inventory


def place_order(*, user_id, reservation_id):
    """Turn the user's live reservation into a placed order.

    Returns (order, created): created is true for the one request that placed
    it. A retry or a concurrent duplicate gets the same order; never a second.
    """
    inventory = sales.inventory()
    order = orders.order_for(user_id, reservation_id)
    if order is None:
        order = _start_checkout(inventory, user_id, reservation_id)
    if order["user_id"] != user_id:
        raise ReservationNotFound()
    created = False
    if order["status"] == orders.PENDING:
        order, created = _confirm(inventory, order)
    if order["status"] == orders.FAILED:
        raise ReservationExpired()
    return orders.public(order), created


def _start_checkout(inventory, user_id, reservation_id):
    """Write the pending order for the user's live hold (or find the one written)."""
    hold = inventory.get_hold(reservation_id)
    if hold is None or hold.user_id != user_id:
        # A concurrent checkout may have claimed the hold a moment ago.
        order = orders.order_for(user_id, reservation_id)
        if order is not None:
            return order
        # Whoever returned the expired hold first (a stock read, the sweeper), it expired.
        if inventory.expired_for(reservation_id, user_id):
            raise ReservationExpired()
        raise ReservationNotFound()
    if hold.expires_at <= inventory.clock():
        inventory.release(reservation_id)
        raise ReservationExpired()
    return orders.record_pending(hold)


def _confirm(inventory, order):
    """Claim the pending order's hold, then mark the order placed (or failed).

    Returns (order as it now stands, whether this call placed it): a concurrent
    request may have placed it first.
    """
    try:
        inventory.claim(order["reservation_id"], order["user_id"], str(order["_id"]))
    except (ReservationExpired, ReservationNotFound):
        failed, _ = orders.mark_failed(order)
        return failed, False
    placed, created = orders.mark_placed(order)
    inventory.settle_claim(order["reservation_id"])
    return placed, created


def recover_pending(inventory: Inventory, order):
    """Finish a checkout that stopped half-way: placed if its hold can be claimed
    (or already was), failed otherwise. Returns the order's new status."""
    order, _ = _confirm(inventory, order)
    return order["status"]


def cancel_order(*, order_id, user_id, is_admin=False):
    """Cancel a placed order and put its units back on sale, exactly once.

    Only the request that moves the order out of `placed` answers; a duplicate
    gets a 409 (the sweeper finishes a cancel that a crash interrupted).
    """
    order = orders.visible_order(order_id, user_id, is_admin)
    if order["status"] == orders.PLACED:
        order, moved = orders.mark_cancelling(order)
        if moved:
            return orders.public(finish_cancel(sales.inventory(), order))
    raise orders.not_cancellable(order)


def finish_cancel(inventory: Inventory, order):
    """Restore a cancelling order's units (idempotent) and mark it cancelled."""
    restored = inventory.restore(
        order["product_id"], str(order["_id"]), order["user_id"], order["quantity"]
    )
    if not restored:
        # The sale may be closed: its written-back figures take the units instead.
        orders.refresh_closed_figures(order["product_id"])
    cancelled, _ = orders.mark_cancelled(order)
    return cancelled
