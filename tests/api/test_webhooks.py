"""Webhook endpoints through the API, and deliveries by the deliverer in this process
(tests/system/test_webhook_delivery.py runs `flask deliver` as real processes)."""

import collections
import logging
import re
import shutil
import subprocess
import time
from datetime import timedelta

import pytest

from flashcart.stores import utcnow
from flashcart.webhooks import deliverer, destinations, service
from tests.support.events import publish_event, publish_events
from tests.support.processes import wait_for
from tests.support.webhook_receiver import WebhookReceiver

BASE = "/api/v1/webhooks"


@pytest.fixture
def app_config(app_config):
    # The receiver listens on 127.0.0.1; retries come quickly.
    app_config.update(
        WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS=True,
        WEBHOOKS_RETRY_BASE_SECONDS=0.01,
        WEBHOOKS_RETRY_MAX_SECONDS=0.02,
        WEBHOOKS_MAX_ATTEMPTS=3,
        WEBHOOKS_TIMEOUT_SECONDS=2,
    )
    return app_config


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def register(client, admin_headers):
    def register(url, types=("order.placed", "order.cancelled")):
        response = client.post(BASE, json={"url": url, "types": list(types)}, headers=admin_headers)
        assert response.status_code == 201, response.json
        return response.json

    return register


def deliver(app):
    with app.app_context():
        return deliverer.run_pass(threads=1)


def counted(client):
    """The webhook delivery counters at /metrics: {outcome: value}."""
    text = client.get("/metrics").get_data(as_text=True)
    found = re.findall(r'flashcart_webhook_deliveries_total\{outcome="(\w+)"\} ([0-9.]+)', text)
    return collections.Counter({outcome: float(value) for outcome, value in found})


def deliver_until(app, done, timeout=10):
    """Passes until `done()` (a retry waits its backoff, however short)."""
    deadline = time.monotonic() + timeout
    with app.app_context():
        while not done():
            assert time.monotonic() < deadline, "not done in time"
            deliverer.run_pass(threads=1)
            time.sleep(0.005)


def test_an_admin_registers_an_endpoint_and_sees_its_secret_once(
    client, admin_headers, register, receiver
):
    created = register(receiver.url)
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["url"] == receiver.url and created["active"] is True

    listed = client.get(BASE, headers=admin_headers)
    one = client.get(f"{BASE}/{created['id']}", headers=admin_headers)
    assert [e["id"] for e in listed.json["items"]] == [created["id"]]
    assert created["secret"] not in listed.get_data(as_text=True)
    assert "secret" not in one.json and created["secret"] not in one.get_data(as_text=True)


def test_only_an_admin_may_manage_webhooks(client, user_headers, admin_headers, register, receiver):
    endpoint = register(receiver.url)
    calls = [
        ("post", BASE, {"url": receiver.url, "types": ["order.placed"]}),
        ("get", BASE, None),
        ("get", f"{BASE}/{endpoint['id']}", None),
        ("delete", f"{BASE}/{endpoint['id']}", None),
        ("post", f"{BASE}/{endpoint['id']}/rotate-secret", None),
        ("get", f"{BASE}/{endpoint['id']}/deliveries", None),
        ("post", f"{BASE}/{endpoint['id']}/replay", {}),
    ]
    for method, path, body in calls:
        anonymous = getattr(client, method)(path, json=body)
        user = getattr(client, method)(path, json=body, headers=user_headers)
        assert anonymous.status_code == 401, (method, path)
        assert (user.status_code, user.json["code"]) == (403, "admin_only"), (method, path)
    # Nothing changed: the endpoint and its secret are as they were.
    assert client.get(f"{BASE}/{endpoint['id']}", headers=admin_headers).status_code == 200


def test_registration_refuses_unknown_event_types_and_bad_urls(client, admin_headers):
    bad = [
        {"url": "https://example.com/h", "types": ["order.shipped"]},
        {"url": "https://example.com/h", "types": []},
        {"url": "ftp://example.com/h", "types": ["order.placed"]},
        {"url": "https://user:pw@example.com/h", "types": ["order.placed"]},
    ]
    for body in bad:
        response = client.post(BASE, json=body, headers=admin_headers)
        assert response.status_code == 422, body
    assert client.get(BASE, headers=admin_headers).json["items"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/h",
        "http://10.1.2.3/h",
        "http://192.168.0.1/h",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8000/h",
        "http://[::ffff:127.0.0.1]/h",
        "http://localhost:8000/h",
        "http://0.0.0.0/h",
    ],
)
def test_registration_refuses_private_and_metadata_destinations(app, client, admin_headers, url):
    app.config["WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS"] = False
    response = client.post(
        BASE, json={"url": url, "types": ["order.placed"]}, headers=admin_headers
    )
    assert (response.status_code, response.json["code"]) == (422, "destination_refused"), url
    assert "url" in response.json["errors"]
    assert client.get(BASE, headers=admin_headers).json["items"] == []


def test_metadata_addresses_are_refused_even_where_private_ones_are_allowed(client, admin_headers):
    url = "http://169.254.169.254/latest/meta-data/"
    response = client.post(
        BASE, json={"url": url, "types": ["order.placed"]}, headers=admin_headers
    )
    assert (response.status_code, response.json["code"]) == (422, "destination_refused")


def test_events_reach_the_endpoint_signed_once_each_and_in_order(app, mongo_db, register, receiver):
    endpoint = register(receiver.url, types=["order.placed", "sale.started"])
    events = publish_events(mongo_db, 5, resources=["a" * 24, "b" * 24])
    publish_event(mongo_db, "order.cancelled", "a" * 24)  # not subscribed

    assert deliver(app) == {"delivered": 5}
    assert deliver(app) == {}  # nothing left: nothing sent twice
    assert receiver.delivered_ids() == [e["_id"] for e in events]
    first = receiver.delivered()[0]
    assert first.event == {
        "id": events[0]["_id"],
        "type": "order.placed",
        "created_at": first.event["created_at"],
        "resource": {"type": "order", "id": "a" * 24},
        "data": {"id": "a" * 24, "n": 0},
        "cursor": str(events[0]["seq"]),
    }
    from flashcart.webhooks import signatures

    timestamp = first.headers["FlashCart-Signature"].split(",")[0].removeprefix("t=")
    expected = signatures.signature(endpoint["secret"], int(timestamp), first.body)
    assert first.headers["FlashCart-Signature"] == f"t={timestamp},v1={expected}"
    assert first.headers["FlashCart-Event-Type"] == "order.placed"


def test_events_from_before_an_endpoint_existed_are_not_sent(app, mongo_db, register, receiver):
    publish_events(mongo_db, 3, resources=["c" * 24])
    register(receiver.url)
    later = publish_event(mongo_db, "order.placed", "c" * 24)
    deliver(app)
    assert receiver.delivered_ids() == [later["_id"]]


@pytest.mark.parametrize("seqs", [[], [1], [2], [1, 2, 3], [5, 6, 64], [3, 17, 1000], [4096]])
def test_a_new_endpoint_starts_at_the_newest_event_whatever_the_gaps(app, mongo_db, seqs):
    for seq in seqs:
        publish_event(mongo_db, "order.placed", "a4" * 12, seq=seq)
    with app.app_context():
        assert service.feed_head() == max(seqs, default=0)


def test_a_resource_waits_while_an_earlier_event_about_it_is_retried(
    app, client, admin_headers, mongo_db, register, receiver
):
    app.config["WEBHOOKS_RETRY_BASE_SECONDS"] = app.config["WEBHOOKS_RETRY_MAX_SECONDS"] = 60
    endpoint = register(receiver.url)
    receiver.status = 503
    first = publish_event(mongo_db, "order.placed", "d" * 24)
    second = publish_event(mongo_db, "order.cancelled", "d" * 24)
    other = publish_event(mongo_db, "order.placed", "e" * 24)

    assert deliver(app) == {"retried": 1}  # the visit stops at the first failure
    receiver.status = 200
    # The first waits for its retry: the order's cancel waits behind it, the other
    # order's event goes.
    assert deliver(app) == {"delivered": 1}
    assert receiver.delivered_ids() == [other["_id"]]

    # Due now: the order's two events go, in order.
    replay = client.post(
        f"{BASE}/{endpoint['id']}/replay", json={"event_id": first["_id"]}, headers=admin_headers
    )
    assert replay.json == {"replayed": 1}
    assert deliver(app) == {"delivered": 2}
    assert receiver.delivered_ids() == [other["_id"], first["_id"], second["_id"]]


def test_events_stuck_behind_a_retry_do_not_hold_up_other_resources(
    app, mongo_db, register, receiver
):
    app.config.update(
        WEBHOOKS_BATCH_SIZE=2, WEBHOOKS_RETRY_BASE_SECONDS=60, WEBHOOKS_RETRY_MAX_SECONDS=60
    )
    register(receiver.url)
    receiver.status = 503
    stuck = publish_events(mongo_db, 5, resources=["7" * 24])
    assert deliver(app) == {"retried": 1}
    receiver.status = 200
    others = publish_events(mongo_db, 3, resources=["8" * 24, "9" * 24])

    # Pages of two: the four waiting behind the first are passed over, not re-read.
    assert deliver(app) == {"delivered": 3}
    assert receiver.delivered_ids() == [e["_id"] for e in others]
    assert stuck[0]["_id"] not in receiver.delivered_ids()


def test_a_delivery_out_of_attempts_is_failed_logged_and_replayed(
    app, client, admin_headers, mongo_db, register, receiver
):
    endpoint = register(receiver.url)
    receiver.status = 500
    event = publish_event(mongo_db, "order.placed", "f" * 24)
    before = counted(client)
    deliver_until(app, lambda: len(receiver.received) >= 3)
    assert counted(client) - before == {"retried": 2, "failed": 1}
    log = client.get(f"{BASE}/{endpoint['id']}/deliveries", headers=admin_headers).json
    (delivery,) = log["items"]
    assert (delivery["event_id"], delivery["status"], delivery["attempts"]) == (
        event["_id"],
        "failed",
        3,
    )
    assert [a["status_code"] for a in delivery["log"]] == [500, 500, 500]
    assert all(a["error"] == "answered 500" for a in delivery["log"])
    assert len(receiver.received) == 3
    assert deliver(app) == {}  # failed: no more attempts

    receiver.status = 200
    replay = client.post(f"{BASE}/{endpoint['id']}/replay", json={}, headers=admin_headers)
    assert (replay.status_code, replay.json) == (202, {"replayed": 1})
    assert deliver(app) == {"delivered": 1}
    assert counted(client) - before == {"retried": 2, "failed": 1, "delivered": 1}
    assert receiver.delivered_ids() == [event["_id"]]
    again = client.get(f"{BASE}/{endpoint['id']}/deliveries", headers=admin_headers).json
    assert again["items"][0]["status"] == "delivered"

    # One event again, although it was delivered; an unknown one is a 404.
    one = client.post(
        f"{BASE}/{endpoint['id']}/replay", json={"event_id": event["_id"]}, headers=admin_headers
    )
    assert (one.status_code, one.json) == (202, {"replayed": 1})
    assert deliver(app) == {"delivered": 1}
    assert receiver.delivered_ids() == [event["_id"], event["_id"]]
    missing = client.post(
        f"{BASE}/{endpoint['id']}/replay", json={"event_id": "evt_nope"}, headers=admin_headers
    )
    assert (missing.status_code, missing.json["code"]) == (404, "delivery_not_found")


def test_deliver_runs_one_pass_and_says_what_it_did(app, runner, mongo_db, register, receiver):
    assert runner.invoke(args=["deliver"]).output == "deliver: idle\n"
    register(receiver.url)
    publish_events(mongo_db, 2)
    result = runner.invoke(args=["deliver", "--threads", "2"])
    assert (result.exit_code, result.output) == (0, "deliver: delivered=2\n")
    assert len(receiver.delivered()) == 2


def test_deliver_refuses_a_lease_too_short_for_one_request(app, runner):
    app.config.update(WEBHOOKS_LEASE_SECONDS=5, WEBHOOKS_TIMEOUT_SECONDS=2)
    result = runner.invoke(args=["deliver"])
    assert result.exit_code == 1
    assert "WEBHOOKS_LEASE_SECONDS (5) must exceed 2 x WEBHOOKS_TIMEOUT_SECONDS + 1 (5)" in (
        result.output
    )


def test_the_cli_replays_failed_deliveries(app, runner, mongo_db, register, receiver):
    endpoint = register(receiver.url)
    receiver.status = 500
    publish_event(mongo_db, "order.placed", "1" * 24)
    deliver_until(app, lambda: len(receiver.received) >= 3)
    receiver.status = 200
    result = runner.invoke(args=["replay-webhooks", endpoint["id"]])
    assert result.exit_code == 0, result.output
    assert "1 deliveries queued again" in result.output
    assert deliver(app) == {"delivered": 1}
    unknown = runner.invoke(args=["replay-webhooks", "0" * 24])
    assert unknown.exit_code == 1 and "No such webhook endpoint" in unknown.output


def test_a_rotated_secret_signs_alongside_the_old_one_for_the_grace_period(
    app, client, admin_headers, mongo_db, register, receiver
):
    from flashcart.webhooks import signatures

    endpoint = register(receiver.url)
    rotated = client.post(f"{BASE}/{endpoint['id']}/rotate-secret", headers=admin_headers)
    assert rotated.status_code == 200
    assert rotated.json["secret"] != endpoint["secret"]
    publish_event(mongo_db, "order.placed", "2" * 24)
    deliver(app)
    (request,) = receiver.delivered()
    fields = [part.split("=", 1) for part in request.headers["FlashCart-Signature"].split(",")]
    timestamp = int(fields[0][1])
    assert [value for key, value in fields if key == "v1"] == [
        signatures.signature(rotated.json["secret"], timestamp, request.body),
        signatures.signature(endpoint["secret"], timestamp, request.body),
    ]


def test_a_deleted_endpoint_gets_nothing_more(
    app, client, admin_headers, mongo_db, register, receiver
):
    endpoint = register(receiver.url)
    assert client.delete(f"{BASE}/{endpoint['id']}", headers=admin_headers).status_code == 204
    assert client.get(f"{BASE}/{endpoint['id']}", headers=admin_headers).status_code == 404
    assert client.get(BASE, headers=admin_headers).json["items"] == []
    publish_event(mongo_db, "order.placed", "3" * 24)
    assert deliver(app) == {}
    assert receiver.received == []
    stored = mongo_db.webhook_endpoints.find_one()
    assert "secret" not in stored


def test_the_request_goes_to_a_checked_address_under_the_endpoints_name(
    app, mongo_db, register, receiver, monkeypatch
):
    """The first address refuses the connection: the next one checked is tried."""
    port = receiver.url.split(":")[2].split("/")[0]
    monkeypatch.setattr(destinations, "resolve", lambda host, port: ["127.0.0.2", "127.0.0.1"])
    register(f"http://hooks.example:{port}/hooks")
    event = publish_event(mongo_db, "order.placed", "a5" * 12)
    assert deliver(app) == {"delivered": 1}
    (request,) = receiver.received
    assert request.event_id == event["_id"]
    assert request.headers["Host"] == f"hooks.example:{port}"


def test_a_redirect_is_not_followed(app, client, admin_headers, mongo_db, register):
    with WebhookReceiver() as target:
        with WebhookReceiver(status=307, headers={"Location": target.url}) as redirecting:
            endpoint = register(redirecting.url)
            publish_event(mongo_db, "order.placed", "a1" * 12)
            assert deliver(app) == {"retried": 1}
        assert len(redirecting.received) == 1 and target.received == []
    (delivery,) = client.get(f"{BASE}/{endpoint['id']}/deliveries", headers=admin_headers).json[
        "items"
    ]
    assert delivery["log"][0]["status_code"] == 307
    assert delivery["log"][0]["error"] == "redirects are not followed"


def test_a_huge_answer_is_read_only_up_to_the_limit(app, client, admin_headers, mongo_db, register):
    app.config["WEBHOOKS_MAX_RESPONSE_BYTES"] = 1024
    with WebhookReceiver(answer=b"x" * 20_000_000) as receiver:
        endpoint = register(receiver.url)
        publish_event(mongo_db, "order.placed", "a2" * 12)
        assert deliver(app) == {"delivered": 1}
        wait_for(lambda: receiver.cut_off == 1, "the deliverer hanging up", timeout=10)
    (delivery,) = client.get(f"{BASE}/{endpoint['id']}/deliveries", headers=admin_headers).json[
        "items"
    ]
    assert delivery["log"][0]["response"] == "x" * 200


def test_a_receiver_that_does_not_answer_times_out(app, client, admin_headers, mongo_db, register):
    app.config["WEBHOOKS_TIMEOUT_SECONDS"] = 0.5
    with WebhookReceiver(delay=3) as receiver:
        endpoint = register(receiver.url)
        publish_event(mongo_db, "order.placed", "a3" * 12)
        started = time.monotonic()
        assert deliver(app) == {"retried": 1}
        assert time.monotonic() - started < 2
    (delivery,) = client.get(f"{BASE}/{endpoint['id']}/deliveries", headers=admin_headers).json[
        "items"
    ]
    assert delivery["log"][0]["status_code"] is None
    assert "timed out" in delivery["log"][0]["error"].lower()


@pytest.mark.parametrize(
    "now", [["127.0.0.1"], ["10.0.0.5"], ["169.254.169.254"], ["::1"], ["93.184.215.14", "::1"]]
)
def test_the_destination_is_checked_again_at_delivery(
    app, mongo_db, register, receiver, monkeypatch, now
):
    """A name that resolved to a public address at registration and elsewhere now."""
    app.config["WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS"] = False
    port = receiver.url.split(":")[2].split("/")[0]
    answers = {"hooks.example": ["93.184.215.14"]}
    monkeypatch.setattr(destinations, "resolve", lambda host, port: answers[host])
    register(f"http://hooks.example:{port}/hooks")
    answers["hooks.example"] = now
    publish_event(mongo_db, "order.placed", "4" * 24)

    assert deliver(app) == {"retried": 1}
    assert receiver.received == []
    (delivery,) = mongo_db.webhook_deliveries.find()
    assert f"resolves to {now[-1]}" in delivery["log"][0]["error"]


def test_the_secret_is_never_logged(
    app, client, admin_headers, mongo_db, register, receiver, caplog
):
    caplog.set_level(logging.DEBUG)
    endpoint = register(receiver.url)
    client.get(BASE, headers=admin_headers)
    rotated = client.post(f"{BASE}/{endpoint['id']}/rotate-secret", headers=admin_headers).json
    receiver.status = 500
    publish_event(mongo_db, "order.placed", "5" * 24)
    deliver(app)
    receiver.status = 200
    deliver_until(app, lambda: receiver.delivered())
    assert "webhook retried" in caplog.text and "webhook delivered" in caplog.text
    assert endpoint["url"] not in caplog.text  # a URL may carry a token of its own
    for secret in (endpoint["secret"], rotated["secret"]):
        assert secret not in caplog.text


def test_the_backlog_gauge_is_the_age_of_the_oldest_undelivered_event(
    app, client, mongo_db, register, receiver
):
    def gauge():
        text = client.get("/metrics").get_data(as_text=True)
        (line,) = [
            line
            for line in text.splitlines()
            if line.startswith("flashcart_events_undelivered_oldest_age_seconds{")
        ]
        return float(line.rsplit(" ", 1)[1])

    assert gauge() == 0
    register(receiver.url)
    assert gauge() == 0
    # An event about a change 90 s ago, published now.
    publish_event(mongo_db, "order.placed", "6" * 24, created_at=utcnow() + timedelta(seconds=-90))
    assert 89 < gauge() < 120  # not even fanned out yet
    receiver.status = 503
    deliver(app)
    assert 89 < gauge() < 120  # pending, retrying
    receiver.status = 200
    deliver_until(app, receiver.delivered)
    assert gauge() == 0


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for hooks.example: (certificate file, key file)."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl binary to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=hooks.example"]
        + ["-addext", "subjectAltName=DNS:hooks.example"],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.mark.parametrize(
    ("name", "trusted", "outcome"),
    [
        ("hooks.example", True, None),
        ("hooks.example", False, "CERTIFICATE_VERIFY_FAILED"),
        ("other.example", True, "doesn't match 'hooks.example'"),
    ],
)
def test_https_checks_the_certificate_against_the_name_while_connecting_to_the_address(
    app, client, admin_headers, mongo_db, register, certificate, monkeypatch, name, trusted, outcome
):
    app.config["WEBHOOKS_ALLOW_HTTP"] = False
    if trusted:  # OpenSSL's default trust store, which the sender uses
        monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    monkeypatch.setattr(destinations, "resolve", lambda host, port: ["127.0.0.1"])
    with WebhookReceiver(tls=certificate) as receiver:
        endpoint = register(f"https://{name}:{receiver.port}/hooks")
        publish_event(mongo_db, "order.placed", "a6" * 12)
        deliver(app)
    (delivery,) = client.get(f"{BASE}/{endpoint['id']}/deliveries", headers=admin_headers).json[
        "items"
    ]
    if outcome is None:
        assert delivery["status"] == "delivered"
        assert receiver.received[0].headers["Host"] == f"{name}:{receiver.port}"
    else:
        assert delivery["status"] == "pending" and receiver.received == []
        assert outcome in delivery["log"][0]["error"]
