"""What REDIS_ACK_REPLICAS=1 costs a reservation: `python -m bench.run --only durability`.

One redis-server primary with one local replica, and two gunicorn hosts on it: one
as shipped (the primary's word), one waiting for the replica (WAIT after EXEC). wrk
drives reserve at each, alternating [default, acked] x rounds (load on a shared
machine drifts within a minute); the ratio is acked / default. The replica is on the
same loopback and cores, so this is WAIT's round trip to the replica at its
cheapest: a replica across a network adds its round trip to every reservation.
"""

import os
import statistics
import time

import redis

from bench import http_level
from bench.servers import Gunicorn, RedisServer
from flashcart.sales.engine.inventory import Inventory

# The acked host's settings beside the shipped ones (a timeout no healthy local
# replica comes near, so no reservation is refused for it).
ACKED_ENV = {"REDIS_ACK_REPLICAS": "1", "REDIS_ACK_TIMEOUT_MS": "1000"}


def _replica_of(primary):
    """A replica of `primary`, synced (so that WAIT can count it)."""
    replica = RedisServer(args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
    deadline = time.monotonic() + 30
    with redis.Redis(port=replica.port) as client:
        while client.info("replication")["master_link_status"] != "up":
            if time.monotonic() > deadline:
                replica.stop()
                raise TimeoutError("the replica did not sync")
            time.sleep(0.05)
    return replica


def measure(secret, connections_levels, seconds, rounds=3, tokens_count=40_000):
    """Rows per connection level: the default's and the acked run's figures, the ratio."""
    primary = RedisServer(args=["--repl-diskless-sync-delay", "0"]).start()
    replica = None
    tokens = None
    try:
        replica = _replica_of(primary)
        url = primary.url
        product = http_level.open_sale(url, stock=http_level.PLENTY, limit=http_level.PLENTY)
        tokens = http_level.make_tokens(tokens_count, secret, url)
        env = {"JWT_SECRET_KEY": secret}
        acked_env = env | ACKED_ENV
        engine = engine_latency(url, rounds=rounds)
        redis_pids = {"redis": primary.process.pid, "replica": replica.process.pid}
        with Gunicorn(url, env=env) as default, Gunicorn(url, env=acked_env) as acked:
            http = _rows(
                default, acked, redis_pids, product, tokens, connections_levels, seconds, rounds
            )
        return {"engine": engine, "http": http}
    finally:
        if tokens:
            os.unlink(tokens)
        if replica:
            replica.stop()
        primary.stop()


def engine_latency(url, rounds=3, reservations=2000):
    """One client's reservations through the engine, without and with WAIT, alternating:
    {"default"/"acked": µs per reservation (median of the rounds), "ratio", "rounds"}."""
    client = redis.Redis.from_url(url, decode_responses=True)
    product = http_level.open_sale(url, stock=http_level.PLENTY, limit=http_level.PLENTY)
    engines = {
        "default": Inventory(client),
        "acked": Inventory(client, ack_replicas=1, ack_timeout_ms=1000),
    }
    per_round = {name: [] for name in engines}
    for round_ in range(rounds):
        for name, engine in engines.items():
            started = time.perf_counter()
            for i in range(reservations):
                engine.reserve(product, f"{name}-{round_}-{i}")
            per_round[name].append((time.perf_counter() - started) / reservations * 1e6)
    client.close()
    median = {name: statistics.median(values) for name, values in per_round.items()}
    return {
        **median,
        "ratio": median["acked"] / median["default"],
        "rounds": per_round,
        "load_average": os.getloadavg(),
    }


def _rows(default, acked, redis_pids, product, tokens, connections_levels, seconds, rounds):
    path = f"/api/v1/sales/reserve/{product}"
    rows, first_token = [], 0
    for connections in connections_levels:
        runs = {"default": [], "acked": []}
        for _ in range(rounds):
            for name, server in (("default", default), ("acked", acked)):
                watch = {"app": server.process.pid, **redis_pids}
                run = http_level.wrk(
                    server.url,
                    "POST",
                    path,
                    connections,
                    seconds,
                    tokens,
                    first_token=first_token,
                    watch=watch,
                )
                first_token += run["requests"]
                runs[name].append(run)
        round_ratios = [
            a["requests_per_s"] / d["requests_per_s"]
            for d, a in zip(runs["default"], runs["acked"], strict=True)
        ]
        figures = {name: http_level.combine(group) for name, group in runs.items()}
        rows.append(
            {
                "connections": connections,
                **figures,
                # CPU µs per request (app, primary, replica, wrk): steadier than rates
                # on a shared machine.
                "cpu_us": {
                    name: sum(f["cpu_s"].values()) / f["requests"] * 1e6
                    for name, f in figures.items()
                },
                "ratio": figures["acked"]["requests_per_s"] / figures["default"]["requests_per_s"],
                "round_ratios": round_ratios,
                "load_average": os.getloadavg(),
            }
        )
    return rows


def print_report(figures):
    print(
        "\n5. Durability: reserve with REDIS_ACK_REPLICAS=1 (WAIT for one local replica) "
        "vs the default, same primary"
    )
    e = figures["engine"]
    rounds = " ".join(f"{d:.0f}/{a:.0f}" for d, a in zip(*e["rounds"].values(), strict=True))
    print(
        f"   engine, one client: {e['default']:.0f} µs per reservation, {e['acked']:.0f} µs "
        f"acked, ratio {e['ratio']:.2f} (rounds, default/acked: {rounds}; load average "
        f"{' '.join(f'{x:.1f}' for x in e['load_average'])})"
    )
    rows = figures["http"]
    print(
        f"{'conns':>5} | {'default/s':>9} {'p50 ms':>7} {'p99 ms':>7} | {'acked/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} | {'ratio':>6} {'rounds':>10} | {'CPU µs/req':>11} "
        f"| statuses (acked)"
    )
    for row in rows:
        d, a = row["default"], row["acked"]
        spread = f"{min(row['round_ratios']):.2f}-{max(row['round_ratios']):.2f}"
        print(
            f"{row['connections']:>5} | {d['requests_per_s']:>9.0f} {d['p50_ms']:>7.1f} "
            f"{d['p99_ms']:>7.1f} | {a['requests_per_s']:>8.0f} {a['p50_ms']:>7.1f} "
            f"{a['p99_ms']:>7.1f} | {row['ratio']:>6.2f} {spread:>10} | "
            f"{row['cpu_us']['default']:>5.0f}/{row['cpu_us']['acked']:<5.0f} | {a['statuses']} "
            f"(load average {' '.join(f'{x:.1f}' for x in row['load_average'])})"
        )
