"""Throwaway servers for the benchmark: redis-server and gunicorn on free loopback ports."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process, timeout=15):
    """SIGTERM `process` (gunicorn's master then stops its workers); SIGKILL it if it
    has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(check, what, timeout=20, interval=0.1):
    """`check()`'s first true answer, asked every `interval` s (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = check()
            if answer:
                return answer
        except Exception:  # noqa: BLE001, S110 - still starting
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up")
        time.sleep(interval)


def _stat(pid):
    """/proc/<pid>/stat's fields after the command name (state is [0], ppid [1])."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()


def _children_stats(pid):
    """{child pid: its stat fields} for the processes whose parent is `pid`."""
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat(entry)
        except OSError:  # gone meanwhile
            continue
        if fields[1] == str(pid):
            stats[int(entry)] = fields
    return stats


def children(pid):
    """Pids of the live children of `pid` (a gunicorn master's workers)."""
    return sorted(child for child, fields in _children_stats(pid).items() if fields[0] != "Z")


def _live_children_ticks(pid):
    return sum(int(f[11]) + int(f[12]) for f in _children_stats(pid).values())  # utime, stime


def cpu_seconds(pid):
    """CPU seconds (user + system) used so far by a process and its children: those
    it has reaped (a recycled gunicorn worker) and those still running."""
    while True:
        before = _stat(pid)
        live = _live_children_ticks(pid)
        after = _stat(pid)
        # A child reaped during the scan would be in neither sum: look again.
        if before[13:15] == after[13:15]:  # cutime, cstime
            return (sum(int(x) for x in after[11:15]) + live) / os.sysconf("SC_CLK_TCK")


def settled_cpu_seconds(pids, interval=0.05, timeout=2.0):
    """{name: `cpu_seconds`} for `pids` (name -> pid) once none of them used any CPU
    for `interval` s (or after `timeout` s): requests still queued when a load
    generator stops are served after it, and a new worker boots after its fork."""
    readings = {name: cpu_seconds(pid) for name, pid in pids.items()}
    deadline = time.monotonic() + timeout
    while readings and time.monotonic() < deadline:
        time.sleep(interval)
        latest = {name: cpu_seconds(pid) for name, pid in pids.items()}
        if latest == readings:
            break
        readings = latest
    return readings


class RedisServer:
    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="flashcart-bench-redis-")
        self.process = None

    def __enter__(self):
        binary = shutil.which("redis-server") or sys.exit("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--maxclients",
                "10000",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: redis.Redis.from_url(self.url).ping(), "redis-server")
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


# Every benchmark user comes from one address, the load generator's: its per-IP
# ceiling is raised to a number it never reaches, so the limiter still counts every
# request, as it does as shipped.
LOAD_GENERATOR_CEILING = "1000000000 per minute"


class Gunicorn:
    """The app under gunicorn with the production settings (gunicorn.conf.py)."""

    def __init__(self, redis_url, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FLASHCART_ENV": "production",
            "PORT": str(self.port),
            "REDIS_URL": redis_url,
            "JWT_SECRET_KEY": "bench-secret-" + "x" * 40,
            "RATELIMIT_GLOBAL": LOAD_GENERATOR_CEILING,
            **(env or {}),
        }
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "gunicorn"),
                "--config",
                "gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{self.port}",
                "bench.app:create()",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        health = self.url + "/healthz"
        wait_for(lambda: urllib.request.urlopen(health, timeout=1).status == 200, "gunicorn")  # noqa: S310
        return self

    def __exit__(self, *exc):
        stop(self.process)
