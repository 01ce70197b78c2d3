"""Test plumbing: the app under a real gunicorn master (`tests.support.chaos_app:make_app()`), plain
HTTP to it, and a drop opened through it. Used by the chaos and scale-out tests."""

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time

from flashcart.auth import service as accounts
from tests.support.ports import free_port
from tests.support.processes import ROOT, children

HTTP_TIMEOUT = 10


class Api:
    """Plain HTTP/1.1 to the gunicorn server (sync workers close every connection)."""

    def __init__(self, port, timeout=HTTP_TIMEOUT):
        self.port = port
        self.timeout = timeout

    def call(self, method, path, token=None, body=None, headers=None):
        """(status, json body, error kind): status None when the connection failed."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if token:
            sent["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            return None, {}, f"connection:{type(error).__name__}"
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {}
        return response.status, payload, payload.get("code", "") if response.status >= 400 else ""


class GunicornHost:
    """One API host: `gunicorn tests.support.chaos_app:make_app()`, its own master and sync workers
    on a free loopback port, configured by `env` (chaos_app's CHAOS_* variables)."""

    def __init__(self, env, workdir, workers):
        self.port = free_port()
        self.workers = workers
        self.env = env
        self.workdir = workdir
        self.log_path = os.path.join(workdir, f"gunicorn-{self.port}.log")
        self.api = Api(self.port)
        self.process = None
        self._log = None

    def start(self):
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--pythonpath",
            ROOT,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--worker-class",
            "sync",
            "--timeout",
            "30",
            "--graceful-timeout",
            "5",
            "--max-requests",
            "0",
            "--log-level",
            "info",
            "tests.support.chaos_app:make_app()",
        ]
        # cwd is a scratch directory, so the production gunicorn.conf.py is not read.
        self.process = subprocess.Popen(
            command, cwd=self.workdir, env=self.env, stdout=self._log, stderr=self._log
        )
        return self

    def worker_pids(self):
        """Pids of the master's live children (its workers), read from /proc."""
        return children(self.process.pid)

    def wait_ready(self, timeout=60):
        """Until every worker is up and /readyz answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"gunicorn exited:\n{self.log_tail()}"
            workers_up = len(self.worker_pids()) == self.workers
            if workers_up and self.api.call("GET", "/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"host on {self.port} not ready in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines=40):
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])
        return ""

    def log_lines(self, needle):
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as log:
            return [line.strip() for line in log if needle in line]
        return []

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            workers = self.worker_pids()
            self.process.terminate()  # graceful: the master stops its workers
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            for pid in workers:  # by id, in case the master could not stop them
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


def open_drop(app, api, *, name, price, stock, limit, shoppers):
    """An admin, `shoppers` shoppers with tokens (made in `app`) and a live product
    (made through `api`); returns (product id, {user id: token})."""
    with app.app_context():
        admin = accounts.register(
            email="admin@drop.example", password="correct horse", name="A", role="admin"
        )
        admin_token = accounts.issue_token(admin)["access_token"]
        tokens = {}
        for n in range(shoppers):
            user = accounts.register(
                email=f"shopper{n}@drop.example", password="correct horse", name=f"S{n}"
            )
            tokens[user["id"]] = accounts.issue_token(user)["access_token"]
    body = {"name": name, "price": price, "stock": stock, "per_user_limit": limit}
    status, product, _ = api.call("POST", "/api/v1/products", admin_token, body)
    assert status == 201, product
    status, started, _ = api.call("POST", f"/api/v1/sales/start/{product['id']}", admin_token)
    assert status == 200, started
    return product["id"], tokens
