"""The production server settings (gunicorn.conf.py) under a real gunicorn.

The app is loaded once in the master and forked into the workers (preload_app), so a
worker killed or recycled during a drop is replaced without loading the app again,
and /metrics still adds up what every worker counted.
"""

import os
import re
import signal
import time
import urllib.request

import pytest

from bench.servers import Gunicorn, children, cpu_seconds

pytestmark = pytest.mark.timeout(120)


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return response.status, response.read().decode()


def _wait(predicate, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def _settled_cpu(pid):
    """The process's CPU seconds once it has used none for half a second."""
    last = None
    while True:
        now = cpu_seconds(pid)
        if now == last:
            return now
        last = now
        time.sleep(0.5)


def test_a_killed_worker_is_replaced_from_the_preloaded_app(redis_server, tmp_path):
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "WEB_CONCURRENCY": "2"}
    with Gunicorn(redis_server.url, env=env) as server:
        workers = _wait(
            lambda: len(children(server.process.pid)) == 2 and children(server.process.pid),
            "two workers",
        )
        os.kill(workers[0], signal.SIGKILL)
        replacement = _wait(
            lambda: set(children(server.process.pid)) - set(workers), "replacement worker"
        ).pop()
        # Loading the app costs a worker 0.3-0.5 s of CPU; a fork of the master's, next to none.
        assert _settled_cpu(replacement) < 0.1

        for _ in range(20):
            assert _get(server.url + "/healthz")[0] == 200
        status, metrics = _get(server.url + "/metrics")
    assert status == 200
    counted = re.search(
        r'^flashcart_http_requests_total\{endpoint="/healthz",method="GET",status="200"\} (\S+)',
        metrics,
        re.M,
    )
    assert counted and float(counted.group(1)) >= 20
