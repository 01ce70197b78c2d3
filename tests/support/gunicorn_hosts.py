"""Test plumbing: the app under a real gunicorn master, plain HTTP to it, and a drop
opened through it.

- GunicornHost: `tests.support.chaos_app:make_app()` with test settings, several of
  them side by side (the chaos and scale-out tests);
- ProductionGunicorn: the app as shipped, `gunicorn --config gunicorn.conf.py wsgi:app`
  in production mode (the server-settings and slow-clients tests).
"""

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from flashcart.auth import service as accounts
from tests.support.ports import free_port
from tests.support.processes import ROOT, children, stop, wait_for

HTTP_TIMEOUT = 10
# The worker model gunicorn.conf.py ships (WEB_THREADS' default: threaded workers of
# 4), which GunicornHost runs too; tests/system/test_server_settings.py pins the two.
SHIPPED_THREADS = 4


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status None when the connection failed (`code` says how)."""

    status: int | None
    body: dict
    code: str
    headers: dict


class Api:
    """Plain HTTP/1.1 to the gunicorn server, a new connection for each request."""

    def __init__(self, port, timeout=HTTP_TIMEOUT):
        self.port = port
        self.timeout = timeout

    def call(self, method, path, token=None, body=None, headers=None):
        """(status, json body, error kind): status None when the connection failed."""
        answer = self.request(method, path, token, body, headers)
        return answer.status, answer.body, answer.code

    def request(self, method, path, token=None, body=None, headers=None, pace=0.0):
        """The Answer; a body sent in five pieces `pace` seconds apart (a slow client)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        sent, data = self._headers(token, body, headers)
        try:
            if pace and data:
                conn.putrequest(method, path)
                for name, value in {**sent, "Content-Length": str(len(data))}.items():
                    conn.putheader(name, value)
                conn.endheaders()
                step = -(-len(data) // 5)
                for at in range(0, len(data), step):
                    time.sleep(pace)
                    conn.send(data[at : at + step])
            else:
                conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            return Answer(None, {}, f"connection:{type(error).__name__}", {})
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {}
        code = payload.get("code", "") if response.status >= 400 else ""
        return Answer(response.status, payload, code, dict(response.getheaders()))

    def hang_up(self, method, path, token=None, body=None, whole=False):
        """A client that vanishes: sends the request, but only half its body unless
        `whole`, and closes the connection without reading an answer."""
        sent, data = self._headers(token, body, None)
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in sent.items()]
        lines.append(f"Content-Length: {len(data or b'')}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + (data or b"")
        address = ("127.0.0.1", self.port)
        with contextlib.suppress(OSError), socket.create_connection(address, self.timeout) as sock:
            sock.sendall(raw if whole else raw[: len(raw) - max(1, len(data or b"") // 2)])

    @staticmethod
    def _headers(token, body, headers):
        sent = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if token:
            sent["Authorization"] = f"Bearer {token}"
        return sent, data


class GunicornHost:
    """One API host: `gunicorn tests.support.chaos_app:make_app()`, its own master and
    workers (as shipped) on a free loopback port, configured by `env`
    (chaos_app's CHAOS_* variables)."""

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
            "--threads",
            str(SHIPPED_THREADS),
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

    def kill_a_worker(self, timeout=20):
        """SIGKILL one worker; wait until gunicorn has reaped it and booted a
        replacement that serves. Returns what happened, with monotonic times."""
        before = self.worker_pids()
        booted_before = len(self.log_lines("Booting worker with pid"))
        victim = random.choice(before)  # noqa: S311 - not for security
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        while time.monotonic() < killed_at + timeout:
            now = self.worker_pids()
            reaped = not os.path.exists(f"/proc/{victim}")
            booted = [
                int(line.rsplit(":", 1)[1])
                for line in self.log_lines("Booting worker with pid")[booted_before:]
            ]
            if (
                reaped
                and booted
                and set(booted) <= set(now)
                and len(now) == self.workers
                and self.api.call("GET", "/healthz")[0] == 200
            ):
                return {
                    "victim": victim,
                    "replacement": booted,
                    "at": killed_at,
                    "replaced_at": time.monotonic(),
                    "workers": (before, now),
                    "master_saw": self.log_lines(f"pid:{victim}) was sent SIGKILL"),
                }
            time.sleep(0.05)
        raise AssertionError(f"worker {victim} was not replaced:\n{self.log_tail()}")

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


class ProductionGunicorn:
    """`gunicorn --config gunicorn.conf.py wsgi:app` run from the repository's root, as
    `make run` and the image run it, in production mode (which refuses in-memory
    stores): on a free loopback port, with `redis_url` and `mongo_uri`, its output in
    `log_path`. `env` adds or replaces variables (WEB_CONCURRENCY, TRUSTED_PROXIES ...).
    A context manager: ready (/readyz answers 200) inside, stopped after."""

    def __init__(self, redis_url, mongo_uri, log_path, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {k: v for k, v in os.environ.items() if k != "GUNICORN_CMD_ARGS"}
        self.env.update(
            FLASHCART_ENV="production",
            MONGO_URI=mongo_uri,
            REDIS_URL=redis_url,
            JWT_SECRET_KEY="production-gunicorn-secret-" + "x" * 40,
            PYTHONUNBUFFERED="1",
        )
        self.env.update(env or {})
        self.process = None

    def __enter__(self):
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    os.path.join(os.path.dirname(sys.executable), "gunicorn"),
                    "--config",
                    "gunicorn.conf.py",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "wsgi:app",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
            )
        exited = self.process.poll
        try:
            wait_for(lambda: exited() is not None or self._ready(), "gunicorn wsgi:app", 60)
        except BaseException:
            stop(self.process, timeout=20)
            raise
        if exited() is not None:
            with open(self.log_path, errors="replace") as log:
                raise AssertionError(f"gunicorn exited:\n{log.read()[-4000:]}")
        return self

    def _ready(self):
        return Api(self.port, timeout=1).call("GET", "/readyz")[0] == 200

    def __exit__(self, *exc):
        stop(self.process, timeout=20)


SHOPPER_PASSWORD = "correct horse"  # noqa: S105 - test accounts


def shopper_email(n):
    return f"shopper{n}@drop.example"


def open_drop(app, api, *, name, price, stock, limit, shoppers):
    """An admin, `shoppers` shoppers with tokens (made in `app`) and a live product
    (made through `api`); returns (product id, {user id: token}), the users in the
    order of their numbers (shopper_email(n), SHOPPER_PASSWORD)."""
    with app.app_context():
        admin = accounts.register(
            email="admin@drop.example", password="correct horse", name="A", role="admin"
        )
        admin_token = accounts.issue_token(admin)["access_token"]
        tokens = {}
        for n in range(shoppers):
            user = accounts.register(
                email=shopper_email(n), password=SHOPPER_PASSWORD, name=f"S{n}"
            )
            tokens[user["id"]] = accounts.issue_token(user)["access_token"]
    body = {"name": name, "price": price, "stock": stock, "per_user_limit": limit}
    status, product, _ = api.call("POST", "/api/v1/products", admin_token, body)
    assert status == 201, product
    status, started, _ = api.call("POST", f"/api/v1/sales/start/{product['id']}", admin_token)
    assert status == 200, started
    return product["id"], tokens
