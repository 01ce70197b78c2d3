"""The webhook documents in MongoDB, without the rules: endpoints and deliveries.

`webhook_endpoints`: _id, url, types, description, secret (and previous_secret with
previous_secret_until while a rotated-out secret is honoured), active, created_at,
updated_at, deleted_at; `cursor`, the last event seq fanned out to it (at first
the feed's newest: events published before the endpoint existed are not sent); `lease_owner` and
`lease_until`: the deliverer working on it (one at a time), `visited_at`.

`webhook_deliveries`: one per (endpoint, event), unique, so fanning out twice is
harmless: endpoint_id, event_id, seq, type, resource ("order:<id>"),
event_created_at, body (the exact JSON sent, so every attempt signs the same bytes),
status (pending, delivered, failed), attempts, next_attempt_at, log (the last
attempts: at, status_code, error, duration_ms, response), created_at, updated_at,
delivered_at.
"""

from datetime import UTC, datetime, timedelta

import pymongo.errors
from pymongo import ASCENDING, DESCENDING, ReturnDocument

from flashcart.extensions import stores
from flashcart.stores import as_utc, utcnow

ENDPOINTS = "webhook_endpoints"
DELIVERIES = "webhook_deliveries"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
LOG_LENGTH = 20
DUPLICATE_KEY = 11000
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def endpoints():
    return stores.db[ENDPOINTS]


def deliveries():
    return stores.db[DELIVERIES]


# --- endpoints -------------------------------------------------------------------


def insert_endpoint(document):
    endpoints().insert_one(document)
    return document


def live_endpoint(endpoint_id):
    return endpoints().find_one({"_id": endpoint_id, "deleted_at": None})


def live_endpoints():
    return list(endpoints().find({"deleted_at": None}).sort("created_at", ASCENDING))


def update_endpoint(endpoint_id, changes, unset=None):
    update = {"$set": {**changes, "updated_at": utcnow()}}
    if unset:
        update["$unset"] = dict.fromkeys(unset, "")
    return endpoints().find_one_and_update(
        {"_id": endpoint_id, "deleted_at": None}, update, return_document=ReturnDocument.AFTER
    )


def claim_endpoint(owner, *, visited_before, lease_seconds):
    """Lease one active endpoint not visited since `visited_before` and not leased by
    another deliverer (the least recently visited first); None when there is none."""
    now = utcnow()
    return endpoints().find_one_and_update(
        {
            "active": True,
            "deleted_at": None,
            "lease_until": {"$lte": now},
            "visited_at": {"$lt": visited_before},
        },
        {
            "$set": {
                "lease_owner": owner,
                "lease_until": now + timedelta(seconds=lease_seconds),
                "visited_at": now,
            }
        },
        sort=[("visited_at", ASCENDING)],
        return_document=ReturnDocument.AFTER,
    )


def release_endpoint(endpoint_id, owner):
    endpoints().update_one(
        {"_id": endpoint_id, "lease_owner": owner}, {"$set": {"lease_until": utcnow()}}
    )


def signing_secrets(endpoint, now):
    """The secrets a delivery is signed with at `now`: the current one, and the
    previous one while its grace after a rotation lasts."""
    in_use = [endpoint["secret"]]
    until = endpoint.get("previous_secret_until")
    if endpoint.get("previous_secret") and until and as_utc(until) > now:
        in_use.append(endpoint["previous_secret"])
    return in_use


def advance_cursor(endpoint_id, seq):
    endpoints().update_one({"_id": endpoint_id}, {"$max": {"cursor": seq}})


# --- deliveries ------------------------------------------------------------------


def insert_deliveries(documents):
    """Insert the deliveries not already there (a fan-out repeated after a crash)."""
    if not documents:
        return
    try:
        deliveries().insert_many(documents, ordered=False)
    except pymongo.errors.BulkWriteError as error:
        others = [e for e in error.details.get("writeErrors", []) if e["code"] != DUPLICATE_KEY]
        if others:
            raise


def due_for(endpoint_id, *, after_seq, skip_resources, limit):
    """An endpoint's deliveries due now, oldest event first: those past `after_seq`
    and about none of `skip_resources`."""
    query = {
        "endpoint_id": endpoint_id,
        "status": PENDING,
        "seq": {"$gt": after_seq},
        "next_attempt_at": {"$lte": utcnow()},
    }
    if skip_resources:
        query["resource"] = {"$nin": list(skip_resources)}
    return list(deliveries().find(query, sort=[("seq", ASCENDING)], limit=limit))


def earlier_pending(endpoint_id, resource, seq):
    """Whether an earlier event about `resource` is still pending for the endpoint."""
    query = {
        "endpoint_id": endpoint_id,
        "resource": resource,
        "status": PENDING,
        "seq": {"$lt": seq},
    }
    return deliveries().count_documents(query, limit=1) > 0


def record_attempt(delivery_id, entry, changes, *, attempted=True):
    update = {
        "$set": {**changes, "updated_at": utcnow()},
        "$push": {"log": {"$each": [entry], "$slice": -LOG_LENGTH}},
    }
    if attempted:
        update["$inc"] = {"attempts": 1}
    deliveries().update_one({"_id": delivery_id}, update)


def deliveries_page(endpoint_id, *, status, page, per_page):
    query = {"endpoint_id": endpoint_id}
    if status:
        query["status"] = status
    total = deliveries().count_documents(query)
    cursor = (
        deliveries()
        .find(query, {"body": 0})
        .sort("seq", DESCENDING)
        .skip((page - 1) * per_page)
        .limit(per_page)
    )
    return list(cursor), total


def has_delivery(query):
    return deliveries().count_documents(query, limit=1) > 0


def requeue(query):
    """Make the matching deliveries pending again, due now, with a fresh attempt count."""
    now = utcnow()
    result = deliveries().update_many(
        query,
        {"$set": {"status": PENDING, "attempts": 0, "next_attempt_at": now, "updated_at": now}},
    )
    return result.modified_count


def oldest_pending_event(endpoint_ids):
    """The delivery of the oldest event still pending for one of `endpoint_ids`."""
    return deliveries().find_one(
        {"endpoint_id": {"$in": list(endpoint_ids)}, "status": PENDING},
        sort=[("event_created_at", ASCENDING)],
    )
