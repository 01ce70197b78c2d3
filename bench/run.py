"""FlashCart benchmark: `make bench` (or `python -m bench.run --quick`).

Starts its own redis-server and the app under gunicorn (production settings), then
measures three things, each against a baseline taken in the same run:
  1. Redis level: the reservation engine vs a single-script yardstick, with the
     first engine's design (WATCH on one hash) beside it as the "before".
  2. HTTP level (wrk): reserve, sold-out reserve, stock read and cached product
     read, each against the bare /healthz endpoint measured next to it, alternating
     (3 rounds of [healthz, scenario]; load on a shared machine drifts within a minute),
     with the CPU each request cost the app's workers, redis-server and wrk.
  3. A drop rehearsal: many distinct users race for a fixed stock.
  4. Logins (bench/logins.py): logins/s, p99 and CPU per login at 16 and 64
     connections, and the pre-drop storm with reservations measured while it runs.
  5. Durability (bench/durability.py): reserve with REDIS_ACK_REPLICAS=1 against a
     primary with one local replica, beside the default (`--only durability` runs
     just this).
Prints a table and writes JSON to bench/results/, with a report with charts beside it
(bench/report.py). It asserts nothing about speed.
"""

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime

import redis

from bench import durability, http_level, logins, redis_level
from bench import report as reports
from bench.servers import Gunicorn, RedisServer
from flashcart.sales.engine.inventory import Inventory

SECRET = "bench-secret-" + "x" * 40
# The app's engine, the first engine's design (one watched hash) and the yardstick.
KINDS = ("script", "engine", "naive")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def redis_table(url, clients_levels, seconds):
    rows = []
    for clients in clients_levels:
        figures = {kind: redis_level.measure(kind, url, clients, seconds) for kind in KINDS}
        script = figures["script"]["successes_per_s"]
        rows.append(
            {
                "clients": clients,
                **figures,
                "ratio": figures["engine"]["successes_per_s"] / script,
                "naive_ratio": figures["naive"]["successes_per_s"] / script,
            }
        )
    return rows


def _cpu_us_per_request(combined):
    """CPU µs per request by process ("app", "redis", "wrk") over combined runs."""
    return {name: s / combined["requests"] * 1e6 for name, s in combined["cpu_s"].items()}


def http_table(server, redis_server, connections_levels, seconds, tokens, rounds=3):
    redis_url = redis_server.url
    # The box's two cores serve the workers, redis-server and wrk alike.
    watch = {"app": server.process.pid, "redis": redis_server.process.pid}
    plenty = http_level.open_sale(redis_url, stock=http_level.PLENTY, limit=http_level.PLENTY)
    sold_out = http_level.open_sale(redis_url, stock=0, limit=1)
    http_level.cache_product(redis_url, plenty)
    scenarios = [
        ("reserve", "POST", f"/api/v1/sales/reserve/{plenty}", tokens),
        ("reserve sold out", "POST", f"/api/v1/sales/reserve/{sold_out}", tokens),
        ("stock read", "GET", f"/api/v1/sales/stock/{plenty}", None),
        ("product (cached)", "GET", f"/api/v1/products/{plenty}", None),
    ]
    rows = []
    # Each run takes tokens no earlier run used, so workers have not verified (and
    # remembered) them: every reserve pays for a token seen for the first time.
    first_token = 0
    for connections in connections_levels:
        for name, method, path, token_file in scenarios:
            # Load on a shared machine drifts within a minute, so each scenario gets its
            # own baseline, alternating with it: [healthz, scenario] x rounds.
            health, result = [], []
            for _ in range(rounds):
                health.append(
                    http_level.wrk(server.url, "GET", "/healthz", connections, seconds, watch=watch)
                )
                run = http_level.wrk(
                    server.url,
                    method,
                    path,
                    connections,
                    seconds,
                    token_file,
                    first_token=first_token,
                    watch=watch,
                )
                if token_file:
                    first_token += run["requests"]
                result.append(run)
            round_ratios = [
                run["requests_per_s"] / base["requests_per_s"]
                for base, run in zip(health, result, strict=True)
            ]
            health, result = http_level.combine(health), http_level.combine(result)
            cpu, health_cpu = _cpu_us_per_request(result), _cpu_us_per_request(health)
            rows.append(
                {
                    "scenario": name,
                    "connections": connections,
                    "result": result,
                    "health": health,
                    # Same number of equal-length runs: the ratio of the mean rates is
                    # that of the total requests (and matches the printed columns).
                    "ratio": result["requests_per_s"] / health["requests_per_s"],
                    "round_ratios": round_ratios,
                    "cpu_us": cpu,
                    "health_cpu_us": health_cpu,
                    # On a saturated box the throughput ratio follows this one.
                    "cpu_ratio": sum(health_cpu.values()) / sum(cpu.values()),
                }
            )
    return rows


def drop_rehearsal(server, redis_url, units, users, connections, tokens):
    product_id = http_level.open_sale(redis_url, stock=units, limit=1)
    started = time.perf_counter()
    watch = http_level.watch_sell_out(redis_url, product_id, started)
    # Run until every user has had a go (at least), bounded in time.
    result = http_level.wrk(
        server.url,
        "POST",
        f"/api/v1/sales/reserve/{product_id}",
        connections,
        max(5, users // 2000),
        tokens,
    )
    watch["thread"].join(timeout=1)
    engine = Inventory(redis.Redis.from_url(redis_url, decode_responses=True))
    snapshot = engine.snapshot(product_id)
    over_limit = sum(1 for n in engine.user_units(product_id).values() if n > 1)
    return {
        "units": units,
        "users": users,
        "connections": connections,
        "reservations": result["statuses"].get("201", 0),
        "held_in_redis": snapshot.held,
        "available_after": snapshot.available,
        "oversold": max(0, snapshot.held - units),
        "users_over_limit": over_limit,
        "sold_out_after_s": watch.get("sold_out_s"),
        # Units reserved as the poll saw them (at each change, to the millisecond).
        "sold_over_time": [
            (round(at, 3), units - available) for at, available in watch["available"]
        ],
        "requests": result["requests"],
        "statuses": result["statuses"],
        "socket_errors": result["socket_errors"],
        "p99_ms": result["p99_ms"],
    }


def print_report(report):
    print(f"\nFlashCart benchmark, {report['when']} on {report['machine']}")
    print("\n1. Redis level: reservations/s; ratio = vs the single-script yardstick")
    print(
        f"{'clients':>7} {'script/s':>9} | {'engine/s':>9} {'ratio':>6} {'retries':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} | {'naive/s':>8} {'ratio':>6} {'retries':>8} "
        f"{'p99 ms':>8} | {'script p99':>10}"
    )
    for row in report["redis"]:
        e, s, n = row["engine"], row["script"], row["naive"]
        print(
            f"{row['clients']:>7} {s['successes_per_s']:>9.0f} | {e['successes_per_s']:>9.0f} "
            f"{row['ratio']:>6.2f} {e['retries_per_success'] or 0:>8.2f} {e['p50_ms']:>7.2f} "
            f"{e['p99_ms']:>7.2f} | {n['successes_per_s']:>8.0f} {row['naive_ratio']:>6.2f} "
            f"{n['retries_per_success'] or 0:>8.2f} {n['p99_ms']:>8.2f} | {s['p99_ms']:>10.2f}"
        )
    rounds = report["http"][0]["result"]["runs"] if report["http"] else 0
    print(
        "\n2. HTTP level (wrk): each scenario vs GET /healthz measured next to it "
        f"(alternating, {rounds} rounds)"
    )
    print(
        f"{'scenario':<18} {'conns':>5} {'req/s':>8} {'health/s':>9} {'ratio':>6} "
        f"{'rounds':>10} {'p50 ms':>7} {'p99 ms':>7}  statuses"
    )
    for row in report["http"]:
        r = row["result"]
        spread = f"{min(row['round_ratios']):.2f}-{max(row['round_ratios']):.2f}"
        print(
            f"{row['scenario']:<18} {row['connections']:>5} {r['requests_per_s']:>8.0f} "
            f"{row['health']['requests_per_s']:>9.0f} {row['ratio']:>6.2f} {spread:>10} "
            f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f}  {r['statuses']} "
            f"socket errors: {r['socket_errors']}"
        )
    print(
        "\n   CPU per request under that load, µs (app: gunicorn's workers; redis:"
        " redis-server;\n   wrk: the load generator, on the same cores)"
    )
    print(
        f"{'scenario':<18} {'conns':>5} | {'app':>6} {'redis':>6} {'wrk':>6} {'total':>6} "
        f"| {'/healthz':>8} {'ratio':>6}"
    )
    for row in report["http"]:
        cpu = row["cpu_us"]
        print(
            f"{row['scenario']:<18} {row['connections']:>5} | {cpu['app']:>6.0f} "
            f"{cpu['redis']:>6.0f} {cpu['wrk']:>6.0f} {sum(cpu.values()):>6.0f} "
            f"| {sum(row['health_cpu_us'].values()):>8.0f} {row['cpu_ratio']:>6.2f}"
        )
    d = report["drop"]
    print(
        f"\n3. Drop rehearsal: {d['units']} units, {d['users']} users, {d['connections']} "
        f"connections"
    )
    sold_out = d["sold_out_after_s"]
    print(
        f"   reservations {d['reservations']}, held {d['held_in_redis']}, oversold "
        f"{d['oversold']}, users over limit {d['users_over_limit']}, sold out after "
        f"{sold_out:.2f} s"
        if sold_out is not None
        else "   never sold out"
    )
    print(
        f"   requests {d['requests']}, statuses {d['statuses']}, socket errors "
        f"{d['socket_errors']}, p99 {d['p99_ms']:.1f} ms"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument(
        "--only", choices=["durability"], help="run one section alone (no report file)"
    )
    args = parser.parse_args()
    seconds = 1 if args.quick else 3
    users = 2000 if args.quick else 20000
    if args.only == "durability":
        durability.print_report(durability.measure(SECRET, (64, 256), seconds))
        return
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores, Python "
        f"{platform.python_version()})",
    }
    with RedisServer() as redis_server:
        report["redis"] = redis_table(redis_server.url, (1, 8, 32, 128), seconds)
        redis.Redis.from_url(redis_server.url).flushdb()
        # The drop's users are not the HTTP table's: none has a token a worker has seen.
        # Made after the flush: their login sessions are cached in this Redis.
        tokens = http_level.make_tokens(users, SECRET, redis_server.url)
        http_tokens = http_level.make_tokens(users * 4, SECRET, redis_server.url)
        try:
            with Gunicorn(redis_server.url, env={"JWT_SECRET_KEY": SECRET}) as server:
                report["http"] = http_table(server, redis_server, (64, 256), seconds, http_tokens)
                report["drop"] = drop_rehearsal(server, redis_server.url, 1000, users, 256, tokens)
        finally:
            os.unlink(tokens)
            os.unlink(http_tokens)
        report["logins"] = logins.measure(
            redis_server,
            seconds=seconds,
            accounts=1000 if args.quick else logins.ACCOUNTS,
            quick=args.quick,
        )
    report["durability"] = durability.measure(SECRET, (64, 256), seconds)
    print_report(report)
    logins.print_report(report["logins"])
    durability.print_report(report["durability"])
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"bench-{report['when'].replace(':', '')}.json")
    with open(path, "w") as out:
        json.dump(report, out, indent=2)
    print(f"\nJSON: {path}\nReport: {reports.write(path)}")


if __name__ == "__main__":
    main()
