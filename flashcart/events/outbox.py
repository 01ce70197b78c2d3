"""The event outbox, write side: an event is stored with the change it describes,
then copied into the feed.

MongoDB has no transaction across documents on a standalone server, so a change and
its event are ONE update of one document: the order (or product) gets its new state
and the event, appended to its `outbox` array, together. `publish` then copies each
event of the outbox into `events` and pulls it from the outbox. A crash in between
leaves the event in the outbox, where the sweeper finds it (`publish_left_over`);
a crash after the copy leaves a copy that the next publish recognises by its id. The
id is derived from the change (an order and its transition, a product and its stock
level), never drawn at random, so no repeat can make a second event.

The feed's order: a publisher reads the highest `seq` and inserts its event with the
next one, under a unique index, so two publishers racing for a seq cannot both have
it: the loser reads again. An event with seq n+1 is therefore only ever inserted
after its publisher saw seq n stored: what a reader can see is always every event up
to some seq, never 7 without 6, and a consumer paging by seq misses none.
"""

import hashlib
import logging
import random
import time

import pymongo.errors

from flashcart import metrics
from flashcart.events.feed import COLLECTION
from flashcart.extensions import stores

log = logging.getLogger(__name__)

OUTBOX = "outbox"
# Publishers racing for the next seq: each round one of them wins; the others read
# again after a short random pause. Past this many rounds the event waits in its
# outbox for the sweeper.
SEQ_ATTEMPTS = 50
SEQ_BACKOFF_SECONDS = 0.002
# Documents with events left in their outbox, read per sweeper pass.
LEFT_OVER_BATCH = 500


class SeqContended(Exception):
    """Too many publishers raced for the next seq; the event stays in its outbox."""


def pending(event_type, resource_type, resource_id, data, *, change, at):
    """The outbox entry for one change of a resource.

    `change` names the change within the resource ("placed", "stock-20"): the event
    id is derived from it, so the same change always makes the same id. `data` is
    the resource as the API shows it (JSON values), `at` when the change happened.
    """
    key = f"{resource_type}:{resource_id}:{event_type}:{change}"
    return {
        "_id": "evt_" + hashlib.sha256(key.encode()).hexdigest()[:32],
        "type": event_type,
        "created_at": at,
        "resource": {"type": resource_type, "id": resource_id},
        "data": data,
    }


def publish(source, doc):
    """Copy the events in `doc`'s outbox into the feed, in their order, and pull each
    from the outbox once it is there. Returns how many this call inserted.

    `source` is the collection `doc` came from. Stops at the first event it cannot
    publish (raising), so a resource's events keep their order in the feed.
    """
    inserted = 0
    for event in doc.get(OUTBOX) or ():
        inserted += _insert_once(event)
        source.update_one({"_id": doc["_id"]}, {"$pull": {OUTBOX: {"_id": event["_id"]}}})
    return inserted


def publish_soon(source, doc):
    """Publish now if MongoDB lets us, else leave the events to the sweeper: the
    change they describe is already stored, so the caller's answer stands."""
    try:
        return publish(source, doc)
    except (pymongo.errors.PyMongoError, SeqContended) as error:
        log.warning("events: left in the outbox of %s for the sweeper: %s", doc["_id"], error)
        return 0


def publish_left_over(source):
    """Publish what a crash (or a busy moment) left in `source`'s outboxes. Returns
    how many events this call inserted."""
    inserted = 0
    for doc in source.find({f"{OUTBOX}._id": {"$gt": ""}}).limit(LEFT_OVER_BATCH):
        try:
            inserted += publish(source, doc)
        except SeqContended:
            continue  # the next pass tries again
    return inserted


def _insert_once(event):
    """Insert the event with the next seq, unless it is already in the feed.
    Returns 1 if this call inserted it, else 0."""
    events = stores.durable(COLLECTION)
    for attempt in range(SEQ_ATTEMPTS):
        last = events.find_one({}, {"seq": 1}, sort=[("seq", pymongo.DESCENDING)])
        try:
            events.insert_one({**event, "seq": (last["seq"] if last else 0) + 1})
        except pymongo.errors.DuplicateKeyError:
            # Either the event is already in the feed (an earlier publish, or another
            # publisher of the same outbox), or another event took that seq first.
            if events.find_one({"_id": event["_id"]}, {"_id": 1}) is not None:
                return 0
            time.sleep(random.uniform(0, SEQ_BACKOFF_SECONDS * min(attempt + 1, 10)))
            continue
        metrics.event_published(event["type"])
        return 1
    raise SeqContended()
