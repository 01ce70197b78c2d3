"""The deliverer: what `flask deliver` runs. Sends each active endpoint the events it
subscribed to, at least once, in order per resource, with backoff.

One pass visits every active endpoint once. A visit leases the endpoint
(records.claim_endpoint), so several deliverers share the work and never send to
the same endpoint at once (also a per-endpoint concurrency of one: a slow receiver
holds one thread, not the others' deliveries). A visit:

1. fans out: the feed's events past the endpoint's cursor become deliveries (one per
   endpoint and event, unique), then the cursor moves on; a crash in between only
   repeats inserts that are already there;
2. sends the due deliveries, oldest event first, passing over a resource while an
   earlier delivery about it is waiting for a retry. A delivery is marked only after its
   request has ended, so a deliverer killed mid-request sends it again once the
   lease has expired: at least once, and receivers deduplicate on the event id.

A failed request (a non-2xx answer, a timeout, a refused destination) is retried
after an exponential backoff with jitter, and marked failed after
WEBHOOKS_MAX_ATTEMPTS; it waits there for a replay. The visit ends at the first
failure: a receiver that is down is asked once per pass, not once per delivery.
"""

import json
import logging
import os
import random
import socket
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta

from flask import current_app

from flashcart import metrics
from flashcart.events import feed
from flashcart.stores import as_utc, utcnow
from flashcart.webhooks import records, sender, signatures

log = logging.getLogger(__name__)
EVENT_ID_HEADER = "FlashCart-Event-Id"
EVENT_TYPE_HEADER = "FlashCart-Event-Type"
ATTEMPT_HEADER = "FlashCart-Delivery-Attempt"
# Pages of events one visit fans out at most (a deliverer that was down catches up
# over a few visits, sending as it goes).
FANOUT_PAGES = 10


def deliverer_id():
    """A name for this deliverer in leases: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def backoff_seconds(attempts, *, base, cap):
    """The wait after the `attempts`-th failure: base * 2^(attempts-1), at most `cap`,
    of which the upper half is random (so the waits still grow, and receivers coming
    back are not hit by every deliverer's retries at once)."""
    ceiling = min(cap, base * 2 ** (attempts - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _json_default(value):
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    return str(value)


def body_of(event):
    """The bytes a delivery of `event` sends: the event as the feed shows it."""
    return json.dumps(feed.public(event), default=_json_default, separators=(",", ":")).encode()


def _delivery(endpoint, event, now):
    resource = event["resource"]
    return {
        "endpoint_id": endpoint["_id"],
        "event_id": event["_id"],
        "seq": event["seq"],
        "type": event["type"],
        "resource": f"{resource['type']}:{resource['id']}",
        "event_created_at": as_utc(event["created_at"]),
        "body": body_of(event).decode(),
        "status": records.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "log": [],
        "created_at": now,
        "updated_at": now,
    }


def fan_out(endpoint, batch):
    """Turn the events past the endpoint's cursor into its deliveries."""
    cursor = endpoint["cursor"]
    for _ in range(FANOUT_PAGES):
        events = feed.events_after(cursor, batch, endpoint["types"])
        if not events:
            return
        now = utcnow()
        records.insert_deliveries([_delivery(endpoint, event, now) for event in events])
        cursor = events[-1]["seq"]
        records.advance_cursor(endpoint["_id"], cursor)
        if len(events) < batch:
            return


def send(endpoint, delivery, settings):
    """One attempt at `delivery`; the sender's Outcome."""
    body = delivery["body"].encode()
    now = utcnow()
    headers = {
        signatures.HEADER: signatures.header(
            records.signing_secrets(endpoint, now), now.timestamp(), body
        ),
        EVENT_ID_HEADER: delivery["event_id"],
        EVENT_TYPE_HEADER: delivery["type"],
        ATTEMPT_HEADER: str(delivery["attempts"] + 1),
    }
    return sender.post(endpoint["url"], body, headers, settings=settings)


def _record(delivery, outcome, settings):
    """Store the attempt; returns the outcome's name (delivered, retried, failed)."""
    now = utcnow()
    entry = {
        "at": now,
        "status_code": outcome.status_code,
        "error": outcome.error,
        "duration_ms": outcome.duration_ms,
        "response": outcome.response_excerpt,
    }
    attempts = delivery["attempts"] + 1
    if outcome.ok:
        result, changes = "delivered", {"status": records.DELIVERED, "delivered_at": now}
    elif attempts >= settings["WEBHOOKS_MAX_ATTEMPTS"]:
        result, changes = "failed", {"status": records.FAILED}
    else:
        wait = backoff_seconds(
            attempts,
            base=settings["WEBHOOKS_RETRY_BASE_SECONDS"],
            cap=settings["WEBHOOKS_RETRY_MAX_SECONDS"],
        )
        result, changes = "retried", {"next_attempt_at": now + timedelta(seconds=wait)}
    records.record_attempt(delivery["_id"], entry, changes)
    metrics.webhook_delivery(result)
    log.log(
        logging.INFO if outcome.ok else logging.WARNING,
        "webhook %s: event %s (%s) to endpoint %s, attempt %d: %s",
        result,
        delivery["event_id"],
        delivery["type"],
        delivery["endpoint_id"],
        attempts,
        outcome.error or outcome.status_code,
    )
    return result


def request_budget(settings):
    """The longest a request may take: connect, then the answer (each within the
    timeout, the answer read within twice it), and a little more."""
    return timedelta(seconds=2 * settings["WEBHOOKS_TIMEOUT_SECONDS"] + 1)


def settings_problem(settings):
    """Why these settings would deliver nothing, or None."""
    budget = request_budget(settings).total_seconds()
    if settings["WEBHOOKS_LEASE_SECONDS"] <= budget:
        return (
            f"WEBHOOKS_LEASE_SECONDS ({settings['WEBHOOKS_LEASE_SECONDS']}) must exceed "
            f"2 x WEBHOOKS_TIMEOUT_SECONDS + 1 ({budget:g}): no request would fit in a lease"
        )
    return None


def deliver_due(endpoint, settings, done):
    """Send the endpoint's due deliveries, oldest event first, until one fails or the
    lease is too short for another request. A resource with an earlier delivery still
    waiting for its retry is passed over (and left out of the next pages, so the
    others behind it are not held up)."""
    lease_until = as_utc(endpoint["lease_until"])
    needed = request_budget(settings)
    waiting, checked, after_seq = set(), set(), -1
    while True:
        page = records.due_for(
            endpoint["_id"],
            after_seq=after_seq,
            skip_resources=waiting,
            limit=settings["WEBHOOKS_BATCH_SIZE"],
        )
        if not page:
            return
        for delivery in page:
            after_seq, resource = delivery["seq"], delivery["resource"]
            if resource in waiting:
                continue
            if resource not in checked:
                checked.add(resource)
                if records.earlier_pending(endpoint["_id"], resource, after_seq):
                    waiting.add(resource)
                    continue
            if utcnow() + needed > lease_until:
                return
            result = _record(delivery, send(endpoint, delivery, settings), settings)
            done.add(result)
            if result != "delivered":
                return


def visit(endpoint, settings, done):
    fan_out(endpoint, settings["WEBHOOKS_BATCH_SIZE"])
    deliver_due(endpoint, settings, done)


def _work(context, owner, started, settings, done):
    with context:
        while True:
            endpoint = records.claim_endpoint(
                owner, visited_before=started, lease_seconds=settings["WEBHOOKS_LEASE_SECONDS"]
            )
            if endpoint is None:
                return
            try:
                visit(endpoint, settings, done)
            finally:
                records.release_endpoint(endpoint["_id"], owner)


def run_pass(*, threads=None, owner=None):
    """Visit every active endpoint once (shared with other deliverers running now);
    returns {"delivered": n, "retried": n, "failed": n} for this process's part.
    A store error in any thread is raised here once every thread has stopped."""
    settings = current_app.config
    owner = owner or deliverer_id()
    started = utcnow()
    done = _Tally()

    def work(context):
        try:
            _work(context, owner, started, settings, done)
        except Exception as error:  # noqa: BLE001 - handed to the caller below
            done.errors.append(error)

    workers = [
        threading.Thread(target=work, args=(current_app.app_context(),), daemon=True)
        for _ in range(threads or settings["WEBHOOKS_DELIVERY_THREADS"])
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if done.errors:
        raise done.errors[0]
    return dict(done.counts)


class _Tally:
    """Outcome counts that several threads add to, and the errors that stopped them."""

    def __init__(self):
        self.counts = Counter()
        self.errors = []
        self._lock = threading.Lock()

    def add(self, result):
        with self._lock:
            self.counts[result] += 1
