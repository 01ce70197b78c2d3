"""README's make targets as a new user runs them, for the tests that run them:
`make run` (or `dev`) on the embedded stores, and HTTP calls to it."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.support.processes import ROOT

# The machine's own stores and settings must not leak into what README promises.
UNSET = ("MONGO_URI", "REDIS_URL", "FLASHCART_ENV", "PROMETHEUS_MULTIPROC_DIR")


def make_command(target, *args, keep_venv=True):
    """`make target args` on the suite's virtualenv; `keep_venv`: `-o` keeps make from
    reinstalling it (the suite already runs inside it)."""
    installed = ["-o", os.path.join(sys.prefix, "bin", ".installed")] if keep_venv else []
    return ["make", "--no-print-directory", *installed, target, *args, f"VENV={sys.prefix}"]


def make_env(tmp_path, **settings):
    """This environment without the machine's stores, TMPDIR in tmp_path, plus settings."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return env | {"TMPDIR": str(tmp_path)} | settings


def start_make(target, port, tmp_path, keep_venv=True, **settings):
    """`make target PORT=port` in its own session; its log goes to tmp_path/make-run.log."""
    with open(tmp_path / "make-run.log", "wb") as log:
        return subprocess.Popen(
            make_command(target, f"PORT={port}", keep_venv=keep_venv),
            cwd=ROOT,
            env=make_env(tmp_path, **settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_make(process):
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def call(base, method, path, body=None, token=None):
    """(status, JSON body, headers) of one request to `base`."""
    request = urllib.request.Request(base + path, method=method)  # noqa: S310 - loopback
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, data, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}"), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), error.headers


def wait_until_serving(base, process, timeout=60):
    """The first answer of /healthz, once `process` serves it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "make exited"
        try:
            return call(base, "GET", "/healthz")
        except OSError:
            time.sleep(0.2)
    raise AssertionError("make did not serve in time")
