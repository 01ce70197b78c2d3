"""The orders ledger: what MongoDB's orders say was sold, read-only.

Sales rebuilds its stock and per-user limits from these counts, and recovery finds
the orders a crash left half-way. They read them here, from the orders collection,
without importing the orders service: this module knows no other domain.
"""

from datetime import timedelta

from flashcart.extensions import stores
from flashcart.stores import object_id_or_none, utcnow

PENDING, PLACED, CANCELLING, CANCELLED, FAILED = (
    "pending",
    "placed",
    "cancelling",
    "cancelled",
    "failed",
)


def find_order(order_id):
    oid = object_id_or_none(order_id)
    return stores.orders.find_one({"_id": oid}) if oid else None


def stale(status, older_than_seconds):
    """Orders stuck in `status` for longer than the given time (crash leftovers)."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    return list(stores.orders.find({"status": status, "updated_at": {"$lt": cutoff}}))


def in_flight(product_id):
    """Whether any of the product's orders is half-way through checkout or cancel."""
    return (
        stores.orders.count_documents(
            {"product_id": product_id, "status": {"$in": [PENDING, CANCELLING]}}, limit=1
        )
        > 0
    )


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
    return {order["reservation_id"] for order in stores.orders.find(query, {"reservation_id": 1})}


def units_sold_by_user(product_id, restored=(), claimed=()):
    """{user id: units} sold for the product, by MongoDB's orders.

    Counted: placed orders, cancelling ones whose units are not yet `restored`,
    and pending ones whose hold Redis has already `claimed` (both sets of order ids).
    """
    units = {}
    query = {"product_id": product_id, "status": {"$in": [PLACED, CANCELLING, PENDING]}}
    for order in stores.orders.find(query, {"user_id": 1, "quantity": 1, "status": 1}):
        order_id = str(order["_id"])
        if (
            order["status"] == PLACED
            or (order["status"] == CANCELLING and order_id not in restored)
            or (order["status"] == PENDING and order_id in claimed)
        ):
            units[order["user_id"]] = units.get(order["user_id"], 0) + order["quantity"]
    return units


def placed_units(product_id):
    """Units in the product's placed orders: a closed sale's sold figure."""
    query = {"product_id": product_id, "status": PLACED}
    return sum(order["quantity"] for order in stores.orders.find(query, {"quantity": 1}))
