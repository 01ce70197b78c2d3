"""The event feed, read side: events in the order they were published.

An event document in the `events` collection:
    _id         the event id ("evt_..."), stable: a consumer deduplicates on it
    seq         an integer, strictly increasing in publish order (gaps allowed);
                consumers page by it
    type        "order.placed", "order.cancelled", "sale.started", ...
    created_at  when the change it describes happened (UTC)
    resource    {"type": "order" | "sale", "id": "<id>"}
    data        the resource as the API shows it
"""

from flashcart.extensions import stores
from flashcart.stores import as_utc

COLLECTION = "events"


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
