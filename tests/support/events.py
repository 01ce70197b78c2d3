"""Events for tests, written as the outbox writes them: documents in `events` of the
shape flashcart/events/feed.py describes. The one place tests make events, so they
keep working when the real producer lands (only this helper would change)."""

import os
from datetime import UTC, datetime

from flashcart.events.feed import COLLECTION


def publish_event(db, event_type, resource_id, *, data=None, created_at=None, seq=None):
    """Insert one event (`db`: the app's MongoDB database) with the next seq (or `seq`:
    the feed allows gaps); returns it.

    The resource type is the event type's prefix ("order.placed" -> "order").
    """
    last = list(db[COLLECTION].find({}, {"seq": 1}).sort("seq", -1).limit(1))
    created_at = created_at or datetime.now(UTC)
    event = {
        "_id": f"evt_{os.urandom(12).hex()}",
        "seq": seq or (last[0]["seq"] if last else 0) + 1,
        "type": event_type,
        "created_at": created_at.replace(microsecond=created_at.microsecond // 1000 * 1000),
        "resource": {"type": event_type.split(".", 1)[0], "id": resource_id},
        "data": {"id": resource_id} | (data or {}),
    }
    db[COLLECTION].insert_one(event)
    return event


def publish_events(db, count, event_type="order.placed", resources=None):
    """`count` events, the i-th about resources[i % len(resources)] (default: one each)."""
    resources = resources or [f"{n:024x}" for n in range(1, count + 1)]
    return [
        publish_event(db, event_type, resources[n % len(resources)], data={"n": n})
        for n in range(count)
    ]
