"""The catalogue: products in MongoDB, a read-through cache and view counts in Redis.

A product's sale changes are events (sale.started, sale.ended, sale.restocked,
sale.sold_out): each is written into the product's outbox by the update that makes
the change, then published (flashcart/events/outbox.py).
"""

import json
from datetime import datetime
from decimal import Decimal

from flask import current_app
from pymongo import ReturnDocument

from flashcart.errors import NotFound
from flashcart.events import outbox
from flashcart.events.feed import SALE_ENDED, SALE_RESTOCKED, SALE_SOLD_OUT, SALE_STARTED
from flashcart.extensions import stores
from flashcart.local_cache import LocalCache
from flashcart.products import view_counts
from flashcart.products.schemas import ProductOut
from flashcart.products.view_counts import TRENDING_KEY
from flashcart.sales.engine.errors import SaleEnded
from flashcart.sales.engine.keys import product_prefix
from flashcart.stores import as_utc, object_id_or_none, page_of, utcnow

# The public products this worker read lately (PRODUCT_READ_MAX_AGE).
RECENT_PRODUCTS = "flashcart.recent_products"
# draft -> live -> ended (no new reservations) -> closed (figures written back).
DRAFT, LIVE, ENDED, CLOSED = "draft", "live", "ended", "closed"


# The product as the API shows it, in JSON values: a sale event's `data`.
_AS_SHOWN = ProductOut()
# Sale status moves that are events.
_STATUS_EVENTS = {LIVE: SALE_STARTED, ENDED: SALE_ENDED}


class ProductNotFound(NotFound):
    """No product with this id."""

    code = "product_not_found"


def cache_key(product_id):
    return product_prefix(product_id) + "cache"


def to_cents(price):
    return int(Decimal(price) * 100)


def from_cents(cents):
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def public(doc):
    return {
        "id": str(doc["_id"]),
        "name": doc["name"],
        "description": doc["description"],
        "price": from_cents(doc["price_cents"]),
        "stock": doc["stock"],
        "per_user_limit": doc["per_user_limit"],
        "sale_status": sale_status_now(doc),
        "starts_at": _utc_or_none(doc.get("starts_at")),
        "ends_at": _utc_or_none(doc.get("ends_at")),
        "created_at": as_utc(doc["created_at"]),
    }


def _utc_or_none(moment):
    return as_utc(moment) if moment else None


_MOMENTS = ("created_at", "starts_at", "ends_at")


def _encode(product):
    encoded = {**product, "price": str(product["price"])}
    for name in _MOMENTS:
        encoded[name] = product[name].isoformat() if product[name] else None
    return json.dumps(encoded)


def _decode(raw):
    product = json.loads(raw)
    product["price"] = Decimal(product["price"])
    for name in _MOMENTS:
        product[name] = datetime.fromisoformat(product[name]) if product[name] else None
    return product


def _products():
    return stores.db.products


def find(product_id):
    """The product document, or raise ProductNotFound (malformed ids included)."""
    oid = object_id_or_none(product_id)
    doc = _products().find_one({"_id": oid}) if oid else None
    if doc is None:
        raise ProductNotFound()
    return doc


def create_product(
    *,
    name,
    description,
    price,
    stock,
    per_user_limit,
    starts_at=None,
    ends_at=None,
    created_by=None,
):
    now = utcnow()
    doc = {
        "name": name,
        "description": description,
        "price_cents": to_cents(price),
        "stock": stock,
        "per_user_limit": per_user_limit,
        "sale_status": DRAFT,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "created_by": created_by,
        "created_at": now,
        "updated_at": now,
    }
    _products().insert_one(doc)
    return public(doc)


def list_products(*, page, per_page):
    return page_of(_products(), {}, page=page, per_page=per_page, render=public)


def init_app(app):
    app.extensions[RECENT_PRODUCTS] = LocalCache(max_age=app.config["PRODUCT_READ_MAX_AGE"])


def _cached(product_id):
    """The public product from this worker's recent reads, else the shared cache, else
    MongoDB (then cached). Treat it as read-only: later requests share it."""
    recent = current_app.extensions[RECENT_PRODUCTS]
    product = recent.get(product_id)
    if product is None:
        raw = stores.redis.get(cache_key(product_id))
        product = _decode(raw) if raw is not None else _fill_cache(product_id)
        recent.put(product_id, product)
    return product


def _fill_cache(product_id):
    product = public(find(product_id))
    stores.redis.set(
        cache_key(product_id), _encode(product), ex=current_app.config["PRODUCT_CACHE_SECONDS"]
    )
    return product


def view_product(product_id):
    """One product for a shopper: cache first, and the view counts toward trending."""
    if object_id_or_none(product_id) is None:
        raise ProductNotFound()
    product = _cached(product_id)
    view_counts.count(product_id)
    now = _as_of_now(product)
    if now is not product:  # its sale ended since the read: the same copy for the rest
        current_app.extensions[RECENT_PRODUCTS].replace(product_id, now)
    return now


def _as_of_now(product):
    """A cached public product with its sale status as of now."""
    status = sale_status_now(product)
    return product if status == product["sale_status"] else {**product, "sale_status": status}


def trending(limit=None):
    """The most viewed products, most viewed first (this worker's views included)."""
    view_counts.flush()
    limit = limit or current_app.config["TRENDING_SIZE"]
    ranked = stores.redis.zrevrange(TRENDING_KEY, 0, limit - 1, withscores=True)
    result = []
    for product_id, views in ranked:
        try:
            result.append({"product": _as_of_now(_cached(product_id)), "views": int(views)})
        except ProductNotFound:
            view_counts.forget(product_id)
    return result


def _forget_cached(product_id):
    """After a change: drop the shared cache entry, and this worker's."""
    stores.redis.delete(cache_key(product_id))
    current_app.extensions[RECENT_PRODUCTS].pop(product_id)


def _change(product_id, allowed, changes, event=None):
    """Apply `changes(doc)` (fields to set) to the product while its sale status is
    one of `allowed`, with the event `event(doc after)` names, if any, in the same
    update. Returns the updated document, or None if the status did not allow it.

    A compare-and-set on what an event shows (status, stock): a concurrent change
    makes it read again, so the event describes exactly the state it produced.
    """
    oid = object_id_or_none(product_id)
    while True:
        doc = _products().find_one({"_id": oid}) if oid else None
        if doc is None or doc["sale_status"] not in allowed:
            return None
        now = utcnow()
        fields = {**changes(doc), "updated_at": now}
        after = {**doc, **fields}
        update = {"$set": fields}
        named = event(after) if event else None
        if named:
            event_type, change = named
            shown = _AS_SHOWN.dump(public(after))
            entry = outbox.pending(event_type, "sale", product_id, shown, change=change, at=now)
            update["$push"] = {outbox.OUTBOX: entry}
        changed = _products().find_one_and_update(
            {"_id": oid, "sale_status": doc["sale_status"], "stock": doc["stock"]},
            update,
            return_document=ReturnDocument.AFTER,
        )
        if changed is not None:
            _forget_cached(product_id)
            if named:
                outbox.publish_soon(_products(), changed)
            return changed


def set_sale_status(product_id, status, expected):
    """Move the product's sale status from one of `expected` to `status` (starting
    and ending a sale are events).

    Returns the updated document, or None if it was not in an expected state.
    """
    changed = _change(
        product_id,
        expected,
        lambda doc: {"sale_status": status},
        lambda after: (_STATUS_EVENTS[status], status) if status in _STATUS_EVENTS else None,
    )
    _forget_cached(product_id)
    return changed


def add_stock(product_id, quantity, allowed):
    """Add units to the drop's total while the sale is in one of `allowed` states
    (a live sale's restock is an event, named by the stock it reached)."""
    find(product_id)
    doc = _change(
        product_id,
        allowed,
        lambda doc: {"stock": doc["stock"] + quantity},
        lambda after: (
            (SALE_RESTOCKED, f"stock-{after['stock']}") if after["sale_status"] == LIVE else None
        ),
    )
    if doc is None:
        raise SaleEnded("The sale has ended; its stock can no longer change.")
    return doc


def record_sold_out(product_id, stock):
    """Record that the live sale of `stock` units sold out: the event sale.sold_out,
    once per stock level (a restock starts a new round). Returns whether this call
    recorded it."""
    oid = object_id_or_none(product_id)
    doc = _products().find_one({"_id": oid, "sale_status": LIVE, "stock": stock})
    if doc is None or doc.get("sold_out_stock") == stock:
        return False
    now = utcnow()
    shown = _AS_SHOWN.dump(public(doc))
    entry = outbox.pending(
        SALE_SOLD_OUT, "sale", product_id, shown, change=f"stock-{stock}", at=now
    )
    changed = _products().find_one_and_update(
        {"_id": oid, "sale_status": LIVE, "stock": stock, "sold_out_stock": {"$ne": stock}},
        {"$set": {"sold_out_stock": stock}, "$push": {outbox.OUTBOX: entry}},
        return_document=ReturnDocument.AFTER,
    )
    if changed is None:
        return False
    outbox.publish_soon(_products(), changed)
    return True


def sold_out_recorded(product):
    """Whether the product's sale, at its current stock, was recorded as sold out."""
    return product.get("sold_out_stock") == product["stock"]


def publish_left_over():
    """Publish the sale events a crash left unpublished (the sweeper calls this)."""
    return outbox.publish_left_over(_products())


def window_over(product):
    """Whether the product's `ends_at` has passed: its sale can no longer take orders."""
    ends_at = product.get("ends_at")
    return ends_at is not None and as_utc(ends_at) <= utcnow()


def window_closed(product):
    """Whether a live sale's `ends_at` has passed (the sweeper then ends it)."""
    return product["sale_status"] == LIVE and window_over(product)


def sale_status_now(product):
    """The sale status as shoppers see it: a live sale past its `ends_at` has ended,
    even before the sweeper writes that down."""
    return ENDED if window_closed(product) else product["sale_status"]


def products_in_sale(statuses=(LIVE, ENDED)):
    """Products whose sale state lives in Redis."""
    return list(_products().find({"sale_status": {"$in": list(statuses)}}))


def mark_closed(product_id):
    """An ended sale is over: no hold or claim is left in Redis."""
    now = utcnow()
    _products().update_one(
        {"_id": object_id_or_none(product_id), "sale_status": ENDED},
        {"$set": {"sale_status": CLOSED, "closed_at": now, "updated_at": now}},
    )
    _forget_cached(product_id)


def record_figures(product_id, *, sold, unsold):
    """Write a closed sale's figures back."""
    _products().update_one(
        {"_id": object_id_or_none(product_id), "sale_status": CLOSED},
        {"$set": {"sold": sold, "unsold": unsold}},
    )
    _forget_cached(product_id)
