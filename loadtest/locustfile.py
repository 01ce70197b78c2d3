"""A drop rehearsal against any FlashCart URL.

    make rehearse URL=https://staging.example.com ADMIN_EMAIL=... ADMIN_PASSWORD=...

An admin creates a product with DROP_UNITS units (limit DROP_LIMIT per customer)
and starts its sale; every simulated shopper signs up, logs in, then presses
"buy" as soon as the drop opens and checks out what it got. At the end the tool
asks the sale's audit for the truth and reports sold, rejected (by reason),
oversold (must be 0), throughput and latency. It exits non-zero on any oversell.

The target must let many sign-ups and logins come from one address: raise
RATELIMIT_SIGNUP_PER_IP / RATELIMIT_LOGIN_PER_IP there (README "Configuration").
"""

import collections
import os
import threading
import uuid

import gevent.event
import requests
from locust import HttpUser, events, task
from locust.exception import StopUser

UNITS = int(os.environ.get("DROP_UNITS", "500"))
LIMIT = int(os.environ.get("DROP_LIMIT", "1"))
OUTCOMES = collections.Counter()
_lock = threading.Lock()
drop = {}
# Shoppers sign up and log in first; the drop opens once every one of them is ready.
drop_open = gevent.event.Event()


def count(outcome):
    with _lock:
        OUTCOMES[outcome] += 1


def _admin_headers(host):
    response = requests.post(
        f"{host}/api/v1/auth/login",
        json={"email": os.environ["ADMIN_EMAIL"], "password": os.environ["ADMIN_PASSWORD"]},
        timeout=10,
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@events.test_start.add_listener
def open_the_drop(environment, **kwargs):
    host = environment.host.rstrip("/")
    headers = _admin_headers(host)
    product = requests.post(
        f"{host}/api/v1/products",
        json={
            "name": f"Rehearsal drop {uuid.uuid4().hex[:8]}",
            "description": "A drop rehearsal (loadtest/locustfile.py).",
            "price": "10.00",
            "stock": UNITS,
            "per_user_limit": LIMIT,
        },
        headers=headers,
        timeout=10,
    )
    product.raise_for_status()
    drop["id"] = product.json()["id"]
    requests.post(
        f"{host}/api/v1/sales/start/{drop['id']}", headers=headers, timeout=10
    ).raise_for_status()
    print(f"drop {drop['id']} is live: {UNITS} units, limit {LIMIT}")


@events.spawning_complete.add_listener
def everyone_is_ready(user_count, **kwargs):
    gevent.spawn_later(0, _open_when_logged_in, user_count)


def _open_when_logged_in(user_count):
    while ready[0] < user_count:
        gevent.sleep(0.05)
    print(f"{user_count} shoppers ready: the drop opens")
    drop_open.set()


ready = [0]


@events.test_stop.add_listener
def report(environment, **kwargs):
    host = environment.host.rstrip("/")
    audit = requests.get(
        f"{host}/api/v1/sales/audit/{drop['id']}", headers=_admin_headers(host), timeout=30
    ).json()
    reserve = environment.stats.get("reserve", "POST")
    oversold = max(audit["oversold"], audit["sold"] - UNITS)
    print("\nDrop rehearsal")
    print(
        f"  units {UNITS}, sold {audit['sold']}, held {audit['held']}, "
        f"available {audit['available']}, oversold {oversold}, audit ok {audit['ok']}"
    )
    print(f"  outcomes {dict(OUTCOMES)}")
    print(
        f"  reserve: {reserve.num_requests} requests, {reserve.num_failures} unexpected, "
        f"{reserve.total_rps:.0f} req/s, p50 {reserve.get_response_time_percentile(0.5):.0f} ms, "
        f"p99 {reserve.get_response_time_percentile(0.99):.0f} ms"
    )
    if oversold:
        environment.process_exit_code = 1


class Shopper(HttpUser):
    """One customer: signs up, then tries to buy until served or refused."""

    def on_start(self):
        email = f"rehearsal-{uuid.uuid4().hex}@example.com"
        password = uuid.uuid4().hex
        self.client.post(
            "/api/v1/auth/signup",
            json={"email": email, "password": password, "name": "Rehearsal"},
            name="signup",
        )
        token = self.client.post(
            "/api/v1/auth/login", json={"email": email, "password": password}, name="login"
        ).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        ready[0] += 1
        drop_open.wait()

    @task
    def buy(self):
        with self.client.post(
            f"/api/v1/sales/reserve/{drop['id']}",
            json={"quantity": 1},
            headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
            name="reserve",
            catch_response=True,
        ) as response:
            if response.status_code == 201:
                response.success()
                self.checkout(response.json()["id"])
                raise StopUser()
            code = _code(response)
            if code in ("sold_out", "insufficient_stock", "limit_exceeded", "busy"):
                response.success()  # the answers a drop expects
                count(code)
                if code != "busy":
                    raise StopUser()
            else:
                response.failure(f"{response.status_code} {code}")
                count(f"error {response.status_code}")

    def checkout(self, reservation_id):
        with self.client.post(
            "/api/v1/orders",
            json={"reservation_id": reservation_id},
            headers={**self.headers, "Idempotency-Key": reservation_id},
            name="checkout",
            catch_response=True,
        ) as response:
            if response.status_code in (200, 201):
                count("bought")
            else:
                response.failure(f"checkout {response.status_code} {_code(response)}")
                count("checkout failed")


def _code(response):
    try:
        return response.json().get("code")
    except ValueError:
        return None
