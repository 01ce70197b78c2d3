"""Chaos: a drop under load on real gunicorn workers while Redis restarts and a worker dies.

The set-up is as close to production as this machine allows:
- the API runs in gunicorn (workers of 4 threads as shipped, real processes, loopback
  HTTP);
- Redis is a real redis-server without persistence, restarted once mid-drop (its data
  is lost, as after a failover to an empty replica);
- MongoDB is reached with PyMongo through MONGO_URI by every worker and by the test:
  a fresh database on MONGO_TEST_URI's server, else the wire-protocol stand-in
  (tests/support/mongo_standin.py);
- the sweeper runs beside the API as in production, `flask --app wsgi sweep --every 1`
  in its own process (with SWEEP_GRACE_SECONDS 0, so it also races checkouts and
  cancels still in flight, and an audit every few seconds). No operator acts: after
  the Redis restart the sweeper alone puts the sale back, and the test measures how
  soon after Redis answers a reservation is served again.

Then one worker is SIGKILLed mid-drop (gunicorn respawns it). After the load stops
two more sweeper passes run, and the test checks the durable truth with an audit that
repairs nothing:

    total == available + held + sold, with sold == units of placed orders in MongoDB

and Redis `sold` equal to it, nobody over the per-user limit, one order per
reservation, and an audit that is clean (drift 0, oversold 0).
"""

import contextlib
import os
import shutil
import tempfile
import threading
import time

import pytest
import redis

from flashcart.sales.engine.keys import Keys
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
from tests.support.gunicorn_hosts import open_drop
from tests.support.mongo import fresh_mongo_uri
from tests.support.redis_server import RedisServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="no redis-server binary: the chaos test restarts a real Redis server",
    ),
]


STOCK = 300
LIMIT = 3
USERS = 160
CLIENTS = 32
WORKERS = 4
HOLD_SECONDS = 2
SWEEP_EVERY = 1  # `flask sweep --every 1`
SWEEP_AUDIT_SECONDS = 5
LOAD_SECONDS = 27
RESTART_AT = 7  # seconds into the load
KILL_AT = 16
# From Redis answering again to the sweeper's rebuild and a reservation served: a
# pass starts within SWEEP_EVERY, and rebuilding comes first in it.
RECOVERY_LIMIT = 5.0
JOIN_TIMEOUT = 30
# What "a meaningful number" of successes is, per phase of the drop.
MIN_RESERVATIONS = 40
MIN_ORDERS = 15
# Webhooks: the receiver refuses for a while, the deliverer is killed once.
RECEIVER_DOWN = (10, 13)  # seconds into the load
DELIVERER_KILL_AT = 20


# -- plumbing ---------------------------------------------------------------------


def wait_for_sale(port, product_id, timeout=30):
    """When the sale is back in Redis (the sweeper rebuilt it); polled every 10 ms."""
    client = redis.Redis(port=port, socket_timeout=2)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.exists(Keys(product_id).sale):
                return time.monotonic()
            time.sleep(0.01)
    finally:
        client.close()
    raise AssertionError(f"the sweeper did not rebuild the sale within {timeout}s")


def wait_until(moment, stop_if_dead=None):
    while time.monotonic() < moment:
        if stop_if_dead is not None:
            assert stop_if_dead.process.poll() is None, stop_if_dead.log_tail()
        time.sleep(0.05)


# -- the test -----------------------------------------------------------------------


@pytest.fixture
def chaos_rig():
    """A redis-server, a MongoDB shared by every process and gunicorn, all torn down after."""
    with contextlib.ExitStack() as cleanup:  # undone in reverse order
        workdir = tempfile.mkdtemp(prefix="flashcart-chaos-")
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        mongo_uri = cleanup.enter_context(fresh_mongo_uri())
        redis_server = RedisServer()
        cleanup.callback(shutil.rmtree, redis_server.dir, ignore_errors=True)
        cleanup.callback(redis_server.stop)
        redis_server.start()
        redis_client = redis.Redis.from_url(
            redis_server.url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2
        )
        cleanup.callback(redis_client.close)
        app, server, sweeper = api_rig(
            cleanup,
            mongo_uri,
            redis_server.url,
            redis_client,
            workdir,
            workers=WORKERS,
            hold_seconds=HOLD_SECONDS,
            audit_seconds=SWEEP_AUDIT_SECONDS,
        )
        hooks = webhook_rig(cleanup, app, mongo_uri, redis_server.url, workdir, HOLD_SECONDS)
        yield {
            "app": app,
            "redis": redis_server,
            "gunicorn": server,
            "sweeper": sweeper,
            "webhooks": hooks,
        }


def run_drop(api, server, redis_server, sweeper, product_id, tokens, hooks):
    """The load, with both faults injected on schedule, and the sweeper and the webhook
    deliverer running beside it (the receiver refusing for a while, the deliverer
    killed once and started again). Returns (recorder, faults)."""
    rec = Recorder()
    shop = Shop(api, rec, product_id, tokens, HOLD_SECONDS)
    threads = [
        threading.Thread(target=shop.run, args=(n,), name=f"shopper-{n}", daemon=True)
        for n in range(CLIENTS)
    ]
    sweeper.start()
    hooks["deliverer"].start()
    faults = {"started": time.monotonic()}
    receiver_faults = threading.Thread(
        target=webhook_faults, args=(hooks, faults, server), name="webhook-faults", daemon=True
    )
    receiver_faults.start()
    try:
        for thread in threads:
            thread.start()

        # Fault 1: Redis restarts empty (no persistence) while the drop is running.
        wait_until(faults["started"] + RESTART_AT, server)
        old_pid = redis_server.process.pid
        faults["restart_at"] = time.monotonic()
        redis_server.restart()  # returns once the new server answers PING
        faults["answering_at"] = time.monotonic()
        faults["redis_pids"] = (old_pid, redis_server.process.pid)
        # No operator: the sweeper notices the sale missing and rebuilds it.
        faults["rebuilt_at"] = wait_for_sale(redis_server.port, product_id)

        # Fault 2: one gunicorn worker dies by SIGKILL, mid-request under this load.
        wait_until(faults["started"] + KILL_AT, server)
        faults["kill"] = server.kill_a_worker()
        faults["replaced_at"] = faults["kill"]["replaced_at"]

        wait_until(faults["started"] + LOAD_SECONDS, server)
    finally:
        shop.stop.set()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        sweeper_alive = sweeper.process.poll() is None
        sweeper.stop()
        receiver_faults.join(JOIN_TIMEOUT)
    faults["ended"] = time.monotonic()
    assert not [t.name for t in threads if t.is_alive()], "client threads hung"
    assert sweeper_alive, "the sweeper process died:\n" + "\n".join(sweeper.lines()[-30:])
    return rec, faults


def webhook_faults(hooks, faults, server):
    """The receiver answers 503 for a while; later the deliverer is SIGKILLed (whatever
    it is doing) and started again, as a supervisor would."""
    receiver, deliverer = hooks["receiver"], hooks["deliverer"]
    wait_until(faults["started"] + RECEIVER_DOWN[0], server)
    receiver.status = 503
    wait_until(faults["started"] + RECEIVER_DOWN[1], server)
    receiver.status = 200
    wait_until(faults["started"] + DELIVERER_KILL_AT, server)
    faults["deliverer_killed"] = (time.monotonic(), deliverer.kill())
    deliverer.start()


def recovery_times(rec, faults):
    """Seconds from Redis answering again to the sale back in Redis, and to the first
    reservation served (a 201) after the restart."""
    answering = faults["answering_at"]
    served = [e.at for e in rec.events if e.op == "reserve" and e.ok and e.at > answering]
    return {
        "down": answering - faults["restart_at"],
        "rebuilt": faults["rebuilt_at"] - answering,
        "served": (min(served) - answering) if served else None,
    }


def summarise(rec, sweeper, faults, settled, state):
    """Print the figures (before any assertion, so a failure still shows them)."""
    started, kill = faults["started"], faults["kill"]
    times = recovery_times(rec, faults)
    served_at = faults["answering_at"] + (times["served"] or 0)
    phases = {
        "before_restart": (started, faults["restart_at"]),
        "after_recovery": (served_at, kill["at"]),
        "after_kill": (faults["replaced_at"], faults["ended"]),
    }
    figures = {
        "per_phase": {
            name: {op: rec.count(op, *span) for op in ("reserve", "checkout", "cancel")}
            for name, span in phases.items()
        },
        "recovery_times": times,
        "felt_restart": rec.failures(
            faults["restart_at"], served_at, {"service_unavailable", "redis_unavailable"}
        ),
        "told_not_started": sum(
            n for (_, _, code), n in rec.outcomes.items() if code == "sale_not_started"
        ),
        "cut_by_kill": rec.failures(kill["at"] - 0.5, faults["replaced_at"], set()),
        "refused_but_sold": sorted(
            rid
            for rid in rec.refused
            if state["status_of"].get(rid) in ("placed", "cancelling", "cancelled")
        ),
        "confirmed_but_not_sold": sorted(
            rid
            for rid in rec.confirmed
            if state["status_of"].get(rid) not in ("placed", "cancelled")
        ),
        "sweeper_done": sweeper.done(),
        "sweeper_rebuilt": sweeper.lines("which Redis had lost"),
        "sweeper_repaired_drift": sweeper.lines("out of step twice"),
    }
    snap = state["snapshot"]
    lines = [
        f"{rec.total()} operations in {faults['ended'] - started:.1f}s ({WORKERS} gunicorn "
        f"workers, {CLIENTS} client threads, {USERS} users, stock {STOCK}, limit {LIMIT})",
        f"reservations ok {rec.count('reserve')}, orders placed {rec.count('checkout')}, "
        f"cancels {rec.count('cancel')}; per phase {figures['per_phase']}",
        f"fault 1: redis-server pid {faults['redis_pids'][0]} -> {faults['redis_pids'][1]} at "
        f"t+{faults['restart_at'] - started:.1f}s, answering {times['down']:.2f}s later; "
        f"no operator: sale rebuilt by the sweeper {times['rebuilt']:.2f}s and a reservation "
        f"served {times['served'] or float('nan'):.2f}s after Redis answered; requests failed "
        f"by it: {figures['felt_restart']}; told sale_not_started: {figures['told_not_started']}",
        f"fault 2: SIGKILL worker {kill['victim']} at t+{kill['at'] - started:.1f}s, "
        f"replaced by {kill['replacement']}, requests cut: {figures['cut_by_kill']}, "
        f"workers before/after {kill['workers']}, gunicorn log: {kill['master_saw']}",
        f"sweeper process during load {dict(figures['sweeper_done'])}, failed passes "
        f"{sweeper.failures()}, lost sale rebuilt {len(figures['sweeper_rebuilt'])}, drift "
        f"repairs {len(figures['sweeper_repaired_drift'])}; "
        f"final sweeps {[dict(s) for s in settled['sweeps']]}",
        f"orders by status {dict(state['by_status'])}; total {state['total']} = available "
        f"{snap.available} + held {snap.held} + sold {state['sold']} "
        f"(redis sold {state['redis_sold']})",
        f"final audit (no repair) {audit_figures(settled['final_audit'])}",
        f"checkouts refused (404/410) whose order sold anyway: {len(figures['refused_but_sold'])}"
        f"; confirmed checkouts not sold: {len(figures['confirmed_but_not_sold'])}; late "
        f"checkouts of expired holds accepted: {len(rec.late_checkouts_accepted)}",
        "errors by kind: " + ", ".join(f"{k}={n}" for k, n in rec.errors().most_common()),
        *(f"sweeper: {line}" for line in figures["sweeper_repaired_drift"]),
    ]
    print("\nCHAOS SUMMARY\n  " + "\n  ".join(lines))
    return figures


@pytest.mark.timeout(330)
def test_drop_survives_redis_restart_and_worker_kill(chaos_rig):
    app, redis_server, server = chaos_rig["app"], chaos_rig["redis"], chaos_rig["gunicorn"]
    api, sweeper = server.api, chaos_rig["sweeper"]
    server.wait_ready(timeout=30)
    product_id, tokens = open_drop(
        app, api, name="Chaos drop", price="25.00", stock=STOCK, limit=LIMIT, shoppers=USERS
    )

    hooks = chaos_rig["webhooks"]
    rec, faults = run_drop(api, server, redis_server, sweeper, product_id, tokens, hooks)
    assert server.process.poll() is None, server.log_tail()
    server.stop()  # a quiet moment: nothing in flight any more
    settled = settle(app)
    state = truth(app, product_id)
    figures = summarise(rec, sweeper, faults, settled, state)
    delivered = deliveries(app, hooks)
    shown = {k: len(v) if isinstance(v, list) else v for k, v in delivered.items()}
    print(
        f"  webhooks: {shown}; the receiver refused from t+{RECEIVER_DOWN[0]}s to "
        f"t+{RECEIVER_DOWN[1]}s, the deliverer was SIGKILLed at t+"
        f"{faults['deliverer_killed'][0] - faults['started']:.1f}s and started again"
    )
    deliverer_log = "\n".join(hooks["deliverer"].lines()[-20:])

    # The faults really happened, during the load.
    kill = faults["kill"]
    assert faults["redis_pids"][0] != faults["redis_pids"][1]
    assert figures["felt_restart"], "no request noticed the Redis restart"
    # With no operator, the sweeper rebuilt the lost sale (at the start of a pass, or
    # at its audit if Redis restarted during the pass) and it served again soon.
    assert figures["sweeper_rebuilt"], "the sweeper did not log rebuilding the lost sale"
    times = figures["recovery_times"]
    assert times["rebuilt"] < RECOVERY_LIMIT, times
    assert times["served"] is not None and times["served"] < RECOVERY_LIMIT, times
    # A live sale Redis lost is "retry shortly" (503), never "not started".
    assert figures["told_not_started"] == 0, rec.errors()
    assert faults["started"] < faults["restart_at"] < kill["at"] < faults["ended"]
    with pytest.raises(ProcessLookupError):
        os.kill(kill["victim"], 0)
    assert kill["master_saw"], f"gunicorn did not report the SIGKILL: {kill}"
    assert kill["replacement"], f"gunicorn did not spawn a replacement worker: {kill}"
    # And the drop kept selling before, between and after them.
    for name, done in figures["per_phase"].items():
        assert done["reserve"] >= MIN_RESERVATIONS, (name, figures["per_phase"])
        assert done["checkout"] >= MIN_ORDERS, (name, figures["per_phase"])

    # The durable truth after recovery.
    check_truth(state, settled, STOCK, LIMIT)
    # What clients were told holds too: an expired hold never sells, a 2xx checkout stays.
    assert not rec.late_checkouts_accepted, rec.late_checkouts_accepted
    assert not figures["confirmed_but_not_sold"], figures["confirmed_but_not_sold"]
    check_events(state)
    events = state["events"]

    # Every event reached the receiver at least once, signed, none invented, in order
    # per resource, though the receiver refused for a while and the deliverer was killed.
    assert delivered["expected"] == len(events)  # the endpoint was there before the drop
    assert delivered["refused_by_receiver"], ("the receiver never refused", deliverer_log)
    assert delivered["lost"] == [] and delivered["invented"] == [], (shown, deliverer_log)
    assert delivered["bad_signatures"] == [], delivered
    assert delivered["out_of_order"] == [], delivered
