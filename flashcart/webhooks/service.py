"""Webhook endpoints: register, list, delete, rotate the secret; the delivery log and
replays; the backlog gauge. Plain Python: the routes and the CLI call it.

A secret is returned twice only: when the endpoint is created and when it is
rotated. Every other answer, and every log line, leaves it out.
"""

from datetime import timedelta

from bson import ObjectId
from flask import current_app

from flashcart import metrics
from flashcart.errors import DomainError, NotFound
from flashcart.events import feed
from flashcart.stores import as_utc, object_id_or_none, utcnow
from flashcart.webhooks import destinations, records, signatures

EVENT_TYPES = feed.TYPES
BACKLOG_GAUGE = "flashcart_events_undelivered_oldest_age_seconds"


class EndpointNotFound(NotFound):
    """No such webhook endpoint."""

    code = "webhook_not_found"


class DeliveryNotFound(NotFound):
    """The endpoint has no delivery of that event."""

    code = "delivery_not_found"


class DestinationRefused(DomainError):
    """Webhooks may not be sent to this URL."""

    status = 422
    code = "destination_refused"


def _settings():
    return current_app.config


def public(endpoint):
    return {
        "id": str(endpoint["_id"]),
        "url": endpoint["url"],
        "types": endpoint["types"],
        "description": endpoint.get("description", ""),
        "active": endpoint["active"],
        "created_at": as_utc(endpoint["created_at"]),
        "updated_at": as_utc(endpoint["updated_at"]),
    }


def _with_secret(endpoint):
    return public(endpoint) | {"secret": endpoint["secret"]}


def check_destination(url):
    """Refuse a URL webhooks may not be sent to (DestinationRefused, 422)."""
    try:
        destinations.check(
            url,
            allow_http=_settings()["WEBHOOKS_ALLOW_HTTP"],
            allow_private=_settings()["WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS"],
        )
    except destinations.DestinationRefused as error:
        raise DestinationRefused(str(error), errors={"url": [str(error)]}) from None


def feed_head():
    """The seq of the newest event in the feed (0 when it is empty).

    Found through `feed.events_after` alone, whose seq index answers each probe: up
    in powers of two past the newest, then halving the gap (about 2 log2(seq) probes).
    """
    if not feed.events_after(0, 1):
        return 0
    known, beyond = 0, 1
    while feed.events_after(beyond, 1):
        known, beyond = beyond, beyond * 2
    while beyond - known > 1:  # an event past `known`, none past `beyond`
        middle = (known + beyond) // 2
        if feed.events_after(middle, 1):
            known = middle
        else:
            beyond = middle
    return beyond


def create_endpoint(*, url, types, description=""):
    """Register an endpoint for events of `types` published from now on. The answer
    carries the signing secret, this once."""
    check_destination(url)
    now = utcnow()
    endpoint = {
        "_id": ObjectId(),
        "url": url,
        "types": sorted(set(types)),
        "description": description,
        "secret": signatures.new_secret(),
        "active": True,
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
        # Only events published from now on.
        "cursor": feed_head(),
        "lease_owner": None,
        "lease_until": records.NEVER,
        "visited_at": records.NEVER,
    }
    return _with_secret(records.insert_endpoint(endpoint))


def _endpoint(endpoint_id):
    oid = object_id_or_none(endpoint_id)
    endpoint = records.live_endpoint(oid) if oid else None
    if endpoint is None:
        raise EndpointNotFound()
    return endpoint


def list_endpoints():
    return [public(endpoint) for endpoint in records.live_endpoints()]


def get_endpoint(endpoint_id):
    return public(_endpoint(endpoint_id))


def delete_endpoint(endpoint_id):
    """Stop sending to the endpoint and forget its secret; its log stays readable
    to no one (the endpoint is gone from the API)."""
    endpoint = _endpoint(endpoint_id)
    records.update_endpoint(
        endpoint["_id"],
        {"active": False, "deleted_at": utcnow()},
        unset=("secret", "previous_secret", "previous_secret_until"),
    )


def rotate_secret(endpoint_id):
    """A new signing secret (returned this once). The old one keeps signing alongside
    it for WEBHOOKS_SECRET_ROTATION_GRACE_SECONDS, so receivers can switch over."""
    endpoint = _endpoint(endpoint_id)
    grace = timedelta(seconds=_settings()["WEBHOOKS_SECRET_ROTATION_GRACE_SECONDS"])
    changes = {"secret": signatures.new_secret()}
    if grace:
        changes |= {
            "previous_secret": endpoint["secret"],
            "previous_secret_until": utcnow() + grace,
        }
    updated = records.update_endpoint(endpoint["_id"], changes)
    if updated is None:
        raise EndpointNotFound()
    return _with_secret(updated)


def public_delivery(delivery):
    return {
        "id": str(delivery["_id"]),
        "event_id": delivery["event_id"],
        "event_type": delivery["type"],
        "resource": delivery["resource"],
        "status": delivery["status"],
        "attempts": delivery["attempts"],
        "next_attempt_at": (
            as_utc(delivery["next_attempt_at"]) if delivery["status"] == records.PENDING else None
        ),
        "created_at": as_utc(delivery["created_at"]),
        "delivered_at": as_utc(delivery["delivered_at"]) if delivery.get("delivered_at") else None,
        "log": [
            {**entry, "at": as_utc(entry["at"])} for entry in reversed(delivery.get("log", []))
        ],
    }


def list_deliveries(endpoint_id, *, status=None, page=1, per_page=20):
    """The endpoint's deliveries, newest event first, each with its recent attempts."""
    endpoint = _endpoint(endpoint_id)
    items, total = records.deliveries_page(
        endpoint["_id"], status=status, page=page, per_page=per_page
    )
    return {
        "items": [public_delivery(item) for item in items],
        "page": page,
        "per_page": per_page,
        "total": total,
    }


def replay(endpoint_id, *, event_id=None):
    """Send again: the endpoint's failed deliveries, or the delivery of one event
    (whatever its state). Returns how many were queued."""
    endpoint = _endpoint(endpoint_id)
    if event_id is None:
        query = {"endpoint_id": endpoint["_id"], "status": records.FAILED}
    else:
        query = {"endpoint_id": endpoint["_id"], "event_id": event_id}
        if not records.has_delivery(query):
            raise DeliveryNotFound()
    return {"replayed": records.requeue(query)}


def undelivered_oldest_age_seconds():
    """Seconds since the oldest event not yet delivered to some active endpoint was
    published (pending, or not yet fanned out); 0 when there is none. Failed
    deliveries are left out: they wait for a replay, and are counted as they fail."""
    active = [endpoint for endpoint in records.live_endpoints() if endpoint["active"]]
    if not active:
        return 0.0
    oldest = []
    pending = records.oldest_pending_event([endpoint["_id"] for endpoint in active])
    if pending:
        oldest.append(as_utc(pending["event_created_at"]))
    for endpoint in active:
        for event in feed.events_after(endpoint["cursor"], 1, endpoint["types"]):
            oldest.append(as_utc(event["created_at"]))
    if not oldest:
        return 0.0
    return max(0.0, (utcnow() - min(oldest)).total_seconds())


def init_app(app):
    """Serve the delivery backlog's age at /metrics."""
    metrics.register_gauge(
        app,
        BACKLOG_GAUGE,
        "Seconds since the oldest event not yet delivered to an active webhook endpoint "
        "was published (0 when none).",
        "endpoints",
        lambda: {"active": undelivered_oldest_age_seconds()},
    )
