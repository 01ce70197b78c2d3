"""A drop on real processes (the chaos and storm tests): the shoppers, what they were
told, and the durable truth once it is over.

- Recorder: every answer with its time, latency and Retry-After, and what each
  reservation became as far as its client knows;
- Shop: client threads that reserve, check out, abandon, cancel and retry like real
  shoppers, through plain HTTP;
- truth / settle / deliveries: MongoDB's and Redis's figures after the drop, the
  sweeper's last passes and an audit that repairs nothing, and what reached the
  webhook receiver.
"""

import collections
import hashlib
import hmac
import os
import random
import threading
import time
import uuid
from typing import NamedTuple

from flashcart import create_app
from flashcart.checkout import recovery
from flashcart.events import feed
from flashcart.orders import service as order_service
from flashcart.sales import service as sale_service
from flashcart.sales.engine.keys import Keys
from flashcart.stores import object_id_or_none
from flashcart.webhooks import service as webhooks
from tests.support import chaos_app
from tests.support.companions import DelivererProcess, SweeperProcess
from tests.support.gunicorn_hosts import GunicornHost
from tests.support.webhook_receiver import WebhookReceiver

AUDIT_FIGURES = (
    "in_redis",
    "sold",
    "redis_sold",
    "held",
    "available",
    "drift",
    "oversold",
    "users_over_limit",
    "limit_counts_off",
    "ok",
)
EXPECTED_REFUSALS = {"sold_out", "insufficient_stock", "limit_exceeded"}
# After the load, the deliverer catches up (one endpoint is sent to in order, one
# request at a time: some 10-15 a second here with MongoDB's stand-in).
DELIVERY_LIMIT = 150
STALLED = 15  # seconds without a new delivery: something is stuck


class Event(NamedTuple):
    at: float  # monotonic time of the answer (or of the failure)
    op: str
    status: int | None  # None: no answer (the connection failed)
    code: str
    ok: bool
    started: float
    retry_after: str | None
    slow: bool  # sent by a client that sends slowly: its latency is its own


class Recorder:
    """Outcome counts and timestamped answers, shared by the client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes = collections.Counter()
        self.events = []
        self.reserved = {}  # reservation id -> when its 201 arrived
        self.confirmed = set()  # reservation ids whose checkout answered 200/201
        self.refused = {}  # reservation id -> (when, code) of a checkout's 404/410
        self.late_checkouts_accepted = []
        self.placed_by_user = collections.defaultdict(list)
        self.abandoned = collections.deque(maxlen=500)

    def record(self, op, answer, started, ok, slow=False):
        retry_after = answer.headers.get("Retry-After")
        with self.lock:
            self.outcomes[(op, answer.status, answer.code)] += 1
            self.events.append(
                Event(
                    time.monotonic(), op, answer.status, answer.code, ok, started, retry_after, slow
                )
            )

    def count(self, op, start=0.0, end=float("inf"), ok=True):
        """How many `op` calls succeeded (or failed, ok=False) between start and end."""
        with self.lock:
            return sum(1 for e in self.events if e.op == op and e.ok == ok and start <= e.at < end)

    def failures(self, start, end, codes):
        with self.lock:
            return sum(
                1
                for e in self.events
                if start <= e.at < end and (e.status is None or e.code in codes)
            )

    def first_ok_started_after(self, op, moment, status=None):
        """When the first `op` success sent after `moment` was answered, or None."""
        with self.lock:
            return min(
                (
                    e.at
                    for e in self.events
                    if e.op == op
                    and e.ok
                    and e.started > moment
                    and (status is None or e.status == status)
                ),
                default=None,
            )

    def errors(self):
        with self.lock:
            return collections.Counter(
                {
                    f"{op} {status or '-'} {code}".strip(): n
                    for (op, status, code), n in self.outcomes.items()
                    if status is None or status >= 400
                }
            )

    def total(self):
        with self.lock:
            return sum(self.outcomes.values())


class Shop:
    """The shoppers: reserve, check out, abandon, cancel, and retry like real clients.
    A hold lasts `hold_seconds`."""

    def __init__(self, api, recorder, product_id, tokens, hold_seconds):
        self.api = api
        self.rec = recorder
        self.product_id = product_id
        self.tokens = tokens  # user id -> access token
        self.users = list(tokens)
        self.hold_seconds = hold_seconds
        self.stop = threading.Event()

    def run(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set():
            self.shop_once(rng)

    def call(self, op, method, path, user=None, body=None, headers=None, ok=(200, 201)):
        """One request, recorded; returns its Answer."""
        started = time.monotonic()
        token = self.tokens[user] if user is not None else None
        answer = self.api.request(method, path, token, body, headers)
        self.rec.record(op, answer, started, answer.status in ok)
        return answer

    def reserve(self, user, rng):
        """A reservation's id once answered 201, else None (and the answer)."""
        answer = self.call(
            "reserve",
            "POST",
            f"/api/v1/sales/reserve/{self.product_id}",
            user,
            {"quantity": rng.choice((1, 1, 2))},
            ok=(201,),
        )
        if answer.status != 201:
            return None, answer
        with self.rec.lock:
            self.rec.reserved[answer.body["id"]] = time.monotonic()
        return answer.body["id"], answer

    def shop_once(self, rng, user=None):
        user = user if user is not None else rng.choice(self.users)
        if rng.random() < 0.05:
            self.late_checkout(rng)
        reservation_id, answer = self.reserve(user, rng)
        if reservation_id is None:
            if answer.code in EXPECTED_REFUSALS and rng.random() < 0.5:
                self.regret(user, rng)  # make room, as shoppers who change their mind do
            else:
                time.sleep(0.02)
            return
        if rng.random() < 0.2:
            with self.rec.lock:
                self.rec.abandoned.append((reservation_id, user, time.monotonic()))
            return
        order = self.checkout(user, reservation_id)
        if order is not None and rng.random() < 0.2:
            self.cancel(user, order)
        elif order is not None:
            with self.rec.lock:
                self.rec.placed_by_user[user].append(order)

    def checkout(self, user, reservation_id):
        """Check out, retrying a lost answer with the same Idempotency-Key."""
        key = uuid.uuid4().hex
        for _attempt in range(3):
            answer = self.call(
                "checkout",
                "POST",
                "/api/v1/orders",
                user,
                {"reservation_id": reservation_id},
                headers={"Idempotency-Key": key},
            )
            if answer.status in (200, 201):
                with self.rec.lock:
                    self.rec.confirmed.add(reservation_id)
                return answer.body["id"]
            if answer.status is not None and answer.status < 500:
                if answer.status in (404, 410):
                    with self.rec.lock:
                        self.rec.refused[reservation_id] = (time.monotonic(), answer.code)
                return None
            time.sleep(0.2)
        return None

    def cancel(self, user, order_id):
        self.call("cancel", "DELETE", f"/api/v1/orders/{order_id}", user, ok=(200,))

    def regret(self, user, rng):
        with self.rec.lock:
            orders = self.rec.placed_by_user[user]
            order = orders.pop(rng.randrange(len(orders))) if orders else None
        if order is not None:
            self.cancel(user, order)

    def late_checkout(self, rng):
        """Try to check out a reservation abandoned longer ago than its hold."""
        cutoff = time.monotonic() - self.hold_seconds - 0.5
        with self.rec.lock:
            stale = [item for item in self.rec.abandoned if item[2] < cutoff]
            if not stale:
                return
            item = rng.choice(stale)
            self.rec.abandoned.remove(item)
        reservation_id, user, _ = item
        answer = self.call(
            "late_checkout", "POST", "/api/v1/orders", user, {"reservation_id": reservation_id}
        )
        # Recorded as a failure whatever it answered: an accepted one is a defect.
        if answer.status in (200, 201):
            with self.rec.lock:
                self.rec.late_checkouts_accepted.append(reservation_id)


# -- the webhook side ------------------------------------------------------------------


def api_rig(
    cleanup, mongo_uri, redis_url, redis_client, workdir, *, workers, hold_seconds, audit_seconds
):
    """The test's own app on the drop's stores (to seed and read them), gunicorn serving
    it with `workers` and the sweeper beside it, both started; undone by `cleanup` (an
    ExitStack). Returns (app, gunicorn, sweeper)."""
    app = create_app(
        chaos_app.settings(
            mongo_uri,
            redis_url,
            hold_seconds,
            WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS=True,  # the receiver is on 127.0.0.1
        ),
        redis_client=redis_client,
    )
    cleanup.callback(chaos_app.close_mongo, app)
    env = {k: v for k, v in os.environ.items() if k != "GUNICORN_CMD_ARGS"}
    env.update(chaos_app.env(mongo_uri, redis_url, hold_seconds))
    env.update(FLASHCART_ENV="testing", PYTHONUNBUFFERED="1")
    server = GunicornHost(env, workdir, workers).start()
    cleanup.callback(server.stop)
    sweeper = SweeperProcess(
        mongo_uri, redis_url, workdir, hold_seconds=hold_seconds, audit_seconds=audit_seconds
    )
    cleanup.callback(sweeper.stop)
    return app, server, sweeper


def webhook_rig(cleanup, app, mongo_uri, redis_url, workdir, hold_seconds, deliverer_env=None):
    """A receiver on this machine, an endpoint for every event type (registered now:
    it takes the events published after this moment) and a deliverer process, not
    started (`deliverer_env` adds to its environment); undone by `cleanup` (an
    ExitStack)."""
    receiver = cleanup.enter_context(WebhookReceiver())
    with app.app_context():
        since = webhooks.feed_head()
        endpoint = webhooks.create_endpoint(url=receiver.url, types=list(feed.TYPES))
    deliverer = DelivererProcess(
        mongo_uri, redis_url, workdir, hold_seconds=hold_seconds, env=deliverer_env
    )
    cleanup.callback(deliverer.stop)
    return {"receiver": receiver, "endpoint": endpoint, "since": since, "deliverer": deliverer}


def deliveries(app, hooks, limit=DELIVERY_LIMIT, stalled=STALLED):
    """Wait until every event published since the endpoint was registered has reached
    the receiver (2xx), then stop the deliverer. Returns the figures."""
    receiver, endpoint = hooks["receiver"], hooks["endpoint"]
    with app.app_context():
        expected = [event["_id"] for event in feed.events_after(hooks["since"], 10**6)]
    deadline, progress = time.monotonic() + limit, (time.monotonic(), 0)
    while not set(expected) <= set(arrived := receiver.delivered_ids()):
        if len(arrived) > progress[1]:
            progress = (time.monotonic(), len(arrived))
        if time.monotonic() > min(deadline, progress[0] + stalled):
            break
        time.sleep(0.2)
    hooks["deliverer"].stop()
    received = receiver.received
    delivered = receiver.delivered_ids()
    secret = endpoint["secret"]
    return {
        "expected": len(expected),
        "requests": len(received),
        "refused_by_receiver": sum(1 for r in received if r.status >= 300),
        "delivered": len(set(delivered)),
        "duplicates": len(delivered) - len(set(delivered)),
        "lost": sorted(set(expected) - set(delivered)),
        "invented": sorted(set(delivered) - set(expected)),
        "bad_signatures": [r.event_id for r in received if not signed_by(secret, r)],
        "out_of_order": out_of_order(expected, receiver.delivered()),
    }


def signed_by(secret, received):
    """docs/webhooks.md's check: HMAC-SHA256 of "<t>.<body>" under the secret is a v1."""
    pairs = [item.split("=", 1) for item in received.headers["FlashCart-Signature"].split(",")]
    timestamp = dict(pairs)["t"]
    signed = timestamp.encode() + b"." + received.body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(key == "v1" and hmac.compare_digest(expected, value) for key, value in pairs)


def out_of_order(feed_order, delivered):
    """Resources whose events first arrived in another order than the feed's."""
    position = {event_id: n for n, event_id in enumerate(feed_order)}
    first_seen, by_resource = set(), collections.defaultdict(list)
    for received in delivered:
        if received.event_id in first_seen:
            continue
        first_seen.add(received.event_id)
        if received.event_id in position:  # an invented one is counted apart
            resource = received.event["resource"]
            by_resource[resource["type"], resource["id"]].append(position[received.event_id])
    return sorted(key for key, seen in by_resource.items() if seen != sorted(seen))


# -- the durable truth after the drop --------------------------------------------------


def settle(app):
    """At a quiet moment, the sweeper's next two passes (SWEEP_GRACE_SECONDS is 0
    throughout), then the audit, which repairs nothing."""
    with app.app_context():
        sweeps = [recovery.sweep(), recovery.sweep()]
        return {"sweeps": sweeps, "final_audit": recovery.audit()}


def audit_figures(rows):
    return [{k: row[k] for k in AUDIT_FIGURES if k in row} for row in rows]


def truth(app, product_id):
    """What MongoDB and Redis say once the drop is over, for the assertions."""
    with app.app_context():
        db = app.extensions["flashcart.stores"].db
        engine = sale_service.inventory()
        product = db.products.find_one({"_id": object_id_or_none(product_id)})
        orders = list(db.orders.find({"product_id": product_id}))
        placed = [o for o in orders if o["status"] == order_service.PLACED]
        holds = list(engine.holds(product_id))
        held_by_user = collections.Counter()
        for hold in holds:
            held_by_user[hold.user_id] += hold.quantity
        owned = collections.Counter()
        for order in placed:
            owned[order["user_id"]] += order["quantity"]
        owned.update(held_by_user)
        return {
            "total": product["stock"],
            "snapshot": engine.snapshot(product_id),
            "redis_sold": int(engine.redis.get(Keys(product_id).sold) or 0),
            "sold": sum(o["quantity"] for o in placed),
            "holds": holds,
            "by_status": collections.Counter(o["status"] for o in orders),
            "per_reservation": collections.Counter(o["reservation_id"] for o in orders),
            "status_of": {o["reservation_id"]: o["status"] for o in orders},
            "status_by_id": {str(o["_id"]): o["status"] for o in orders},
            "owned": owned,
            "redis_units": engine.user_units(product_id),
            "events": list(db.events.find().sort("seq", 1)),
            "unpublished": db.orders.count_documents({"outbox._id": {"$gt": ""}}),
        }


def check_truth(state, settled, stock, limit):
    """The durable truth's assertions, the same after every drop."""
    snap = state["snapshot"]
    assert not state["by_status"].get("pending"), "a checkout was left half-done"
    assert not state["by_status"].get("cancelling"), "a cancel was left half-done"
    assert state["total"] == stock
    assert state["total"] == snap.available + snap.held + state["sold"], state
    assert snap.sold == state["sold"] == state["redis_sold"], state
    assert snap.available >= 0
    over = {user: n for user, n in state["owned"].items() if n > limit}
    assert not over, f"users over the limit of {limit}: {over}"
    assert state["redis_units"] == {u: n for u, n in state["owned"].items() if n}, state
    doubles = {rid: n for rid, n in state["per_reservation"].items() if n > 1}
    assert not doubles, f"reservations with two orders: {doubles}"
    assert settled["final_audit"]
    for row in settled["final_audit"]:
        assert row["ok"] and row["drift"] == 0 and row["oversold"] == 0, row


def check_events(state):
    """Every change is one event in the feed, even those a killed worker left
    unpublished: one order.placed per order placed, one order.cancelled per cancel."""
    events = state["events"]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert state["unpublished"] == 0
    of_orders = collections.Counter(
        (event["type"], event["resource"]["id"])
        for event in events
        if event["resource"]["type"] == "order"
    )
    expected = collections.Counter()
    for order_id, status in state["status_by_id"].items():
        if status in ("placed", "cancelled"):
            expected["order.placed", order_id] += 1
        if status == "cancelled":
            expected["order.cancelled", order_id] += 1
    assert of_orders == expected
