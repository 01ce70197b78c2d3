"""A drop rehearsal against any FlashCart URL.

    make rehearse URL=https://staging.example.com ADMIN_EMAIL=... ADMIN_PASSWORD=...

An admin creates a product with DROP_UNITS units (limit DROP_LIMIT per customer)
and starts its sale; every simulated shopper signs up, logs in, then presses
"buy" as soon as the drop opens and checks out what it got. At the end the tool
asks the sale's audit for the truth and reports sold, rejected (by reason),
oversold (must be 0), throughput and latency. It exits non-zero on any oversell.

It also writes, to REHEARSAL_RESULTS (default loadtest/results/), the run as JSON
(the product's stock polled every STOCK_POLL_S, and each second's requests by name:
statuses and latency percentiles) and a report with its charts beside it
(bench/report.py). Run it from the repository's root with `python -m locust`, as
`make rehearse` does, so that `bench` can be imported.

The target must let many sign-ups and logins come from one address: raise
RATELIMIT_SIGNUP_PER_IP / RATELIMIT_LOGIN_PER_IP there (README "Configuration").
"""

import collections
import json
import os
import random
import threading
import time
import uuid
from datetime import UTC, datetime

import gevent
import gevent.event
import requests
from locust import HttpUser, events, task
from locust.exception import StopUser

from bench import report as reports

UNITS = int(os.environ.get("DROP_UNITS", "500"))
LIMIT = int(os.environ.get("DROP_LIMIT", "1"))
RESULTS = os.environ.get("REHEARSAL_RESULTS") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results"
)
STOCK_POLL_S = float(os.environ.get("STOCK_POLL_S", "0.1"))
ADMISSION_ATTEMPTS, BACKOFF_CAP_S = 12, 30
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
    run["started"] = time.time()
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
    run["poller"] = gevent.spawn(_poll_stock, host)


@events.spawning_complete.add_listener
def everyone_is_ready(user_count, **kwargs):
    gevent.spawn_later(0, _open_when_logged_in, user_count)


def _open_when_logged_in(user_count):
    run["shoppers"] = user_count
    while ready[0] < user_count:
        gevent.sleep(0.05)
    print(f"{user_count} shoppers ready: the drop opens")
    run["opened"] = time.time()
    drop_open.set()


ready = [0]
# What the report draws: when the rehearsal began and the drop opened, each request
# (start time, name, status, ms) and the live stock (time, available) as it went.
run = {"started": time.time(), "opened": None, "shoppers": 0, "requests": [], "stock": []}


@events.request.add_listener
def record(name, response_time, response=None, start_time=None, **kwargs):
    status = getattr(response, "status_code", 0) or 0
    run["requests"].append((start_time or time.time(), name, status, response_time))


def _poll_stock(host):
    """The drop's live stock, read as a shopper's page would, every STOCK_POLL_S."""
    while True:
        try:
            answer = requests.get(f"{host}/api/v1/sales/stock/{drop['id']}", timeout=5)
            if answer.ok:
                run["stock"].append((time.time(), answer.json()["available"]))
        except requests.RequestException:
            pass  # a missed sample; the curve goes on from the next one
        gevent.sleep(STOCK_POLL_S)


def _percentile(ordered, q):
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def per_second(requests_made, started):
    """One row per second and request name: statuses and latency percentiles."""
    groups = collections.defaultdict(list)
    for at, name, status, ms in requests_made:
        groups[(max(0, int(at - started)), name)].append((status, ms))
    rows = []
    for (second, name), hits in sorted(groups.items()):
        ordered = sorted(ms for _, ms in hits)
        rows.append(
            {
                "t": second,
                "name": name,
                "statuses": dict(collections.Counter(str(status) for status, _ in hits)),
                "p50_ms": round(_percentile(ordered, 50), 1),
                "p95_ms": round(_percentile(ordered, 95), 1),
                "p99_ms": round(_percentile(ordered, 99), 1),
            }
        )
    return rows


def _answered(started, request_name, statuses):
    """When each `request_name` answered with one of `statuses`, from `started`."""
    return sorted(
        round(at + ms / 1000 - started, 3)
        for at, name, status, ms in run["requests"]
        if name == request_name and status in statuses
    )


def write_results(environment, audit, oversold, reserve):
    """The run as JSON, and its report beside it; returns both paths."""
    started = run["started"]
    when = datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds")
    result = {
        "kind": "rehearsal",
        "when": when,
        "target": environment.host,
        "product_id": drop["id"],
        "units": UNITS,
        "limit": LIMIT,
        "shoppers": run["shoppers"],
        "drop_opened_s": run["opened"] - started if run["opened"] else None,
        "audit": audit,
        "oversold": oversold,
        "outcomes": dict(OUTCOMES),
        "reserve": {
            "requests": reserve.num_requests,
            "unexpected": reserve.num_failures,
            "per_s": reserve.total_rps,
            "p50_ms": reserve.get_response_time_percentile(0.5),
            "p99_ms": reserve.get_response_time_percentile(0.99),
        },
        "stock": [(round(at - started, 3), available) for at, available in run["stock"]],
        # When each unit was reserved and each order placed (one unit each; at most one
        # per unit): the curves to the millisecond.
        "reserved_s": _answered(started, "reserve", (201,)),
        "orders_placed_s": _answered(started, "checkout", (200, 201)),
        "seconds": per_second(run["requests"], started),
    }
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"rehearsal-{when.replace(':', '')}.json")
    with open(path, "w") as out:
        json.dump(result, out, indent=2)
    return path, reports.write(path)


@events.test_stop.add_listener
def report(environment, **kwargs):
    host = environment.host.rstrip("/")
    if run.get("poller"):
        run["poller"].kill()
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
    json_path, html_path = write_results(environment, audit, oversold, reserve)
    print(f"  JSON: {json_path}\n  report: {html_path}")
    if oversold:
        environment.process_exit_code = 1


class Shopper(HttpUser):
    """One customer: signs up, then tries to buy until served or refused."""

    def on_start(self):
        email = f"rehearsal-{uuid.uuid4().hex}@example.com"
        password = uuid.uuid4().hex
        self._until_admitted(
            "/api/v1/auth/signup",
            {"email": email, "password": password, "name": "Rehearsal"},
            name="signup",
        )
        token = self._until_admitted(
            "/api/v1/auth/login", {"email": email, "password": password}, name="login"
        ).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        ready[0] += 1
        drop_open.wait()
        # While it waited, the server may have closed its idle connection (keep-alive
        # timeout): the first click would fail on it. A shopper's browser opens a new one.
        self.client.close()

    def _until_admitted(self, path, body, name):
        """POST until the server admits it: a refusal (429, or 503 while the host's
        password checks are all busy) is retried after Retry-After, doubled at each
        refusal in a row and with jitter, as docs/security.md asks of storefronts."""
        for attempt in range(ADMISSION_ATTEMPTS):
            with self.client.post(path, json=body, name=name, catch_response=True) as response:
                if response.status_code not in (429, 503):
                    return response
                response.success()  # a refusal with Retry-After is the server working
                count(f"{name} refused {response.status_code}")
            wait = float(response.headers.get("Retry-After") or 1) * 2 ** min(attempt, 5)
            gevent.sleep(min(BACKOFF_CAP_S, wait) * (1 + random.random()))
        count(f"{name} gave up")
        ready[0] += 1  # the drop does not wait for a shopper who left
        raise StopUser()

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
