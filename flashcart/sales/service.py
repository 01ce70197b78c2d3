"""Sales: starting a drop, live stock and reservations (rules around the engine).

What was sold comes from the orders ledger (read-only); checkout and cancel, which
change both a hold and an order, are in flashcart/checkout/saga.py.

A sale selling out happens in Redis, so its event (sale.sold_out) is recorded when
someone looks: the first reservation refused as sold out in each worker, and the
sweeper's every pass (`record_if_sold_out`), once per stock level.
"""

import logging
from datetime import UTC, datetime

import pymongo.errors
import redis.exceptions
from flask import current_app

from flashcart import metrics
from flashcart.errors import Busy, Conflict, DomainError, ServiceUnavailable
from flashcart.extensions import stores
from flashcart.local_cache import LocalCache
from flashcart.orders import ledger
from flashcart.products import service as products
from flashcart.sales.engine.errors import SaleEnded, SaleNotStarted, SoldOut
from flashcart.sales.engine.hints import EngineHints
from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.records import SalePlan
from flashcart.stores import as_utc, object_id_or_none

log = logging.getLogger(__name__)

# A worker that refuses a reservation as sold out checks whether the sell-out is
# recorded at most once a second per product: the refusals of a sold-out drop come
# by the thousand, and the sweeper checks every pass anyway.
SOLD_OUT_CHECK_SECONDS = 1.0
# The check reads the sale in one look, again if a unit moved meanwhile: while
# checkouts still move units it gives up soon (a refusal waits on it) and looks later.
SOLD_OUT_CHECK_ATTEMPTS = 4


class SaleAlreadyStarted(Conflict):
    """The sale for this product has already started."""

    code = "sale_already_started"


class SaleRecovering(ServiceUnavailable):
    """The sale is live, but its live stock is being rebuilt (the store lost it); retry shortly."""

    retry_after = 1


class _MeteredInventory(Inventory):
    """The engine, counting the holds it returns to stock for /metrics."""

    def release(self, reservation_id, only_if_expired=True, order_placed=None):
        returned = super().release(reservation_id, only_if_expired, order_placed)
        if returned:
            metrics.holds_returned(returned, "expired" if only_if_expired else "released")
        return returned


def init_app(app):
    """The sale engine's per-worker hints, and what sales measures: live stock, holds
    and units sold, read when Prometheus scrapes /metrics."""
    app.extensions["flashcart.engine_hints"] = EngineHints()
    app.extensions["flashcart.sold_out_checked"] = LocalCache(max_age=SOLD_OUT_CHECK_SECONDS)
    for name, documentation, figure in (
        (
            "flashcart_stock_available",
            "Units available now (Redis), per product whose sale is live or ending.",
            0,
        ),
        (
            "flashcart_holds",
            "Holds now (Redis): live, or expired and not yet returned, per product in a sale.",
            1,
        ),
        (
            "flashcart_units_sold",
            "Units claimed by orders (Redis), per product whose sale is live or ending.",
            2,
        ),
    ):
        metrics.register_gauge(
            app,
            name,
            documentation,
            "product_id",
            lambda figure=figure: {p: row[figure] for p, row in _live_figures().items()},
        )


def engine_hints(app=None):
    """The app's engine hints (sold-out marks, stock reads, stripes with units): they
    outlive the request's Inventory, for as long as the worker runs."""
    return (app or current_app).extensions["flashcart.engine_hints"]


def inventory(max_attempts=None):
    """The engine, built from the app's config, for this request or command
    (`max_attempts` for a transaction that may give up sooner)."""
    config = current_app.config
    return _MeteredInventory(
        stores.redis,
        hold_seconds=config["HOLD_SECONDS"],
        max_attempts=max_attempts or config["RESERVE_MAX_ATTEMPTS"],
        stripes=config["STOCK_STRIPES"],
        on_retry=metrics.WATCH_RETRIES.inc,
        placed_orders=ledger.reservations_sold,
        hints=engine_hints(),
        ack_replicas=config["REDIS_ACK_REPLICAS"],
        ack_timeout_ms=config["REDIS_ACK_TIMEOUT_MS"],
    )


def plan_for(product, inventory_=None):
    """The durable truth for a product's sale: MongoDB's stock and orders.

    Units count as sold when their order is placed, is being cancelled but not yet
    restored, or is pending on a claim Redis already made (the sweeper settles it).
    """
    product_id = str(product["_id"])
    engine = inventory_ or inventory()
    return SalePlan(
        status=products.LIVE if product["sale_status"] == products.LIVE else products.ENDED,
        limit=product["per_user_limit"],
        total=product["stock"],
        sold_by_user=ledger.units_sold_by_user(
            product_id,
            restored=engine.restored_orders(product_id),
            claimed=set(engine.claims(product_id).values()),
        ),
        opens_at=_epoch(product.get("starts_at")),
        closes_at=_epoch(product.get("ends_at")),
    )


def _epoch(moment):
    return as_utc(moment).timestamp() if moment else None


def start_sale(product_id):
    """Open the drop: the unsold stock goes live in Redis. Starting twice is a 409."""
    product = products.find(product_id)
    if product["sale_status"] in (products.ENDED, products.CLOSED):
        raise SaleEnded()
    if products.window_over(product):
        ended_at = as_utc(product["ends_at"]).isoformat()
        raise SaleEnded(f"The sale's window ended at {ended_at} (ends_at): it cannot open.")
    started = products.set_sale_status(product_id, products.LIVE, expected=[products.DRAFT])
    engine = inventory()
    pushed = engine.open_sale(product_id, lambda: plan_for(products.find(product_id), engine))
    # A start that died between MongoDB and Redis is finished by the retry.
    if started is None and not pushed:
        raise SaleAlreadyStarted()
    return stock(product_id)


def end_sale(product_id):
    """Stop new reservations; live holds may still check out until their deadline.

    The sweeper writes the final figures back to MongoDB once the last hold is
    settled (see `recovery.close_ended_sale`).
    """
    product = products.find(product_id)
    if product["sale_status"] == products.DRAFT:
        raise SaleNotStarted()
    products.set_sale_status(product_id, products.ENDED, expected=[products.LIVE])
    engine = inventory()
    engine.end_sale(product_id)
    status, available = engine.available(product_id)
    return {"product_id": product_id, "status": status or products.CLOSED, "available": available}


def restock(product_id, quantity):
    """Add units to a live sale: MongoDB's stock first (the truth), then Redis."""
    product = products.add_stock(product_id, quantity, allowed=[products.DRAFT, products.LIVE])
    engine = inventory()
    total = product["stock"]
    if (
        product["sale_status"] == products.LIVE
        and not engine.restock(product_id, quantity, total)
        # Redis has no sale (lost?): rebuild it from MongoDB, which counts the units.
        and rebuild_sale(product_id, engine, only_if_missing=True) is None
    ):
        # Another rebuild put it back first, perhaps from a read before this restock:
        # bring it up to the total (a no-op once counted).
        engine.restock(product_id, quantity, total)
    _, available = engine.available(product_id)
    return {"product_id": product_id, "stock": product["stock"], "available": available}


def rebuild_sale(product_id, engine=None, only_if_missing=False, only_if_drifted=False):
    """Rewrite a live or ended sale's Redis state from MongoDB (`Inventory.rebuild`,
    whose WATCH makes it start over when a change races it). Returns the snapshot
    written, or None when the sale is not live or ended (or, `only_if_missing`,
    when Redis has it; `only_if_drifted`, when Redis already agrees)."""
    engine = engine or inventory()

    def plan_now():
        # Read inside the WATCH: an admin may end or restock, the sweeper close.
        product = products.find(product_id)
        if product["sale_status"] not in (products.LIVE, products.ENDED):
            return None
        return plan_for(product, engine)

    return engine.rebuild(
        product_id,
        plan_now,
        already_sold=lambda ids: ledger.reservations_sold(product_id, ids),
        only_if_missing=only_if_missing,
        only_if_drifted=only_if_drifted,
    )


def stock(product_id):
    """Live stock from Redis; MongoDB is asked only to explain a missing sale."""
    if object_id_or_none(product_id) is None:
        raise products.ProductNotFound()
    max_age = current_app.config["STOCK_READ_MAX_AGE"]
    status, available = inventory().available(product_id, max_age=max_age)
    if status is None:
        _explain_missing_sale(product_id)
    return {"product_id": product_id, "status": status, "available": available}


def _explain_missing_sale(product_id):
    """Redis has no sale for the product: say why, from MongoDB (off the hot path).

    A live sale missing from Redis was lost (a restart without persistence): the
    sweeper rebuilds it within a pass, so the shopper is told to retry, not that
    the sale has not started."""
    status = products.sale_status_now(products.find(product_id))
    if status in (products.ENDED, products.CLOSED):
        raise SaleEnded()
    if status == products.LIVE:
        raise SaleRecovering()
    raise SaleNotStarted()


def reserve(product_id, user_id, quantity=1):
    """Hold `quantity` units for the user until the deadline."""
    try:
        reservation = _reserve(product_id, user_id, quantity)
    except SoldOut as error:
        metrics.reservation(error.code)
        _check_sold_out(product_id)
        raise
    except DomainError as error:
        metrics.reservation(error.code)
        raise
    except Exception:
        metrics.reservation("error")
        raise
    metrics.reservation("ok")
    return reservation


def _check_sold_out(product_id):
    """After a sold-out refusal: record the sell-out, if no one has (not every time)."""
    checked = current_app.extensions["flashcart.sold_out_checked"]
    if checked.get(product_id) is not None:
        return
    checked.put(product_id, True)
    try:
        record_if_sold_out(product_id)
    except (pymongo.errors.PyMongoError, redis.exceptions.RedisError) as error:
        # The refusal stands; the sweeper records the sell-out on its next pass.
        log.warning("sales: sold-out check for %s failed: %s", product_id, error)


def record_if_sold_out(product_id):
    """Record the event sale.sold_out if every unit of the live sale is held or
    sold and that is not yet recorded for its stock level. Returns whether this call
    recorded it.

    MongoDB's stock is read before Redis: a restock writes MongoDB first, so one
    whose units are not yet in Redis shows as fewer units held or sold than the
    stock, not as a sell-out.
    """
    product = products.find(product_id)
    if product["sale_status"] != products.LIVE or products.sold_out_recorded(product):
        return False
    try:
        engine = inventory(max_attempts=SOLD_OUT_CHECK_ATTEMPTS)
        if not engine.all_taken(product_id, product["stock"]):
            return False
    except Busy:
        return False  # stock still moving: the next look (or sweep) decides
    return products.record_sold_out(product_id, product["stock"])


def refuse_if_sold_out(product_id):
    """Refuse a reservation from this process's sold-out mark (no-op without one, and
    then no engine is built: most reservations find none)."""
    if not engine_hints().marked_sold_out(product_id):
        return
    try:
        inventory().refuse_if_sold_out(product_id)
    except DomainError as error:
        metrics.reservation(error.code)
        raise


def live_figures():
    """{product id: (available units, holds, units sold)} for every product whose sale
    is in Redis."""
    engine = inventory()
    figures = {}
    for product in products.products_in_sale():
        product_id = str(product["_id"])
        status, available = engine.available(product_id)
        if status is not None:
            figures[product_id] = (available, *engine.counts(product_id))
    return figures


def _live_figures():
    return metrics.once_per_scrape("sales", live_figures)  # three gauges, one read


def _reserve(product_id, user_id, quantity):
    if object_id_or_none(product_id) is None:
        raise products.ProductNotFound()
    try:
        hold = inventory().reserve(product_id, user_id, quantity)
    except SaleNotStarted:
        _explain_missing_sale(product_id)
    expires_at = datetime.fromtimestamp(hold.expires_at, UTC)
    return {
        "id": hold.id,
        "product_id": product_id,
        "quantity": hold.quantity,
        "expires_at": expires_at,
        "expires_in": current_app.config["HOLD_SECONDS"],
    }
