"""`flask deliver` as operators run it: real processes on one MongoDB (the stand-in, or
MONGO_TEST_URI's server), sending to a real HTTP receiver on 127.0.0.1."""

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from flashcart import create_app
from flashcart.extensions import stores
from flashcart.webhooks import service
from tests.support import chaos_app
from tests.support.events import publish_event, publish_events
from tests.support.mongo import fresh_mongo_uri
from tests.support.ports import free_port
from tests.support.processes import ROOT, stop, wait_for
from tests.support.webhook_receiver import WebhookReceiver

FLASK = os.path.join(os.path.dirname(sys.executable), "flask")
FAST = {
    "WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS": "true",
    "WEBHOOKS_TIMEOUT_SECONDS": "1",
    "WEBHOOKS_LEASE_SECONDS": "4",
    "WEBHOOKS_RETRY_BASE_SECONDS": "0.2",
    "WEBHOOKS_RETRY_MAX_SECONDS": "5",
    "WEBHOOKS_MAX_ATTEMPTS": "20",
}


@pytest.fixture
def mongo_uri():
    with fresh_mongo_uri() as uri:
        yield uri


@pytest.fixture
def operator(mongo_uri):
    """The test's own app on the shared MongoDB: registers endpoints, publishes events."""
    app = create_app(
        chaos_app.settings(mongo_uri, "memory://", 60, WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS=True)
    )
    yield app
    chaos_app.close_mongo(app)


class Deliverers:
    """`flask --app wsgi deliver --every ...` processes, stopped at the end."""

    def __init__(self, mongo_uri, tmp_path):
        self.mongo_uri, self.tmp_path = mongo_uri, tmp_path
        self.processes = []

    def start(self, every="0.05", *options, **settings):
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOKS_")}
        env.update(
            FLASHCART_ENV="development",
            MONGO_URI=self.mongo_uri,
            REDIS_URL="memory://",
            LOG_FORMAT="text",
            PYTHONUNBUFFERED="1",
        )
        env.update(FAST | settings)
        log = open(self.tmp_path / f"deliver-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [FLASK, "--app", "wsgi", "deliver", "--every", every, *options],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append((process, log))
        return process

    def each_log(self):
        return [path.read_text() for path in sorted(self.tmp_path.glob("deliver-*.log"))]

    def logs(self):
        return "".join(self.each_log())

    def stop_all(self):
        for process, log in self.processes:
            if process.poll() is None:
                stop(process)
            log.close()


@pytest.fixture
def deliverers(mongo_uri, tmp_path):
    running = Deliverers(mongo_uri, tmp_path)
    yield running
    running.stop_all()


@contextlib.contextmanager
def receiving(**options):
    with WebhookReceiver(**options) as receiver:
        yield receiver


def register(app, url, types=("order.placed", "order.cancelled")):
    with app.app_context():
        return service.create_endpoint(url=url, types=list(types))


def publish(app, count, resources):
    with app.app_context():
        return publish_events(stores.db, count, resources=resources)


def deliveries_of(app, endpoint):
    with app.app_context():
        return service.list_deliveries(endpoint["id"], per_page=100)["items"]


def all_delivered(receiver, events):
    wanted = {e["_id"] for e in events}
    return lambda: wanted <= set(receiver.delivered_ids())


def scrape(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()


def docs_verify():
    """The `verify` function of docs/webhooks.md, as a reader would copy it."""
    with open(os.path.join(ROOT, "docs", "webhooks.md")) as page:
        blocks = re.findall(r"```python\n(.*?)```", page.read(), re.S)
    (snippet,) = [block for block in blocks if "def verify(" in block]
    namespace = {}
    exec(compile(snippet, "docs/webhooks.md", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace["verify"]


def test_every_event_arrives_signed_in_order_per_resource_and_the_docs_verify_it(
    operator, deliverers
):
    with receiving() as receiver:
        endpoint = register(operator, receiver.url)
        resources = [f"{n:024x}" for n in range(4)]
        events = publish(operator, 20, resources)
        port = free_port()
        deliverers.start("0.05", "--metrics-port", str(port))
        wait_for(all_delivered(receiver, events), "every event delivered", timeout=30)
        # The receiver has the last request before the deliverer has counted it.
        delivered = 'flashcart_webhook_deliveries_total{outcome="delivered"} 20.0'
        counters = wait_for(
            lambda: delivered in scrape(port) and scrape(port), "the deliverer's counters"
        )
    assert 'outcome="retried"' not in counters and 'outcome="failed"' not in counters

    verify = docs_verify()
    received = receiver.delivered()
    assert sorted(r.event_id for r in received) == sorted(e["_id"] for e in events)
    for request in received:
        assert verify(endpoint["secret"], request.headers["FlashCart-Signature"], request.body)
        assert request.event["id"] == request.event_id
        assert not verify("whsec_another", request.headers["FlashCart-Signature"], request.body)
        assert not verify(
            endpoint["secret"], request.headers["FlashCart-Signature"], request.body + b" "
        )
    by_resource = collections.defaultdict(list)
    for request in received:
        by_resource[request.event["resource"]["id"]].append(int(request.event["cursor"]))
    assert all(seqs == sorted(seqs) for seqs in by_resource.values())
    assert endpoint["secret"] not in deliverers.logs()
    assert "webhook delivered" in deliverers.logs()


def test_a_receiver_down_for_a_while_gets_everything_after_growing_waits(operator, deliverers):
    with receiving(status=503) as receiver:
        endpoint = register(operator, receiver.url)
        events = publish(operator, 5, ["a" * 24])  # one resource: they queue behind the first
        deliverers.start()

        def tries():
            return [r.at for r in receiver.received if r.event_id == events[0]["_id"]]

        wait_for(lambda: len(tries()) >= 6, "six tries of the first event", timeout=30)
        receiver.status = 200
        wait_for(all_delivered(receiver, events), "every event delivered", timeout=30)

    assert receiver.delivered_ids() == [e["_id"] for e in events]  # and in order
    tried = tries()
    gaps = [later - earlier for earlier, later in zip(tried, tried[1:6], strict=False)]
    # Waits of 0.1-0.2 s, 0.2-0.4, 0.4-0.8, 0.8-1.6, 1.6-3.2 (doubling, the upper half
    # random), give or take a pass of the loop (--every 0.05, slower on a busy host).
    assert all(b > a - 0.3 for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] > 2.5 * gaps[0] and gaps[-1] >= 1.5, gaps
    # No other event was tried while the first one of the resource was failing.
    assert {r.event_id for r in receiver.received if r.status == 503} == {events[0]["_id"]}
    (first,) = [d for d in deliveries_of(operator, endpoint) if d["event_id"] == events[0]["_id"]]
    assert first["status"] == "delivered" and first["attempts"] == len(tried)
    assert [a["status_code"] for a in first["log"]][-1] == 503


def test_a_deliverer_killed_mid_batch_loses_nothing(operator, deliverers):
    with receiving(delay=0.1) as receiver:
        register(operator, receiver.url)
        events = publish(operator, 30, [f"{n:024x}" for n in range(30)])
        first = deliverers.start()
        wait_for(lambda: len(receiver.received) >= 5, "a few deliveries", timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait()
        sent_before = len(receiver.received)
        assert sent_before < len(events)
        deliverers.start()
        wait_for(all_delivered(receiver, events), "every event delivered", timeout=60)

    ids = receiver.delivered_ids()
    assert set(ids) == {e["_id"] for e in events}
    # At least once: only the request in flight at the kill may have come twice.
    twice = [i for i, n in collections.Counter(ids).items() if n > 1]
    assert len(twice) <= 1, twice


def test_two_deliverers_at_once_send_each_event_once(operator, deliverers):
    with receiving(delay=0.01) as one, receiving(delay=0.01) as two:
        register(operator, one.url)
        register(operator, two.url)
        deliverers.start()
        deliverers.start()
        wait_for(
            lambda: all("deliver: idle" in log for log in deliverers.each_log()),
            "both deliverers running",
            timeout=30,
        )
        events = []
        for _ in range(4):  # published while both are running
            events += publish(operator, 15, [f"{n:024x}" for n in range(10)])
            time.sleep(0.2)
        for receiver in (one, two):
            wait_for(all_delivered(receiver, events), "every event delivered", timeout=60)
        # Each request is logged once its outcome is stored, just after it arrived.
        wait_for(
            lambda: deliverers.logs().count("webhook delivered") >= 2 * len(events),
            "every delivery logged",
        )
        time.sleep(0.5)  # time for a duplicate to show up

    for receiver in (one, two):
        ids = receiver.delivered_ids()
        assert sorted(ids) == sorted(e["_id"] for e in events)  # each exactly once
    # Both took part, and between them sent each delivery once.
    counts = [log.count("webhook delivered") for log in deliverers.each_log()]
    assert all(counts) and sum(counts) == 2 * len(events), counts


def test_a_receiver_that_hangs_does_not_hold_up_the_others(operator, deliverers):
    with receiving(delay=10) as hanging, receiving() as healthy:
        register(operator, hanging.url)
        register(operator, healthy.url)
        events = publish(operator, 10, [f"{n:024x}" for n in range(10)])
        deliverers.start(WEBHOOKS_TIMEOUT_SECONDS="3", WEBHOOKS_LEASE_SECONDS="10")
        wait_for(all_delivered(healthy, events), "every event delivered", timeout=30)
        # All sent to the healthy one while the first request to the other hung.
        wait_for(lambda: hanging.received, "the hanging receiver asked", timeout=10)
        assert max(r.at for r in healthy.delivered()) < hanging.received[0].at + 3


def test_the_deliverer_refuses_a_private_destination_it_is_not_allowed(operator, deliverers):
    with receiving() as receiver:
        endpoint = register(operator, receiver.url)  # allowed where it was registered
        with operator.app_context():
            event = publish_event(stores.db, "order.placed", "b" * 24)
        deliverers.start(WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS="false")
        wait_for(lambda: deliveries_of(operator, endpoint)[0]["log"], "an attempt", timeout=30)
        time.sleep(0.3)
        assert receiver.received == []

    (delivery,) = deliveries_of(operator, endpoint)
    assert delivery["event_id"] == event["_id"] and delivery["status"] == "pending"
    assert "resolves to 127.0.0.1" in delivery["log"][-1]["error"]
