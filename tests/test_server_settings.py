"""The production server settings (gunicorn.conf.py) under a real gunicorn.

The app is loaded once in the master and forked into the workers (preload_app), so a
worker killed or recycled during a drop is replaced without loading the app again,
and /metrics still adds up what every worker counted.
"""

import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from bench.servers import ROOT, Gunicorn, children, settled_cpu_seconds, wait_for

pytestmark = pytest.mark.timeout(120)


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return response.status, response.read().decode()


def test_a_killed_worker_is_replaced_from_the_preloaded_app(redis_server, tmp_path):
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "WEB_CONCURRENCY": "2"}
    with Gunicorn(redis_server.url, env=env) as server:
        workers = wait_for(
            lambda: len(children(server.process.pid)) == 2 and children(server.process.pid),
            "two workers",
            timeout=30,
            interval=0.05,
        )
        os.kill(workers[0], signal.SIGKILL)
        replacement = wait_for(
            lambda: set(children(server.process.pid)) - set(workers),
            "replacement worker",
            timeout=30,
            interval=0.05,
        ).pop()
        # Loading the app costs a worker 0.3-0.5 s of CPU; a fork of the master's, next to none.
        settled = settled_cpu_seconds({"worker": replacement}, interval=0.5, timeout=30)
        assert settled["worker"] < 0.1

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


@pytest.mark.parametrize("setting", [None, "7"], ids=["default", "set"])
def test_gunicorn_and_the_app_share_one_request_timeout(setting):
    # The app bounds how long an Idempotency-Key stays locked by gunicorn's timeout.
    env = {k: v for k, v in os.environ.items() if k != "REQUEST_TIMEOUT_SECONDS"}
    if setting is not None:
        env["REQUEST_TIMEOUT_SECONDS"] = setting
    script = (
        "import runpy; from config import Config; "
        "print(runpy.run_path('gunicorn.conf.py')['timeout'], Config.REQUEST_TIMEOUT_SECONDS)"
    )
    command = [sys.executable, "-c", script]
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    gunicorn_timeout, app_timeout = result.stdout.split()
    assert gunicorn_timeout == app_timeout == (setting or "30")
