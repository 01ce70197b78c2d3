"""HTTP level: the app under gunicorn, driven by wrk with many distinct users' tokens."""

import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter

import redis
from bson import ObjectId

from bench.servers import cpu_seconds, settled_cpu_seconds
from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.records import SalePlan

LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk", "requests.lua")
PLENTY = 10**9


def make_tokens(count, secret, redis_url):
    """Bearer tokens for `count` distinct users, written to a file; returns its path.

    Each names a login session cached live in Redis, as a login leaves it (the hot
    paths never read the session from MongoDB while Redis has it).
    """
    from flask_jwt_extended import create_access_token

    from bench.app import create
    from flashcart.auth import sessions
    from flashcart.stores import utcnow

    app = create(REDIS_URL=redis_url, JWT_SECRET_KEY=secret)
    handle, path = tempfile.mkstemp(prefix="flashcart-tokens-", suffix=".txt")
    with app.app_context(), os.fdopen(handle, "w") as out:
        expires_at = utcnow() + app.config["JWT_REFRESH_TOKEN_EXPIRES"]
        for _ in range(count):
            session_id = str(ObjectId())
            sessions.cache_live(session_id, expires_at)
            claims = {"role": "user", "sid": session_id}
            out.write(create_access_token(identity=str(ObjectId()), additional_claims=claims))
            out.write("\n")
    return path


def open_sale(redis_url, stock, limit):
    """A product on sale straight in Redis (the hot path never reads MongoDB)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    product_id = str(ObjectId())
    Inventory(client).open_sale(product_id, SalePlan("live", limit, stock, {}))
    return product_id


def cache_product(redis_url, product_id):
    """A warm product cache entry, as a first view would leave it."""
    from flashcart.products.service import cache_key

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    product = {
        "id": product_id,
        "name": "Bench sneaker",
        "description": "A product for the benchmark.",
        "price": "99.00",
        "stock": 1000,
        "per_user_limit": 1,
        "sale_status": "live",
        "starts_at": None,
        "ends_at": None,
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    client.set(cache_key(product_id), json.dumps(product), ex=3600)


def _children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(
    url,
    method,
    path,
    connections,
    seconds,
    tokens=None,
    threads=2,
    first_token=0,
    watch=None,
    bodies=None,
    answers=None,
):
    """Run wrk; returns its figures (requests/s, p50/p99 ms, statuses, socket errors).

    With `tokens`, requests carry the tokens from line `first_token` on, one each;
    with `bodies` (a file), the bodies from that line on, one each.
    With `watch` (name -> pid), the figures include the CPU seconds each of those
    processes (with its children) and wrk itself used meanwhile, as "cpu_s".
    With `answers` (a count), "answered_at" is when that many had come back
    (`time.monotonic()`; None if they never did).
    """
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    env = {**os.environ, "WRK_METHOD": method, "WRK_PATH": path, "WRK_THREADS": str(threads)}
    if tokens:
        env["WRK_TOKENS"] = tokens
    if bodies:
        env["WRK_BODIES"] = bodies
    if tokens or bodies:
        env["WRK_OFFSET"] = str(first_token)
    if answers:
        env["WRK_ANSWERS"] = str(answers)
    watched = {name: cpu_seconds(pid) for name, pid in (watch or {}).items()}
    wrk_before = _children_cpu_seconds()
    output = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            LUA,
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Requests wrk left queued are served after it stops: this run's cost.
    settled = settled_cpu_seconds(watch or {})
    cpu_s = {name: after - watched[name] for name, after in settled.items()}
    line = next(x for x in output.splitlines() if x.startswith("JSON_RESULT "))
    raw = json.loads(line[len("JSON_RESULT ") :])
    # Less starting up and loading the tokens, which is not the requests' cost.
    cpu_s["wrk"] = _children_cpu_seconds() - wrk_before - raw["init_cpu_us"] / 1e6
    errors = sum(
        raw[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout")
    )
    return {
        "requests_per_s": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "statuses": raw["statuses"],
        "socket_errors": errors,
        "requests": raw["requests"],
        "cpu_s": cpu_s,
        "answered_at": raw["answered_at_us"] / 1e6 if raw["answered_at_us"] else None,
    }


def combine(runs):
    """One figure for several wrk runs of the same scenario (as `wrk` returns them).

    Requests, statuses, socket errors and CPU seconds add up; requests/s is the mean
    over the runs (they are equally long); p50 is the median of the runs' p50 and p99
    the worst p99.
    """
    statuses, cpu_s = Counter(), Counter()
    for run in runs:
        statuses.update(run["statuses"])
        cpu_s.update(run["cpu_s"])
    return {
        "requests_per_s": statistics.fmean(run["requests_per_s"] for run in runs),
        "p50_ms": statistics.median(run["p50_ms"] for run in runs),
        "p99_ms": max(run["p99_ms"] for run in runs),
        "statuses": dict(statuses),
        "socket_errors": sum(run["socket_errors"] for run in runs),
        "requests": sum(run["requests"] for run in runs),
        "cpu_s": dict(cpu_s),
        "runs": len(runs),
    }


def watch_sell_out(redis_url, product_id, started):
    """Poll live stock in the background; returns a dict filled with `sold_out_s` and
    `available`: (seconds, units available) each time the poll saw it change."""
    result = {"available": []}
    engine = Inventory(redis.Redis.from_url(redis_url, decode_responses=True))

    def poll():
        seen = None
        while time.perf_counter() - started < 120:
            try:
                _, available = engine.available(product_id)
            except redis.ConnectionError:  # the drop ended unsold and its Redis is gone
                return
            # The poll it already made, kept when it changed: the curve costs no request.
            if available != seen:
                result["available"].append((time.perf_counter() - started, available))
                seen = available
            if available <= 0:
                result["sold_out_s"] = time.perf_counter() - started
                return
            time.sleep(0.005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    result["thread"] = thread
    return result
