"""Redis level: the app's reservation engine against the single-script yardstick.

Each client is a thread with its own user, reserving one unit at a time as fast as
it can for a fixed time; clients are spread over a few processes so the Python
side is not one GIL.
"""

import multiprocessing
import threading
import time

import redis
from bson import ObjectId

from bench.reference import NaiveWatchReservations, ScriptReservations
from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.records import SalePlan

PLENTY = 10**9


def _client_loop(kind, url, product_id, user_id, seconds, out):
    client = redis.Redis.from_url(url, decode_responses=True)
    retries = [0]

    def count_retry():
        retries[0] += 1

    if kind == "engine":
        engine = Inventory(client, max_attempts=10_000, on_retry=count_retry)
    elif kind == "naive":
        engine = NaiveWatchReservations(client, on_retry=count_retry)
    else:
        engine = ScriptReservations(client)
    latencies = []
    errors = 0
    stop = time.perf_counter() + seconds
    while (start := time.perf_counter()) < stop:
        try:
            engine.reserve(product_id, user_id, 1)
            latencies.append(time.perf_counter() - start)
        except Exception:  # noqa: BLE001 - counted, the run goes on
            errors += 1
    out.append((latencies, retries[0], errors))


def _process(kind, url, product_id, users, seconds, queue):
    out = []
    threads = [
        threading.Thread(target=_client_loop, args=(kind, url, product_id, u, seconds, out))
        for u in users
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(out)


def prepare(kind, url):
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    product_id = str(ObjectId())
    if kind == "engine":
        Inventory(client).open_sale(product_id, SalePlan("live", PLENTY, PLENTY, {}))
    else:
        ScriptReservations(client).open(product_id, PLENTY, PLENTY)  # naive shares its layout
    return product_id


def measure(kind, url, clients, seconds=3.0, processes=4):
    """Run `clients` concurrent reservers for `seconds`; returns figures."""
    product_id = prepare(kind, url)
    processes = min(processes, clients)
    users = [f"user-{i}" for i in range(clients)]
    queue = multiprocessing.get_context("fork").Queue()
    workers = [
        multiprocessing.get_context("fork").Process(
            target=_process,
            args=(kind, url, product_id, users[i::processes], seconds, queue),
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    results = [row for _ in workers for row in queue.get(timeout=seconds + 60)]
    for worker in workers:
        worker.join(timeout=30)
    latencies = sorted(lat for lats, _, _ in results for lat in lats)
    successes = len(latencies)
    retries = sum(r for _, r, _ in results)
    return {
        "kind": kind,
        "clients": clients,
        "successes_per_s": successes / seconds,
        "retries_per_success": retries / successes if successes else None,
        "errors": sum(e for _, _, e in results),
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
    }


def _percentile(sorted_values, pct):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))
    return sorted_values[index] * 1000
