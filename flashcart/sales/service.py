"""Sales: starting a drop, live stock and reservations (rules around the engine)."""

from datetime import UTC, datetime

from flask import current_app

from flashcart.errors import Conflict
from flashcart.extensions import stores
from flashcart.orders import service as orders
from flashcart.products import service as products
from flashcart.sales.inventory import Inventory, SaleEnded, SaleNotStarted
from flashcart.stores import object_id_or_none


class SaleAlreadyStarted(Conflict):
    """The sale for this product has already started."""

    code = "sale_already_started"


def inventory():
    config = current_app.config
    return Inventory(
        stores.redis,
        hold_seconds=config["HOLD_SECONDS"],
        max_attempts=config["RESERVE_MAX_ATTEMPTS"],
    )


def _push_to_redis(product):
    """Put the product's unsold units live in Redis (no-op if they already are)."""
    product_id = str(product["_id"])
    user_units = orders.units_sold_by_user(product_id)
    sold = sum(user_units.values())
    return inventory().open_sale(
        product_id,
        available=product["stock"] - sold,
        sold=sold,
        limit=product["per_user_limit"],
        user_units=user_units,
    )


def start_sale(product_id):
    """Open the drop: the unsold stock goes live in Redis. Starting twice is a 409."""
    product = products.find(product_id)
    if product["sale_status"] == products.ENDED:
        raise SaleEnded()
    started = products.set_sale_status(product_id, products.LIVE, expected=[products.DRAFT])
    pushed = _push_to_redis(started or product)
    # A start that died between MongoDB and Redis is finished by the retry.
    if started is None and not pushed:
        raise SaleAlreadyStarted()
    return stock(product_id)


def stock(product_id):
    """Live stock from Redis; MongoDB is asked only to explain a missing sale."""
    if object_id_or_none(product_id) is None:
        raise products.ProductNotFound()
    status, available = inventory().available(product_id)
    if status is None:
        products.find(product_id)
        raise SaleNotStarted()
    return {"product_id": product_id, "status": status, "available": available}


def reserve(product_id, user_id, quantity=1):
    """Hold `quantity` units for the user until the deadline."""
    if object_id_or_none(product_id) is None:
        raise products.ProductNotFound()
    try:
        hold = inventory().reserve(product_id, user_id, quantity)
    except SaleNotStarted:
        products.find(product_id)
        raise
    expires_at = datetime.fromtimestamp(hold.expires_at, UTC)
    return {
        "id": hold.id,
        "product_id": product_id,
        "quantity": hold.quantity,
        "expires_at": expires_at,
        "expires_in": current_app.config["HOLD_SECONDS"],
    }
