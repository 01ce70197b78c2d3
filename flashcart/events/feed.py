"""The event feed, read side: events in the order they were published.

An event document in the `events` collection:
    _id         the event id ("evt_..."), stable: a consumer deduplicates on it
    seq         an integer, strictly increasing in publish order (gaps allowed);
                consumers page by it
    type        "order.placed", "order.cancelled", "sale.started", ...
    created_at  when the change it describes happened (UTC)
    resource    {"type": "order" | "sale", "id": "<id>"}
    data        the resource as the API shows it

What a reader sees is always every event up to some seq (see outbox.py): paging
with `events_after(last seq seen)` misses none. Events are written by
flashcart/events/outbox.py, together with the change they describe.
"""

from flashcart.extensions import stores
from flashcart.stores import as_utc

COLLECTION = "events"

# The catalogue (docs/events.md): what each type means and what `data` holds.
ORDER_PLACED = "order.placed"
ORDER_CANCELLED = "order.cancelled"
SALE_STARTED = "sale.started"
SALE_SOLD_OUT = "sale.sold_out"
SALE_RESTOCKED = "sale.restocked"
SALE_ENDED = "sale.ended"
TYPES = (ORDER_PLACED, ORDER_CANCELLED, SALE_STARTED, SALE_SOLD_OUT, SALE_RESTOCKED, SALE_ENDED)


def events_after(seq=0, limit=100, types=None):
    """Up to `limit` published events with a seq above `seq`, oldest first,
    optionally only those of the given types."""
    query = {"seq": {"$gt": seq}}
    if types:
        query["type"] = {"$in": list(types)}
    return list(stores.db[COLLECTION].find(query).sort("seq", 1).limit(limit))


def public(event):
    """An event as the feed and webhooks show it."""
    return {
        "id": event["_id"],
        "type": event["type"],
        "created_at": as_utc(event["created_at"]),
        "resource": event["resource"],
        "data": event["data"],
        "cursor": str(event["seq"]),
    }


def page(after=0, limit=100, types=None):
    """The feed's answer: up to `limit` events after the cursor `after`, and the
    cursor to ask with next (the last one's, or `after` again when none is new)."""
    items = [public(event) for event in events_after(after, limit, types)]
    return {"items": items, "next": items[-1]["cursor"] if items else str(after)}
