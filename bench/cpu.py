"""CPU per operation, without the network or a load generator: `make bench-cpu`.

`make bench` measures throughput under load, with the box's noise in it. This
measures what one operation costs the Python process, in CPU microseconds
(`time.process_time`, best of 3 rounds), so a change can be weighed before and after:
  1. one reservation (one client): the engine, the single-script yardstick and the
     first engine's design;
  2. one request through the app (production settings, called as gunicorn calls
     it, without gunicorn): the floor (bench/floor.py), /healthz, reserve (with a
     token not seen before, as in `make bench`, and with one seen before), sold-out
     reserve, stock read and product page;
  3. one password check (argon2id verify) for each setting OWASP lists as equivalent,
     and the former default (bench/passwords.py).
The app's ratios against /healthz leave out what the server adds to every request,
so they are lower than `make bench`'s.
"""

import functools
import itertools
import logging
import os
import sys
import time

import redis
from bson import ObjectId
from werkzeug.test import EnvironBuilder

from bench import http_level, passwords
from bench.reference import NaiveWatchReservations, ScriptReservations
from bench.servers import RedisServer
from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.records import SalePlan

SECRET = "bench-secret-" + "x" * 40
ROUNDS = 3
FLOOR = "floor (bare Flask)"


def best_cpu_us(rounds):
    """Least CPU time per call among `rounds` (lists of calls), in µs."""
    best = None
    for calls in rounds:
        started = time.process_time()
        for call in calls:
            call()
        spent = (time.process_time() - started) / len(calls) * 1e6
        best = spent if best is None else min(best, spent)
    return best


def reservation_costs(url, count):
    client = redis.Redis.from_url(url, decode_responses=True)
    engines = {
        "engine": Inventory(client, max_attempts=10_000),
        "script": ScriptReservations(client),
        "naive": NaiveWatchReservations(client),
    }
    costs = {}
    for name, engine in engines.items():
        product_id = str(ObjectId())
        if name == "engine":
            engine.open_sale(product_id, SalePlan("live", 10**9, 10**9, {}))
        else:
            ScriptReservations(client).open(product_id, 10**9, 10**9)
        reserve = functools.partial(engine.reserve, product_id, "u")
        costs[name] = best_cpu_us([[reserve] * count for _ in range(ROUNDS)])
    return costs


def app_and_scenarios(url, requests, seen):
    """The request scenarios: name -> (the app to serve it, a function making the
    next WSGI environ), for up to `requests` requests each. The app has production
    settings (logs formatted, then dropped); the first scenario is the floor
    (bench/floor.py), a bare Flask endpoint. Every reserve brings a token not seen
    before, as in `make bench`, except "reserve, token seen", which cycles over
    `seen` tokens."""
    from bench import floor
    from bench.app import create

    app = create(REDIS_URL=url, JWT_SECRET_KEY=SECRET)
    plenty = http_level.open_sale(url, stock=10**9, limit=10**9)
    sold_out = http_level.open_sale(url, stock=0, limit=1)
    http_level.cache_product(url, plenty)
    tokens_path = http_level.make_tokens(requests * 2 + seen, SECRET, url)
    with open(tokens_path) as lines:
        tokens = iter(lines.read().split())
    os.unlink(tokens_path)
    # After every app is built (each sets up logging again): logs are still
    # formatted, as in production, then dropped.
    quiet = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    for handler in logging.getLogger().handlers + logging.getLogger("flashcart").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(quiet)
    seen_tokens = itertools.cycle([next(tokens) for _ in range(seen)])

    def environ(method, path, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return EnvironBuilder(method=method, path=path, headers=headers).get_environ()

    reserve = f"/api/v1/sales/reserve/{plenty}"
    return {
        FLOOR: (floor.app, lambda: environ("GET", "/")),
        "/healthz": (app, lambda: environ("GET", "/healthz")),
        "reserve": (app, lambda: environ("POST", reserve, next(tokens))),
        "reserve, token seen": (app, lambda: environ("POST", reserve, next(seen_tokens))),
        "reserve, sold out": (
            app,
            lambda: environ("POST", f"/api/v1/sales/reserve/{sold_out}", next(tokens)),
        ),
        "stock read": (app, lambda: environ("GET", f"/api/v1/sales/stock/{plenty}")),
        "product page": (app, lambda: environ("GET", f"/api/v1/products/{plenty}")),
    }


def _start_response(status, headers, exc_info=None):
    if status[0] == "5":
        raise RuntimeError(f"the app answered {status}")


def serve(app, environ):
    """One request, as gunicorn hands it to the app."""
    b"".join(app.wsgi_app(environ, _start_response))


def request_costs(url, count):
    scenarios = app_and_scenarios(url, requests=count * ROUNDS, seen=count)
    costs = {}
    for name, (app, make_environ) in scenarios.items():
        rounds = [
            [functools.partial(serve, app, make_environ()) for _ in range(count)]
            for _ in range(ROUNDS)
        ]
        costs[name] = best_cpu_us(rounds)
    return costs


def main():
    count = 500 if "--quick" in sys.argv else 3000
    with RedisServer() as server:
        reservations = reservation_costs(server.url, count)
        requests = request_costs(server.url, count)
    print("\n1. One reservation, CPU µs (one client)")
    for name, cost in reservations.items():
        print(f"   {name:<8} {cost:7.0f}   engine/this {cost / reservations['engine']:.2f}")
    print("\n2. One request through the app, CPU µs (production settings, no server)")
    health, floor = requests["/healthz"], requests[FLOOR]
    for name, cost in requests.items():
        print(
            f"   {name:<20} {cost:7.0f}   /healthz/this {health / cost:.2f}   "
            f"floor/this {floor / cost:.2f}"
        )
    checks = 5 if "--quick" in sys.argv else 20
    passwords.print_table(passwords.table(checks=checks), passwords.configured_parameters())


if __name__ == "__main__":
    main()
