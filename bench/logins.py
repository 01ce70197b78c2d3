"""Logins: `python -m bench.logins` (also part 4 of `make bench`).

A password check is the most expensive request there is, and people log in during
the minutes before a drop opens. This measures, on the app deployed as
docker-compose.yml deploys it (nginx in front; log-ins and sign-ups on the `logins`
service's gunicorn, with its settings; the rest on the API's), with the production
settings and accounts in each gunicorn's (in-memory) MongoDB:
  1. logins/s, p99 and CPU per login at 16 and 64 connections (wrk, a distinct
     account per request), each against /healthz next to it, alternating: once with
     every login checked (the host's capacity: the per-host admission and the bound
     on checks in flight raised out of reach, as the load generator's own address
     limits are) and once as shipped (429 beyond RATELIMIT_PASSWORD_CHECKS_PER_HOST,
     503 beyond PASSWORD_CHECKS_IN_FLIGHT_PER_HOST checks at once);
  2. the pre-drop storm, as shipped: 10,000 distinct accounts arrive over
     ARRIVAL_SECONDS (the five minutes before a drop, compressed) and each logs in
     once, waiting Retry-After when refused, doubled at each refusal in a row and
     with jitter (as a storefront should); meanwhile reservations arrive at a
     steady RESERVE_RATE, and their latency is compared with the same load before
     and after the storm.
Every shopper comes from one address, the load generator's: its per-address limits
(nginx's ceiling, RATELIMIT_LOGIN_PER_IP) are raised out of reach
(bench/servers.py); every other limit is as shipped. With
ARGON2_* (or RATELIMIT_PASSWORD_CHECKS_PER_HOST) set in the environment, the servers
use those: that is how the figures "before" were taken.
"""

import argparse
import contextlib
import heapq
import http.client
import json
import math
import multiprocessing
import os
import queue
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime

from bench import http_level
from bench import report as reports
from bench.app import ACCOUNT_PASSWORD
from bench.servers import (
    LOAD_GENERATOR_CEILING,
    LOAD_GENERATOR_EDGE_CEILING,
    Gunicorn,
    RedisServer,
    cpu_seconds,
)
from tests.support import compose, nginx

LOGIN = "/api/v1/auth/login"
SECRET = "bench-secret-" + "x" * 40
ACCOUNTS = 10_000
ARRIVAL_SECONDS = 120  # 10,000 arrivals: 83/s, 2.5 times the 5 minutes' 33/s
STORM_CLIENTS = 64  # logins in flight at once, at most
RESERVE_RATE = 100  # reservations/s, steady, while the storm runs and around it
CALM_SECONDS = 15  # the reservation load alone, before and after the storm
STORM_LIMIT_SECONDS = 600  # a storm the host cannot serve is cut off here
BACKOFF_CAP_SECONDS = 30

# The load generator is one address standing for every shopper's: the per-address
# limits would refuse it, so they are raised out of its reach (still counted).
STORM_ENV = {
    "JWT_SECRET_KEY": SECRET,
    "RATELIMIT_LOGIN_PER_IP": LOAD_GENERATOR_CEILING,
}
# The host's capacity: the same, with the per-host admission out of reach too.
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# Every worker may check a password at once: the bound on checks in flight lifted too.
CAPACITY_ENV = {
    **STORM_ENV,
    "RATELIMIT_PASSWORD_CHECKS_PER_HOST": LOAD_GENERATOR_CEILING,
    "PASSWORD_CHECKS_IN_FLIGHT_PER_HOST": "64",
}


def write_accounts(count):
    """(emails file, login bodies file) for `count` distinct accounts."""
    emails = [f"shopper{n}@bench.example.com" for n in range(count)]
    paths = []
    for lines in (emails, [json.dumps({"email": e, "password": ACCOUNT_PASSWORD}) for e in emails]):
        handle, path = tempfile.mkstemp(prefix="flashcart-accounts-", suffix=".txt")
        with os.fdopen(handle, "w") as out:
            out.write("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def server(redis_url, emails, env):
    return Gunicorn(redis_url, env=env, app=f"bench.app:with_accounts({emails!r})")


class Deployment:
    """The API as docker-compose.yml deploys it on a host: nginx in front, sending
    log-ins and sign-ups to the `logins` service's gunicorn (its workers and
    settings) and everything else to the API's; both with `env` added."""

    def __init__(self, redis_url, emails, env):
        self.api = server(redis_url, emails, {**compose.service_settings("api"), **env})
        self.logins = server(redis_url, emails, {**compose.service_settings("logins"), **env})
        # nginx as compose runs it, but for the ceiling per address (one stands for all).
        self.edge_ceiling = LOAD_GENERATOR_EDGE_CEILING
        self.proxy = None
        self._stack = contextlib.ExitStack()

    @staticmethod
    def require():
        if not nginx.installed():
            sys.exit("nginx is not installed (apt-get install nginx): the logins run behind it")

    def __enter__(self):
        self.require()
        with self._stack as stack:
            stack.enter_context(self.api)
            stack.enter_context(self.logins)
            self.proxy = stack.enter_context(
                nginx.Nginx(
                    f"127.0.0.1:{self.api.port}",
                    f"127.0.0.1:{self.logins.port}",
                    ceiling=self.edge_ceiling,
                )
            )
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc):
        self._stack.close()

    @property
    def url(self):
        return self.proxy.url

    def pids(self):
        return {
            "logins": self.logins.process.pid,
            "api": self.api.process.pid,
            "nginx": self.proxy.process.pid,
        }


def _percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# -- 1. logins/s at 16 and 64 connections (wrk) ----------------------------------------


def login_table(app, redis_server, bodies, connections_levels, seconds, rounds=3):
    watch = {**app.pids(), "redis": redis_server.process.pid}
    rows, first = [], 0
    for connections in connections_levels:
        health, result = [], []
        for _ in range(rounds):
            health.append(
                http_level.wrk(app.url, "GET", "/healthz", connections, seconds, watch=watch)
            )
            run = http_level.wrk(
                app.url,
                "POST",
                LOGIN,
                connections,
                seconds,
                watch=watch,
                bodies=bodies,
                first_token=first,
            )
            first += run["requests"]
            result.append(run)
        result, health = http_level.combine(result), http_level.combine(health)
        logins = result["statuses"].get("200", 0)
        duration = result["requests"] / result["requests_per_s"] if result["requests"] else 0
        rows.append(
            {
                "connections": connections,
                "result": result,
                "health": health,
                "logins_per_s": logins / duration if duration else 0.0,
                # The logins service's CPU, refusals' included, over the logins it made.
                "app_cpu_ms_per_login": (
                    result["cpu_s"]["logins"] / logins * 1000 if logins else None
                ),
                "cpu_ms_per_request": {
                    name: s / result["requests"] * 1000 for name, s in result["cpu_s"].items()
                },
            }
        )
    return rows


# -- 2. the storm, and reservations meanwhile -------------------------------------------


def _connect(url):
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


# A kept-alive connection the server has closed while idle (nginx does after its
# keepalive_timeout) fails at the next request before any answer: HTTP clients then
# send it again on a new connection, once. (A reset may come after the server acted,
# so it is not sent again.)
_STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError)


def _request(conn, url, method, path, body, headers, resend=True):
    """(status, Retry-After or None, connection) - reconnecting after a socket error."""
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After"), conn
    except _STALE_CONNECTION:
        conn.close()
        if resend:
            return _request(_connect(url), url, method, path, body, headers, resend=False)
        return None, None, _connect(url)
    except (OSError, http.client.HTTPException):
        conn.close()
        return None, None, _connect(url)


def _storm(url, bodies_path, count, arrival_s, clients, limit_s, out):
    """Each account arrives once (random times over `arrival_s`) and logs in; refused,
    it tries again after Retry-After, backing off. Puts its records on `out`."""
    with open(bodies_path) as lines:
        bodies = [next(lines).strip() for _ in range(count)]
    rng = random.Random(21)
    started = time.monotonic() + 0.5
    arrivals = sorted(rng.uniform(0, arrival_s) for _ in range(count))
    due = [(started + at, n, started + at) for n, at in enumerate(arrivals)]
    heapq.heapify(due)
    lock = threading.Lock()
    logins, refusals, statuses, attempts = [], [], Counter(), Counter()
    headers = {"Content-Type": "application/json"}

    def client():
        conn = _connect(url)
        jitter = random.Random()
        while True:
            with lock:
                if not due:
                    return
                at, n, arrived = due[0]
                now = time.monotonic()
                if now - started > limit_s:
                    return
                if at <= now:
                    heapq.heappop(due)
            if at > now:
                time.sleep(min(at - now, 0.02))
                continue
            sent = time.monotonic()
            status, retry_after, conn = _request(conn, url, "POST", LOGIN, bodies[n], headers)
            done = time.monotonic()
            with lock:
                statuses[str(status)] += 1
                attempts[n] += 1
                if status == 200:
                    logins.append((done - started, done - sent, done - arrived))
                else:
                    refusals.append(done - started)
                    # Retry-After, doubled at each refusal in a row, plus up to as much
                    # again at random: what a storefront should do (docs/security.md).
                    wait = float(retry_after) if retry_after else 1.0
                    wait = min(BACKOFF_CAP_SECONDS, wait * 2 ** (attempts[n] - 1))
                    heapq.heappush(due, (done + wait * (1 + jitter.random()), n, arrived))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(
        {
            "started": started,
            "ended": time.monotonic(),
            "logins": logins,
            "refusals": refusals,
            "statuses": dict(statuses),
            "left": count - len(logins),
            "attempts_max": max(attempts.values()) if attempts else 0,
        }
    )


def _reserve_load(url, path, tokens_path, rate, stop, out, threads=64):
    """Reservations at a steady `rate`, each with a new user's token, until `stop` is
    set. Latency counts from when a request was due, so a stall is not hidden by the
    requests it kept from being sent."""
    with open(tokens_path) as lines:
        tokens = lines.read().split()
    started = time.monotonic() + 0.2
    records, lock = [], threading.Lock()

    def sender(i):
        conn = _connect(url)
        k = i
        while not stop.is_set() and k < len(tokens):
            due = started + k / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            headers = {"Authorization": f"Bearer {tokens[k]}", "Content-Type": "application/json"}
            status, _, conn = _request(conn, url, "POST", path, "{}", headers)
            done = time.monotonic()
            with lock:
                records.append((due, done - due, status))
            k += threads

    workers = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put(records)


def _reserve_figures(records, seconds):
    latencies = [lat * 1000 for _, lat, _ in records]
    return {
        "requests": len(records),
        "per_s": len(records) / seconds if seconds > 0 else 0.0,
        "statuses": dict(Counter(str(status) for _, _, status in records)),
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
    }


def _at_capacity(logins, refusals):
    """Logins a second over the seconds in which someone was refused: the host was
    full then, so this is what it gave, apart from the shoppers' back-off (which
    leaves it idle at the end, while the last ones wait to try again)."""
    full = {math.floor(at) for at in refusals}
    made = sum(1 for at, _, _ in logins if math.floor(at) in full)
    return made / len(full) if full else None


def _timeline(records, logins, storm_started):
    """Per second from the storm's start (negative before it): the reservations'
    p50 and p99 by the second each was due, and the logins made in it."""
    latencies = defaultdict(list)
    for due, latency, _ in records:
        latencies[math.floor(due - storm_started)].append(latency * 1000)
    made = Counter(math.floor(at) for at, _, _ in logins)
    return [
        {
            "t": second,
            "reserve_p50_ms": _percentile(latencies[second], 50),
            "reserve_p99_ms": _percentile(latencies[second], 99),
            "logins": made.get(second, 0),
        }
        for second in sorted(latencies)
    ]


def storm(
    app,
    redis_url,
    bodies,
    count,
    tokens,
    arrival_s=ARRIVAL_SECONDS,
    calm_s=CALM_SECONDS,
    limit_s=STORM_LIMIT_SECONDS,
):
    """The storm with reservations before, during and after it."""
    product_id = http_level.open_sale(redis_url, stock=http_level.PLENTY, limit=http_level.PLENTY)
    path = f"/api/v1/sales/reserve/{product_id}"
    context = multiprocessing.get_context("spawn")
    stop, reserve_out, storm_out = context.Event(), context.Queue(), context.Queue()
    reserves = context.Process(
        target=_reserve_load, args=(app.url, path, tokens, RESERVE_RATE, stop, reserve_out)
    )
    reserves.start()
    time.sleep(calm_s)
    cpu_before = cpu_seconds(app.logins.process.pid)
    logins = context.Process(
        target=_storm,
        args=(app.url, bodies, count, arrival_s, STORM_CLIENTS, limit_s, storm_out),
    )
    logins.start()
    try:
        # Clients stuck behind a server that no longer answers are not waited for.
        result = storm_out.get(timeout=limit_s + 120)
    except queue.Empty:
        logins.terminate()
        stop.set()
        reserves.terminate()
        raise RuntimeError(f"the storm did not end within {limit_s + 120:.0f} s") from None
    logins.join()
    cpu_during = cpu_seconds(app.logins.process.pid) - cpu_before
    time.sleep(calm_s)
    stop.set()
    records = reserve_out.get(timeout=120)
    reserves.join()

    done = result["logins"]
    start, end = result["started"], result["ended"]
    first_due, last_due = records_span = (
        min(due for due, _, _ in records),
        max(due for due, _, _ in records),
    )
    during = [r for r in records if start <= r[0] < end]
    calm = [r for r in records if r[0] < start or r[0] >= end]
    calm_s = (start - first_due) + max(0.0, last_due - end)
    spent = max(t for t, _, _ in done) if done else 0.0
    return {
        "accounts": count,
        "arrival_s": arrival_s,
        "clients": STORM_CLIENTS,
        "logins": len(done),
        "left": result["left"],
        "storm_s": spent,
        "logins_per_s": len(done) / spent if spent else 0.0,
        "logins_per_s_at_capacity": _at_capacity(done, result["refusals"]),
        "seconds_at_capacity": len({math.floor(at) for at in result["refusals"]}),
        "statuses": result["statuses"],
        "attempts_max": result["attempts_max"],
        "login_p50_ms": _percentile([lat * 1000 for _, lat, _ in done], 50),
        "login_p99_ms": _percentile([lat * 1000 for _, lat, _ in done], 99),
        "arrival_to_login_p50_s": _percentile([wait for _, _, wait in done], 50),
        "arrival_to_login_p99_s": _percentile([wait for _, _, wait in done], 99),
        "app_cpu_s_during": cpu_during,
        "reserve_rate": RESERVE_RATE,
        "reserve_during": _reserve_figures(during, end - start),
        "reserve_calm": _reserve_figures(calm, calm_s),
        "reserve_before": _reserve_figures([r for r in records if r[0] < start], start - first_due),
        "reserve_after": _reserve_figures(
            [r for r in records if r[0] >= end], max(0.0, last_due - end)
        ),
        "timeline": _timeline(records, done, start),
        "reserve_s": records_span[1] - records_span[0],
    }


# -- the report ----------------------------------------------------------------------


def measure(
    redis_server,
    connections_levels=(16, 64),
    seconds=3,
    accounts=ACCOUNTS,
    quick=False,
    storm_limit_s=STORM_LIMIT_SECONDS,
    with_storm=True,
):
    from config import ProductionConfig as shipped

    emails, bodies = write_accounts(accounts)
    arrival_s = ARRIVAL_SECONDS * accounts / ACCOUNTS
    # One new user per reservation, for as long as the longest storm lasts.
    tokens = http_level.make_tokens(
        int(RESERVE_RATE * (min(storm_limit_s, arrival_s * 5) + CALM_SECONDS * 2 + 30)),
        SECRET,
        redis_server.url,
    )
    report = {
        "load_average": os.getloadavg(),
        "argon2": {
            "memory_kib": shipped.ARGON2_MEMORY_KIB,
            "time_cost": shipped.ARGON2_TIME_COST,
            "parallelism": shipped.ARGON2_PARALLELISM,
        },
        "admission": shipped.RATELIMIT_PASSWORD_CHECKS_PER_HOST,
        "in_flight": shipped.PASSWORD_CHECKS_IN_FLIGHT_PER_HOST,
    }
    try:
        with Deployment(redis_server.url, emails, CAPACITY_ENV) as app:
            report["capacity"] = login_table(app, redis_server, bodies, connections_levels, seconds)
        with Deployment(redis_server.url, emails, STORM_ENV) as app:
            report["shipped"] = login_table(app, redis_server, bodies, connections_levels, seconds)
        if not with_storm:
            return report
        # A fresh server: no account has logged in yet, no limiter window is open.
        with Deployment(redis_server.url, emails, STORM_ENV) as app:
            report["storm"] = storm(
                app,
                redis_server.url,
                bodies,
                accounts,
                tokens,
                arrival_s,
                calm_s=5 if quick else CALM_SECONDS,
                limit_s=storm_limit_s,
            )
    finally:
        for path in (emails, bodies, tokens):
            os.unlink(path)
    return report


def print_report(report):
    a = report["argon2"]
    load = ", ".join(f"{x:.1f}" for x in report["load_average"])
    print(
        f"\n4. Logins: argon2id {a['memory_kib']} KiB, t={a['time_cost']}, p={a['parallelism']}; "
        f"admission {report['admission'] or 'off'} and at most "
        f"{report.get('in_flight', '-')} at once per host; load average {load}"
    )
    print(
        f"   {'':<22} {'conns':>5} {'logins/s':>8} {'req/s':>7} {'health/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU ms/login':>16}  statuses"
    )
    for name, key in (("every login checked", "capacity"), ("as shipped", "shipped")):
        for row in report[key]:
            r = row["result"]
            cpu = row["app_cpu_ms_per_login"]
            print(
                f"   {name:<22} {row['connections']:>5} {row['logins_per_s']:>8.1f} "
                f"{r['requests_per_s']:>7.0f} {row['health']['requests_per_s']:>8.0f} "
                f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
                f"{(f'{cpu:.1f}' if cpu else '-'):>16}  {r['statuses']} "
                f"socket errors: {r['socket_errors']}"
            )
    s = report.get("storm")
    if s is None:
        return
    print(
        f"\n   Storm: {s['accounts']} accounts arriving over {s['arrival_s']:.0f} s, "
        f"{s['clients']} clients; refused ones retry after Retry-After"
    )
    print(
        f"   logged in {s['logins']} (left {s['left']}) in {s['storm_s']:.0f} s: "
        f"{s['logins_per_s']:.1f} logins/s; answers {s['statuses']}; at most "
        f"{s['attempts_max']} tries for one account"
    )
    if s.get("logins_per_s_at_capacity") is not None:
        print(
            f"   while someone was refused ({s['seconds_at_capacity']} s): "
            f"{s['logins_per_s_at_capacity']:.1f} logins/s"
        )
    print(
        f"   login request p50 {s['login_p50_ms']:.0f} ms, p99 {s['login_p99_ms']:.0f} ms; "
        f"arrival to logged in p50 {s['arrival_to_login_p50_s']:.1f} s, "
        f"p99 {s['arrival_to_login_p99_s']:.1f} s"
    )
    for name in ("calm", "during"):
        r = s[f"reserve_{name}"]
        label = "without the storm" if name == "calm" else "during the storm"
        print(
            f"   reserve at {s['reserve_rate']}/s {label:<18}: {r['per_s']:.0f}/s, "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['statuses']}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 accounts, short runs")
    parser.add_argument("--accounts", type=int, help=f"storm accounts (default {ACCOUNTS})")
    parser.add_argument(
        "--storm-limit",
        type=float,
        default=STORM_LIMIT_SECONDS,
        help=f"cut the storm off after this many seconds (default {STORM_LIMIT_SECONDS})",
    )
    parser.add_argument("--no-storm", action="store_true", help="the login table only")
    args = parser.parse_args()
    accounts = args.accounts or (1000 if args.quick else ACCOUNTS)
    with RedisServer() as redis_server:
        report = measure(
            redis_server,
            seconds=1 if args.quick else 3,
            accounts=accounts,
            quick=args.quick,
            storm_limit_s=args.storm_limit,
            with_storm=not args.no_storm,
        )
    print_report(report)
    os.makedirs(RESULTS, exist_ok=True)
    when = datetime.now(UTC).isoformat(timespec="seconds").replace(":", "")
    path = os.path.join(RESULTS, f"logins-{when}.json")
    with open(path, "w") as out:
        json.dump(report, out, indent=2)
    print(f"\nJSON: {path}\nReport: {reports.write(path)}")


if __name__ == "__main__":
    main()
