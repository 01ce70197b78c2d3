"""Webhooks fed by the real event outbox: a drop's events reach an endpoint, signed.

tests/api/test_webhooks.py covers the deliverer with events written by
tests/support/events.py; here the drop itself writes them."""

import json

import pytest

from flashcart.webhooks import deliverer, signatures
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def app_config(app_config):
    app_config["WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS"] = True
    return app_config


def test_a_drops_events_reach_an_endpoint_signed_in_order(
    app, client, admin_headers, user_headers, make_product
):
    with WebhookReceiver() as receiver:
        types = ["sale.started", "order.placed", "order.cancelled"]
        endpoint = client.post(
            "/api/v1/webhooks", json={"url": receiver.url, "types": types}, headers=admin_headers
        ).json
        product = make_product(live=True, stock=5, per_user_limit=2)
        reservation = client.post(
            f"/api/v1/sales/reserve/{product['id']}", json={}, headers=user_headers
        ).json
        order = client.post(
            "/api/v1/orders", json={"reservation_id": reservation["id"]}, headers=user_headers
        ).json
        cancelled = client.delete(f"/api/v1/orders/{order['id']}", headers=user_headers)
        assert cancelled.status_code == 200
        with app.app_context():
            deliverer.run_pass(threads=1)

    received = receiver.delivered()
    assert [(r.event["type"], r.event["resource"]["id"]) for r in received] == [
        ("sale.started", product["id"]),
        ("order.placed", order["id"]),
        ("order.cancelled", order["id"]),
    ]
    feed = client.get("/api/v1/events", headers=admin_headers).json["items"]
    # The bodies are the feed's own items (the pull feed and webhooks show one shape).
    assert [r.event for r in received] == [
        json.loads(json.dumps(e)) for e in feed if e["type"] in types
    ]
    for request in received:
        timestamp = request.headers["FlashCart-Signature"].split(",")[0][2:]
        expected = signatures.signature(endpoint["secret"], int(timestamp), request.body)
        assert request.headers["FlashCart-Signature"] == f"t={timestamp},v1={expected}"
        assert request.headers["FlashCart-Event-Id"] == request.event["id"]
