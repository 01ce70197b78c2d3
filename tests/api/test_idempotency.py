"""`Idempotency-Key` on reserve and checkout: replays, key reuse, per-user scope, and
retry storms of concurrent identical requests against the real redis-server."""

import os
import select
import signal
import threading
import time

import pytest

from flashcart import idempotency
from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.keys import Keys

STORM = 50
JOIN_TIMEOUT = 30


def reserve(client, pid, headers, quantity=1, key=None):
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    return client.post(f"/api/v1/sales/reserve/{pid}", json={"quantity": quantity}, headers=headers)


def stock_of(redis_client, pid):
    return Inventory(redis_client).snapshot(pid).available


def hold_ids(redis_client, pid):
    prefix = Keys(pid).prefix + "hold:"
    return sorted(key[len(prefix) :] for key in redis_client.keys(prefix + "*"))


def idempotency_records(redis_client):
    return redis_client.keys("fc:idem:*")


def storm(app, send, count=STORM):
    """Fire send(client) from `count` threads at once, each with its own test client."""
    barrier = threading.Barrier(count, timeout=JOIN_TIMEOUT)
    answers, errors = [None] * count, []

    def worker(index):
        client = app.test_client()
        try:
            barrier.wait()
            response = send(client)
            answers[index] = (response.status_code, response.json, dict(response.headers))
        except Exception as error:  # re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    if errors:
        raise errors[0]
    return answers


@pytest.fixture
def live(make_product):
    return make_product(live=True, stock=10, per_user_limit=3)["id"]


def test_same_key_and_body_replays_the_first_reservation_and_takes_stock_once(
    client, live, user_headers, redis_client
):
    first = reserve(client, live, user_headers, 2, key="buy-1")
    again = reserve(client, live, user_headers, 2, key="buy-1")

    assert first.status_code == again.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert stock_of(redis_client, live) == 8
    assert hold_ids(redis_client, live) == [first.json["id"]]


def test_json_key_order_and_spacing_do_not_change_the_fingerprint(
    client, live, user_headers, redis_client
):
    headers = {**user_headers, "Idempotency-Key": "spacing", "Content-Type": "application/json"}
    url = f"/api/v1/sales/reserve/{live}"

    first = client.post(url, data='{"quantity": 1}', headers=headers)
    again = client.post(url, data='{ "quantity":1 }', headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["id"] == first.json["id"]
    assert stock_of(redis_client, live) == 9


def test_same_key_with_a_different_body_is_refused_as_reused(
    client, live, user_headers, redis_client
):
    first = reserve(client, live, user_headers, 1, key="buy-2")
    other = reserve(client, live, user_headers, 2, key="buy-2")

    assert first.status_code == 201
    assert other.status_code == 422
    assert other.json["code"] == "idempotency_key_reused"
    assert stock_of(redis_client, live) == 9
    assert hold_ids(redis_client, live) == [first.json["id"]]
    # The key still replays its own first answer.
    assert reserve(client, live, user_headers, 1, key="buy-2").json["id"] == first.json["id"]


def test_same_key_on_another_endpoint_is_refused_as_reused(client, live, user_headers, mongo_db):
    reservation = reserve(client, live, user_headers, 1, key="shared")
    order = client.post(
        "/api/v1/orders",
        json={"reservation_id": reservation.json["id"]},
        headers={**user_headers, "Idempotency-Key": "shared"},
    )

    assert reservation.status_code == 201
    assert order.status_code == 422
    assert order.json["code"] == "idempotency_key_reused"
    assert mongo_db.orders.count_documents({}) == 0


def test_different_users_may_use_the_same_key_independently(
    client, live, make_user, headers_for, redis_client, sale_state
):
    alice, bob = make_user(), make_user()

    mine = reserve(client, live, headers_for(alice), 1, key="same-key")
    theirs = reserve(client, live, headers_for(bob), 1, key="same-key")

    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert mine.json["id"] != theirs.json["id"]
    assert stock_of(redis_client, live) == 8
    assert hold_ids(redis_client, live) == sorted([mine.json["id"], theirs.json["id"]])
    assert sale_state(live)["users"].get(alice["id"], 0) == 1
    assert sale_state(live)["users"].get(bob["id"], 0) == 1


def test_retry_storm_on_reserve_makes_exactly_one_reservation(
    app, live, user_headers, redis_client
):
    answers = storm(app, lambda client: reserve(client, live, user_headers, 1, key="storm"))

    created = [body for status, body, _ in answers if status == 201]
    busy = [body for status, body, _ in answers if status == 409]
    assert len(created) + len(busy) == STORM, [status for status, _, _ in answers]
    assert created, "nobody got the reservation"
    assert len({body["id"] for body in created}) == 1
    assert {body["code"] for body in busy} <= {"idempotency_key_in_progress"}
    assert stock_of(redis_client, live) == 9
    assert hold_ids(redis_client, live) == [created[0]["id"]]
    assert redis_client.zcard(Keys(live).deadlines) == 1
    fresh = app.test_client()
    replay = reserve(fresh, live, user_headers, 1, key="storm")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json["id"] == created[0]["id"]


def test_retry_storm_on_checkout_makes_exactly_one_order(
    app, client, live, user, user_headers, mongo_db, redis_client, sale_state
):
    rid = reserve(client, live, user_headers, 2).json["id"]
    headers = {**user_headers, "Idempotency-Key": "checkout-storm"}

    answers = storm(
        app,
        lambda c: c.post("/api/v1/orders", json={"reservation_id": rid}, headers=headers),
    )

    created = [body for status, body, _ in answers if status == 201]
    busy = [body for status, body, _ in answers if status == 409]
    assert len(created) + len(busy) == STORM, [status for status, _, _ in answers]
    assert created, "nobody got the order"
    assert len({body["id"] for body in created}) == 1
    assert {body["code"] for body in busy} <= {"idempotency_key_in_progress"}
    [order] = list(mongo_db.orders.find({"reservation_id": rid}))
    assert str(order["_id"]) == created[0]["id"]
    assert order["status"] == "placed"
    assert mongo_db.orders.count_documents({"user_id": user["id"]}) == 1
    assert sale_state(live)["sold"] == 2
    assert stock_of(redis_client, live) == 8
    assert hold_ids(redis_client, live) == []


def test_a_client_error_is_stored_and_replayed(
    client, make_product, make_user, headers_for, admin_headers, redis_client
):
    pid = make_product(live=True, stock=1, per_user_limit=1)["id"]
    early, late = headers_for(make_user()), headers_for(make_user())
    assert reserve(client, pid, early, 1).status_code == 201

    sold_out = reserve(client, pid, late, 1, key="too-late")
    restocked = client.post(
        f"/api/v1/sales/restock/{pid}", json={"quantity": 1}, headers=admin_headers
    )
    replay = reserve(client, pid, late, 1, key="too-late")

    assert sold_out.status_code == 409
    assert sold_out.json["code"] == "sold_out"
    assert restocked.status_code == 200
    assert replay.status_code == 409
    assert replay.json == sold_out.json
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert stock_of(redis_client, pid) == 1  # the replay did not reserve the new unit
    fresh = reserve(client, pid, late, 1, key="after-restock")
    assert fresh.status_code == 201
    assert stock_of(redis_client, pid) == 0


def test_without_a_key_every_request_runs(client, live, user_headers, redis_client):
    first = reserve(client, live, user_headers, 1)
    second = reserve(client, live, user_headers, 1)

    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert first.json["id"] != second.json["id"]
    assert stock_of(redis_client, live) == 8
    assert len(hold_ids(redis_client, live)) == 2
    assert idempotency_records(redis_client) == []


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\tkey"], ids=["empty", "too-long", "tab"])
def test_an_invalid_key_is_refused_before_anything_runs(
    client, live, user_headers, redis_client, key
):
    response = reserve(client, live, user_headers, 1, key=key)

    assert response.status_code == 400
    assert response.json["code"] == "idempotency_key_invalid"
    assert stock_of(redis_client, live) == 10
    assert idempotency_records(redis_client) == []


class TestAKeyWhoseRequestDied:
    """A worker killed mid-request (SIGKILL: no clean-up runs) leaves its key locked
    only until the request timeout has passed, not long enough for holds to expire."""

    @pytest.fixture
    def app_config(self, app_config):
        return app_config | {"REQUEST_TIMEOUT_SECONDS": 1}

    def start_and_kill_a_keyed_reservation(self, app, monkeypatch, pid, headers):
        """Fork a process whose keyed reservation gets stuck in the view; kill it there."""
        from flashcart.sales import service as sale_service

        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child is killed mid-request
            try:
                os.close(reader)

                def stuck(*args, **kwargs):
                    os.write(writer, b"1")
                    time.sleep(60)

                monkeypatch.setattr(sale_service, "reserve", stuck)
                reserve(app.test_client(), pid, headers, key="dies")
            finally:
                os._exit(1)
        os.close(writer)
        ready, _, _ = select.select([reader], [], [], JOIN_TIMEOUT)
        assert ready and os.read(reader, 1) == b"1", "the child never reached the view"
        os.close(reader)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        return time.monotonic()

    def test_a_retry_succeeds_once_the_request_timeout_has_passed(
        self, app, client, live, user_headers, redis_client, monkeypatch
    ):
        killed_at = self.start_and_kill_a_keyed_reservation(app, monkeypatch, live, user_headers)
        bound = idempotency.lock_milliseconds(app.config) / 1000

        blocked = reserve(client, live, user_headers, key="dies")
        assert blocked.status_code == 409
        assert blocked.json["code"] == "idempotency_key_in_progress"
        assert hold_ids(redis_client, live) == []  # the dead request made no hold
        while (retry := reserve(client, live, user_headers, key="dies")).status_code == 409:
            assert time.monotonic() - killed_at < bound + 1, "the dead request's key is locked"
            time.sleep(0.1)

        assert retry.status_code == 201, retry.json
        assert hold_ids(redis_client, live) == [retry.json["id"]]
        assert stock_of(redis_client, live) == 9
        replay = reserve(client, live, user_headers, key="dies")
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json == retry.json


class TestARequestPastItsDeadline:
    """The app bounds every request by REQUEST_TIMEOUT_SECONDS itself (a gthread
    worker's threads are not killed at gunicorn's timeout): a reservation whose Redis
    stalls past it changes nothing, answers 503 and frees its key; the retry reserves
    once."""

    @pytest.fixture
    def app_config(self, app_config):
        return app_config | {"REQUEST_TIMEOUT_SECONDS": 1}

    def test_it_changes_nothing_and_the_retry_reserves_once(
        self, client, live, user_headers, redis_client, redis_server
    ):
        if redis_server is None:
            pytest.skip("needs a real redis-server (CLIENT PAUSE)")
        redis_client.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        late = reserve(client, live, user_headers, key="late")

        assert late.status_code == 503, late.json
        assert late.json["code"] == "deadline_passed"
        assert late.headers["Retry-After"] == "1"
        assert stock_of(redis_client, live) == 10
        assert hold_ids(redis_client, live) == []
        assert idempotency_records(redis_client) == []

        retry = reserve(client, live, user_headers, key="late")
        assert retry.status_code == 201, retry.json
        assert hold_ids(redis_client, live) == [retry.json["id"]]
        assert stock_of(redis_client, live) == 9
