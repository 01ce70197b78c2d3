"""The storm: a drop on real processes under faults in series, with no operator.

Four gunicorn workers of four threads, a local Redis Cluster (3 primaries, 3 replicas), MongoDB
shared by every process (the wire-protocol stand-in, or a fresh database on
MONGO_TEST_URI's server), the sweeper (`flask sweep --every 1`) and the webhook
deliverer (`flask deliver`) beside them, and client threads that log in, reserve,
check out, cancel, abandon holds to expire, and now and then (1% of sessions) send
slowly or vanish mid-request. On a schedule:

- the primary that owns the sale's slot is SIGKILLed (its replica takes over; the
  killed node starts again, empty, and rejoins as a replica);
- a gunicorn worker is SIGKILLed (the master forks another);
- the database freezes (SIGSTOP on the stand-in, SIGCONT after; a real MongoDB
  server is not ours to freeze: that fault is skipped, and said so).

STORM_SECONDS sets the length (the CI form by default; `make storm` runs 600 s with
the periods of issue 20: a primary every 60 s, a worker every 5 s, the database
frozen 5 s every 120 s). STORM_RESULTS names where the run goes as JSON (the test's
tmp_path by default), which `python -m bench.report` draws (make storm does).

At the end: total = available + held + sold, oversold 0, every order a client was
told about placed once, every acknowledged reservation checked out, expired or
reported, every event delivered; during it: every error a 503 with Retry-After or
an expected refusal, never a 500, a connection cut only by a worker's death, and
the p99 outside the fault windows under a generous bound. The timeline (answers by
status per second, faults, recoveries) is printed, and written as JSON that
`python -m bench.report` draws.
"""

import collections
import contextlib
import datetime
import json
import os
import random
import shutil
import tempfile
import threading
import time

import pytest

from flashcart.sales.engine.keys import Keys
from flashcart.stores import connect_redis
from tests.support import cluster_servers
from tests.support.drop_checks import (
    Recorder,
    Shop,
    api_rig,
    audit_figures,
    check_events,
    check_truth,
    deliveries,
    settle,
    truth,
    webhook_rig,
)
from tests.support.gunicorn_hosts import (
    SHOPPER_PASSWORD,
    open_drop,
    shopper_email,
)
from tests.support.mongo import fresh_mongo

STORM_SECONDS = int(os.environ.get("STORM_SECONDS", "95"))
LONG_FORM = STORM_SECONDS >= 600
PRIMARY_EVERY = float(os.environ.get("STORM_PRIMARY_EVERY", 60 if LONG_FORM else 30))
WORKER_EVERY = float(os.environ.get("STORM_WORKER_EVERY", 5))
FREEZE_EVERY = float(os.environ.get("STORM_FREEZE_EVERY", 120 if LONG_FORM else 30))
FREEZE_SECONDS = 5.0
RESULTS = os.environ.get("STORM_RESULTS", "")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not cluster_servers.available(), reason="needs redis-server and redis-cli binaries"
    ),
]

STOCK = 500
LIMIT = 3
USERS = 200
CLIENTS = 16
THINK_SECONDS = 0.05  # between a client's actions
WORKERS = 4
HOLD_SECONDS = 3
SWEEP_AUDIT_SECONDS = 5
ODD_SESSIONS = 0.01  # slow or vanishing clients
SLOW_PACE = 0.1  # a slow client's body arrives in five pieces this far apart
# A fault's window: from it to the recovery of what it broke, and this much after.
WINDOW_MARGIN = 1.0
# Generous: a 2-core machine shared with other runs, where the CI form measured a p50
# of 8-9 ms and a p99 of 65-78 ms outside the windows (0.94-1.36 s while the MongoDB
# stand-in scanned every collection on every command).
P99_LIMIT_MS = 2000
PRIMARY_RECOVERY_LIMIT = 15.0
FREEZE_RECOVERY_LIMIT = 10.0
EXPECTED_REFUSALS = {
    409: {"sold_out", "insufficient_stock", "limit_exceeded", "idempotency_key_in_progress"},
    404: {"reservation_not_found"},
    410: {"reservation_expired"},
    429: None,  # any
}
JOIN_TIMEOUT = 30


def schedule():
    """(seconds into the storm, fault kind), in order: a primary killed half a period
    in and then every period, the database frozen every period of its own, each done
    early enough to recover before the end."""
    plan = []
    at = PRIMARY_EVERY / 2
    while at <= STORM_SECONDS - 15:
        plan.append((at, "primary"))
        at += PRIMARY_EVERY
    at = FREEZE_EVERY
    while at + FREEZE_SECONDS <= STORM_SECONDS - 10:
        plan.append((at, "freeze"))
        at += FREEZE_EVERY
    return sorted(plan)


# -- the clients -----------------------------------------------------------------------


class StormShop(Shop):
    """Sessions: a shopper logs in, then shops a few times. One session in a hundred
    is odd: it sends every body slowly, or it vanishes (hangs up mid-checkout, its
    holds left to expire)."""

    def __init__(self, *args, emails, **kwargs):
        super().__init__(*args, **kwargs)
        self.emails = emails  # user id -> email
        self.local = threading.local()
        self.vanished = []  # (when, reservation id, whole request sent)

    def run(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set():
            self.session(rng)

    def session(self, rng):
        user = rng.choice(self.users)
        odd = rng.random() < ODD_SESSIONS
        self.local.slow = odd and rng.random() < 0.5
        answer = self.call(
            "login",
            "POST",
            "/api/v1/auth/login",
            body={"email": self.emails[user], "password": SHOPPER_PASSWORD},
            ok=(200,),
        )
        if answer.status == 200:
            self.tokens[user] = answer.body["access_token"]
        if odd and not self.local.slow:
            self.vanish(user, rng)
            return
        for _ in range(rng.randint(3, 12)):
            if self.stop.is_set():
                return
            self.shop_once(rng, user)
            time.sleep(THINK_SECONDS)

    def vanish(self, user, rng):
        """Reserve, then hang up in the middle of checking it out."""
        reservation_id, _ = self.reserve(user, rng)
        if reservation_id is None:
            return
        whole = rng.random() < 0.5
        self.api.hang_up(
            "POST",
            "/api/v1/orders",
            self.tokens[user],
            {"reservation_id": reservation_id},
            whole=whole,
        )
        with self.rec.lock:
            self.vanished.append((time.monotonic(), reservation_id, whole))

    def call(self, op, method, path, user=None, body=None, headers=None, ok=(200, 201)):
        slow = getattr(self.local, "slow", False) and body is not None
        started = time.monotonic()
        token = self.tokens[user] if user is not None else None
        answer = self.api.request(method, path, token, body, headers, pace=SLOW_PACE * slow)
        self.rec.record(op, answer, started, answer.status in ok, slow=slow)
        return answer


# -- the faults ------------------------------------------------------------------------


class Faults:
    """The faults as they happened: kind, start, end, recovery (monotonic times)."""

    def __init__(self, started):
        self.started = started
        self.lock = threading.Lock()
        self.happened = []
        self.notes = []
        self.errors = []
        self.ended = None

    def add(self, kind, start, end, recovered, **detail):
        with self.lock:
            self.happened.append(
                {"kind": kind, "start": start, "end": end, "recovered": recovered, **detail}
            )

    def of(self, kind):
        with self.lock:
            return [f for f in self.happened if f["kind"] == kind]

    def windows(self, kinds):
        """(start, end) spans of the faults of `kinds`: to recovery, plus a margin."""
        spans = []
        for fault in self.happened:
            if fault["kind"] in kinds:
                until = max(fault["end"], fault["recovered"] or fault["end"])
                spans.append((fault["start"], until + WINDOW_MARGIN))
        return spans


def wait_until(moment, stop):
    while time.monotonic() < moment and not stop.is_set():
        time.sleep(0.05)
    return not stop.is_set()


def guarded(faults, work):
    """A fault thread's body: a failure is kept for the test to report."""

    def run():
        try:
            work()
        except Exception as error:  # noqa: BLE001 - reported by the test
            faults.errors.append(repr(error))

    return run


def kill_workers(server, faults, stop):
    """A gunicorn worker SIGKILLed every WORKER_EVERY seconds."""
    k = 0
    while True:
        k += 1
        if not wait_until(faults.started + k * WORKER_EVERY - WORKER_EVERY / 2, stop):
            return
        kill = server.kill_a_worker()
        faults.add("worker", kill["at"], kill["at"], kill["replaced_at"], victim=kill["victim"])


def kill_primaries_and_freeze(cluster, standin, product_id, rec, faults, stop):
    for at, kind in schedule():
        if not wait_until(faults.started + at, stop):
            return
        if kind == "primary":
            kill_primary(cluster, product_id, rec, faults)
        elif standin is None:
            faults.notes.append(
                f"t+{at:.0f}s: the database was not frozen (MONGO_TEST_URI's server is not ours)"
            )
        else:
            freeze(standin, rec, faults)


def first_ok(rec, op, after, limit, status=None):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = rec.first_ok_started_after(op, after, status)
        if found is not None:
            return found
        time.sleep(0.05)
    return None


def kill_primary(cluster, product_id, rec, faults):
    """SIGKILL the primary of the sale's slot; its replica takes over; the node
    starts again, empty, and rejoins as a replica."""
    primary = cluster.master_of(Keys(product_id).sale)
    replica = cluster.replica_of(primary)
    cluster.kill(primary)
    killed = time.monotonic()
    promoted = None
    while time.monotonic() < killed + PRIMARY_RECOVERY_LIMIT and promoted is None:
        with contextlib.suppress(Exception):
            if cluster.role(replica) == "master":
                promoted = time.monotonic()
        time.sleep(0.05)
    served = first_ok(rec, "reserve", killed, PRIMARY_RECOVERY_LIMIT, 201)
    cluster.rejoin(primary)
    faults.add(
        "primary",
        killed,
        killed,
        served,
        port=primary,
        promoted=promoted,
        rejoined=time.monotonic(),
    )


def freeze(standin, rec, faults):
    standin.freeze()
    frozen = time.monotonic()
    time.sleep(FREEZE_SECONDS)
    standin.thaw()
    thawed = time.monotonic()
    served = first_ok(rec, "checkout", thawed, FREEZE_RECOVERY_LIMIT)
    faults.add("freeze", frozen, thawed, served)


# -- the rig ---------------------------------------------------------------------------


@pytest.fixture
def storm_rig():
    """A Redis Cluster, MongoDB, gunicorn, the sweeper and the deliverer, torn down after."""
    with contextlib.ExitStack() as cleanup:  # undone in reverse order
        workdir = tempfile.mkdtemp(prefix="flashcart-storm-")
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        mongo_uri, standin = cleanup.enter_context(fresh_mongo())
        cluster = cluster_servers.ClusterServers()
        cleanup.callback(cluster.stop)
        cluster.start()
        redis_client = connect_redis(cluster.url)
        cleanup.callback(redis_client.close)
        app, server, sweeper = api_rig(
            cleanup,
            mongo_uri,
            cluster.url,
            redis_client,
            workdir,
            workers=WORKERS,
            hold_seconds=HOLD_SECONDS,
            audit_seconds=SWEEP_AUDIT_SECONDS,
        )
        # Nobody kills the deliverer here: a lease long enough for a pass to catch up.
        hooks = webhook_rig(
            cleanup,
            app,
            mongo_uri,
            cluster.url,
            workdir,
            HOLD_SECONDS,
            deliverer_env={"WEBHOOKS_LEASE_SECONDS": "30"},
        )
        yield {
            "app": app,
            "cluster": cluster,
            "standin": standin,
            "gunicorn": server,
            "sweeper": sweeper,
            "webhooks": hooks,
        }


def run_storm(rig, product_id, tokens, emails):
    server, sweeper, deliverer = rig["gunicorn"], rig["sweeper"], rig["webhooks"]["deliverer"]
    rec = Recorder()
    shop = StormShop(server.api, rec, product_id, tokens, HOLD_SECONDS, emails=emails)
    clients = [
        threading.Thread(target=shop.run, args=(n,), name=f"shopper-{n}", daemon=True)
        for n in range(CLIENTS)
    ]
    sweeper.start()
    deliverer.start()
    faults = Faults(time.monotonic())
    stop_faults = threading.Event()
    fault_threads = [
        threading.Thread(
            target=guarded(faults, lambda: kill_workers(server, faults, stop_faults)),
            name="worker-killer",
            daemon=True,
        ),
        threading.Thread(
            target=guarded(
                faults,
                lambda: kill_primaries_and_freeze(
                    rig["cluster"], rig["standin"], product_id, rec, faults, stop_faults
                ),
            ),
            name="primary-killer-and-freezer",
            daemon=True,
        ),
    ]
    try:
        for thread in clients + fault_threads:
            thread.start()
        while time.monotonic() < faults.started + STORM_SECONDS:
            assert server.process.poll() is None, server.log_tail()
            time.sleep(0.2)
    finally:
        stop_faults.set()
        for thread in fault_threads:  # a fault under way finishes with its recovery
            thread.join(60)
        shop.stop.set()
        for thread in clients:
            thread.join(JOIN_TIMEOUT)
    faults.ended = time.monotonic()
    alive = {
        "clients": [t.name for t in clients if t.is_alive()],
        "faults": [t.name for t in fault_threads if t.is_alive()],
        "sweeper": sweeper.alive(),
        "deliverer": deliverer.alive(),
    }
    sweeper.stop()
    return rec, shop, faults, alive


# -- what the clients were told ----------------------------------------------------------


def in_any(moment, spans):
    return any(start <= moment <= end for start, end in spans)


def answers(rec, faults):
    """The answers sorted: fine, expected refusals, and the rest (which fail the test)."""
    worker_kills = [f["start"] for f in faults.of("worker")]
    sorted_out = collections.Counter()
    wrong = collections.Counter()
    for e in rec.events:
        if e.status is not None and e.status < 400:
            sorted_out["2xx"] += 1
        elif e.status == 503:
            if e.retry_after:
                sorted_out["503 with Retry-After"] += 1
            else:
                wrong[f"{e.op} 503 {e.code} without Retry-After"] += 1
        elif e.status in EXPECTED_REFUSALS:
            codes = EXPECTED_REFUSALS[e.status]
            if codes is None or e.code in codes or e.op == "late_checkout":
                sorted_out[f"{e.status} expected"] += 1
            else:
                wrong[f"{e.op} {e.status} {e.code}"] += 1
        elif e.status is None:
            # Only a worker's death cuts a connection: one killed while it was served.
            if any(e.started - 0.1 <= kill <= e.at + 0.5 for kill in worker_kills):
                sorted_out["cut by a worker's death"] += 1
            else:
                wrong[f"{e.op} {e.code} outside a worker kill"] += 1
        else:
            wrong[f"{e.op} {e.status} {e.code}"] += 1
    return sorted_out, wrong


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latencies(rec, faults):
    """p50/p99 (ms) of the answers sent outside the primary and database windows (slow
    clients' own answers aside), per request kind too; outside the worker kills' as
    well (kill to replacement); and of all of them."""
    spans = faults.windows({"primary", "freeze"})
    workers = faults.windows({"worker"})
    outside, calm, every = [], [], []
    by_op = collections.defaultdict(list)
    for e in rec.events:
        if e.slow or e.status is None:
            continue
        ms = (e.at - e.started) * 1000
        every.append(ms)
        if not in_any(e.started, spans) and not in_any(e.at, spans):
            outside.append(ms)
            by_op[e.op].append(ms)
            if not any(e.started <= end and e.at >= start for start, end in workers):
                calm.append(ms)
    return {
        "outside_p50_ms": percentile(outside, 0.5),
        "outside_p99_ms": percentile(outside, 0.99),
        "outside_answers": len(outside),
        "outside_p99_ms_by_request": {
            op: round(percentile(values, 0.99), 1) for op, values in sorted(by_op.items())
        },
        "outside_every_fault_p99_ms": percentile(calm, 0.99),
        "outside_every_fault_answers": len(calm),
        "all_p99_ms": percentile(every, 0.99),
        "all_max_ms": max(every, default=None),
    }


def reservations(rec, state):
    """Each acknowledged reservation: checked out (an order has it), expired (no order,
    no hold left after the last sweep), or reported (Redis lost it: a checkout within
    its hold was told reservation_not_found). `unaccounted` must stay empty."""
    held = {hold.id for hold in state["holds"]}
    outcome, reported = collections.Counter(), []
    unaccounted = []
    for rid, acknowledged in rec.reserved.items():
        refused = rec.refused.get(rid)
        if rid in state["status_of"]:
            outcome["checked out"] += 1
        elif rid in held:
            unaccounted.append((rid, "still held after the storm"))
        elif (
            refused
            and refused[1] == "reservation_not_found"
            and (refused[0] - acknowledged < HOLD_SECONDS)
        ):
            outcome["reported"] += 1
            reported.append((rid, acknowledged, refused[0]))
        else:
            outcome["expired"] += 1
    lost_orders = sorted(r for r in rec.confirmed if state["status_of"].get(r) is None)
    for rid in lost_orders:
        unaccounted.append((rid, "a 2xx checkout without an order"))
    return outcome, reported, unaccounted


# -- the timeline -------------------------------------------------------------------------


def timeline(rec, faults):
    """Per second: answers by status ("-" for no answer), p99 latency, and the faults
    and recoveries that happened in it."""
    start = faults.started
    seconds = int(faults.ended - start) + 1
    rows = [
        {"t": t, "statuses": collections.Counter(), "ms": [], "faults": [], "recovered": []}
        for t in range(seconds)
    ]
    for e in rec.events:
        t = min(seconds - 1, max(0, int(e.at - start)))
        rows[t]["statuses"][str(e.status or "-")] += 1
        if e.status is not None and not e.slow:
            rows[t]["ms"].append((e.at - e.started) * 1000)
    for fault in faults.happened:
        rows[min(seconds - 1, int(fault["start"] - start))]["faults"].append(fault["kind"])
        if fault["recovered"] is not None and fault["kind"] != "worker":
            t = min(seconds - 1, int(fault["recovered"] - start))
            rows[t]["recovered"].append(fault["kind"])
    for row in rows:
        row["p99_ms"] = percentile(row.pop("ms"), 0.99)
        row["statuses"] = dict(row["statuses"])
    return rows


def recovery_figures(faults):
    """Per fault kind: how many, and seconds to recover (min / median / max)."""
    figures = {}
    for kind in ("primary", "worker", "freeze"):
        happened = faults.of(kind)
        times = sorted(f["recovered"] - f["end"] for f in happened if f["recovered"] is not None)
        figures[kind] = {
            "count": len(happened),
            "unrecovered": sum(1 for f in happened if f["recovered"] is None),
            "min_s": round(times[0], 2) if times else None,
            "median_s": round(times[len(times) // 2], 2) if times else None,
            "max_s": round(times[-1], 2) if times else None,
        }
    return figures


def print_timeline(rows):
    statuses = sorted({s for row in rows for s in row["statuses"]})
    head = "   t " + "".join(f"{s:>6}" for s in statuses) + "   p99 ms  faults / recovered"
    lines = [head]
    for row in rows:
        marks = " ".join(
            [f"{k} fault" for k in row["faults"]] + [f"{k} recovered" for k in row["recovered"]]
        )
        p99 = f"{row['p99_ms']:8.0f}" if row["p99_ms"] is not None else "       -"
        counts = "".join(f"{row['statuses'].get(s, 0):>6}" for s in statuses)
        lines.append(f"{row['t']:4d} {counts} {p99}  {marks}")
    print("\nSTORM TIMELINE (answers by status per second)\n" + "\n".join(lines))


def write_results(results, folder):
    """The run as JSON; `python -m bench.report` draws it (make storm does)."""
    os.makedirs(folder, exist_ok=True)
    when = results["when"].replace(":", "")
    json_path = os.path.join(folder, f"storm-{when}.json")
    with open(json_path, "w") as out:
        json.dump(results, out, indent=2)
    return json_path


# -- the test ------------------------------------------------------------------------------


@pytest.mark.timeout(STORM_SECONDS + 420)
def test_a_drop_survives_a_storm_of_faults_with_no_operator(storm_rig, tmp_path):
    rig = storm_rig
    app, server, hooks = rig["app"], rig["gunicorn"], rig["webhooks"]
    server.wait_ready(timeout=30)
    product_id, tokens = open_drop(
        app, server.api, name="Storm drop", price="15.00", stock=STOCK, limit=LIMIT, shoppers=USERS
    )
    emails = {user: shopper_email(n) for n, user in enumerate(tokens)}

    rec, shop, faults, alive = run_storm(rig, product_id, tokens, emails)
    assert server.process.poll() is None, server.log_tail()
    server.stop()  # a quiet moment: nothing in flight any more
    time.sleep(HOLD_SECONDS + 0.5)  # every hold due, for the last sweeps to return
    settled = settle(app)
    state = truth(app, product_id)
    catching_up = time.monotonic()
    delivered = deliveries(app, hooks)
    delivered["catching_up_s"] = round(time.monotonic() - catching_up, 1)

    told, wrong = answers(rec, faults)
    latency = latencies(rec, faults)
    outcome, reported, unaccounted = reservations(rec, state)
    rows = timeline(rec, faults)
    recoveries = recovery_figures(faults)
    snap = state["snapshot"]
    shown = {k: len(v) if isinstance(v, list) else v for k, v in delivered.items()}
    results = {
        "kind": "storm",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(faults.ended - faults.started, 1),
        "settings": {
            "workers": WORKERS,
            "clients": CLIENTS,
            "users": USERS,
            "stock": STOCK,
            "limit": LIMIT,
            "hold_s": HOLD_SECONDS,
            "primary_every_s": PRIMARY_EVERY,
            "worker_every_s": WORKER_EVERY,
            "freeze_every_s": FREEZE_EVERY,
            "freeze_s": FREEZE_SECONDS,
            "mongo": "MONGO_TEST_URI" if rig["standin"] is None else "stand-in",
        },
        "faults": [
            {
                k: (
                    round(v - faults.started, 2)
                    if k in ("start", "end", "recovered", "promoted", "rejoined") and v is not None
                    else v
                )
                for k, v in fault.items()
            }
            for fault in faults.happened
        ],
        "recoveries": recoveries,
        "latency": {k: round(v, 1) if isinstance(v, float) else v for k, v in latency.items()},
        "answers": dict(told),
        "wrong_answers": dict(wrong),
        "totals": {
            "requests": rec.total(),
            "logins_ok": rec.count("login"),
            "reservations_ok": rec.count("reserve"),
            "orders_placed": rec.count("checkout"),
            "cancels": rec.count("cancel"),
            "vanished_clients": len(shop.vanished),
            "vanished_checkouts_placed": sum(
                1 for _, rid, _ in shop.vanished if rid in state["status_of"]
            ),
            "slow_answers": sum(1 for e in rec.events if e.slow),
            "reservations": dict(outcome),
            "orders_by_status": dict(state["by_status"]),
            "total": state["total"],
            "available": snap.available,
            "held": snap.held,
            "sold": state["sold"],
            "oversold": max(row["oversold"] for row in settled["final_audit"]),
            "events": len(state["events"]),
            "webhooks": shown,
        },
        "notes": faults.notes,
        "per_second": rows,
    }
    folder = RESULTS or str(tmp_path)
    json_path = write_results(results, folder)

    print_timeline(rows)
    print(
        f"\nSTORM SUMMARY ({results['seconds']}s, {WORKERS} workers, {CLIENTS} clients, "
        f"Redis Cluster 3+3, MongoDB {results['settings']['mongo']})"
        f"\n  recovery per fault (s, from the kill or the thaw): {recoveries}"
        f"\n  latency: {results['latency']}"
        f"\n  answers: {dict(told)}; wrong: {dict(wrong)}"
        f"\n  totals: {results['totals']}"
        f"\n  acknowledged reservations reported (Redis lost them): {len(reported)}"
        + "".join(
            f"\n    {rid} acknowledged t+{at - faults.started:.1f}s, told not found "
            f"t+{told_at - faults.started:.1f}s"
            for rid, at, told_at in reported
        )
        + f"\n  unaccounted: {unaccounted}"
        f"\n  final audit {audit_figures(settled['final_audit'])}"
        f"\n  sweeper {dict(rig['sweeper'].done())}, failed passes {rig['sweeper'].failures()}"
        f"\n  fault thread errors: {faults.errors}; notes: {faults.notes}; alive: {alive}"
        f"\n  results: {json_path}"
    )

    # Every fault happened, and what it broke came back without an operator.
    assert not faults.errors, faults.errors
    assert not alive["clients"] and not alive["faults"], alive
    assert alive["sweeper"] and alive["deliverer"], alive
    planned = collections.Counter(kind for _, kind in schedule())
    assert recoveries["primary"]["count"] == planned["primary"], recoveries
    if rig["standin"] is not None:
        assert recoveries["freeze"]["count"] == planned["freeze"], recoveries
    assert recoveries["worker"]["count"] >= STORM_SECONDS // WORKER_EVERY // 2, recoveries
    for kind, figures in recoveries.items():
        assert figures["unrecovered"] == 0, (kind, recoveries)
    # The drop went on between the faults.
    assert rec.count("reserve") > STORM_SECONDS and rec.count("checkout") > STORM_SECONDS / 4

    # What the clients were told: 503 with Retry-After or an expected refusal, never
    # a 500; a connection cut only by a worker's death.
    assert not wrong, wrong
    assert latency["outside_p99_ms"] < P99_LIMIT_MS, latency

    # The durable truth.
    check_truth(state, settled, STOCK, LIMIT)
    assert not state["holds"], "holds left after the last sweeps"
    assert not rec.late_checkouts_accepted, rec.late_checkouts_accepted
    assert not unaccounted, unaccounted
    check_events(state)
    assert delivered["expected"] == len(state["events"])
    assert delivered["lost"] == [] and delivered["invented"] == [], shown
    assert delivered["duplicates"] == 0, shown  # nobody killed the deliverer: once each
    assert delivered["bad_signatures"] == [] and delivered["out_of_order"] == [], shown
