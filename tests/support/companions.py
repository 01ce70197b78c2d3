"""The API's companions as production runs them: `flask --app wsgi sweep` and
`flask --app wsgi deliver`, each in its own process beside the gunicorn hosts (the
chaos and storm tests), on the test's MongoDB and Redis, logging to a file."""

import collections
import os
import signal
import subprocess
import sys

from tests.support import chaos_app
from tests.support.processes import ROOT, stop


class CompanionProcess:
    """A `flask --app wsgi <command>` beside the API: its own process, as in production.
    `hold_seconds` and `audit_seconds` as the API hosts have them; the class's
    `settings`, then `env`, add or replace environment variables."""

    command = ()
    settings = {}

    def __init__(self, mongo_uri, redis_url, workdir, *, hold_seconds, audit_seconds=5, env=None):
        self.log_path = os.path.join(workdir, f"{self.command[0]}.log")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR")
        }
        self.env.update(
            FLASHCART_ENV="production",
            MONGO_URI=mongo_uri,
            REDIS_URL=redis_url,
            JWT_SECRET_KEY="chaos-sweeper-secret-" + "x" * 40,
            HOLD_SECONDS=str(hold_seconds),
            SWEEP_GRACE_SECONDS="0",
            SWEEP_AUDIT_SECONDS=str(audit_seconds),
            STOCK_STRIPES=str(chaos_app.settings(mongo_uri, redis_url, 0)["STOCK_STRIPES"]),
            LOG_FORMAT="text",
            PYTHONUNBUFFERED="1",
        )
        self.env.update(self.settings)
        self.env.update(env or {})
        self.process = None
        self._log = None

    def start(self):
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", *self.command],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def stop(self):
        if self.process is not None:
            stop(self.process, timeout=10)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def lines(self, needle=""):
        with open(self.log_path, errors="replace") as log:
            return [line.rstrip("\n") for line in log if needle in line]


class SweeperProcess(CompanionProcess):
    """`flask --app wsgi sweep --every 1`."""

    command = ("sweep", "--every", "1")

    def done(self):
        """What its passes did, added up from their `sweep: name=n, ...` lines."""
        done = collections.Counter()
        for line in self.lines("sweep: "):
            for item in line.split("sweep: ", 1)[1].split(", "):
                name, _, n = item.partition("=")
                if n.isdigit():
                    done[name] += int(n)
        return done

    def failures(self):
        return len(self.lines("sweep failed"))


class DelivererProcess(CompanionProcess):
    """`flask --app wsgi deliver --every 1`, sending to a receiver on this machine, with
    retries and leases short enough to be seen within a test (a pass ends when its
    lease has less than 2 x the timeout + 1 s left: some 1 s of sending in 4 s)."""

    command = ("deliver", "--every", "1")
    LEASE_SECONDS = 4
    settings = {
        "FLASHCART_ENV": "development",  # production refuses http and loopback destinations
        "WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS": "true",
        "WEBHOOKS_TIMEOUT_SECONDS": "1",
        "WEBHOOKS_LEASE_SECONDS": str(LEASE_SECONDS),
        "WEBHOOKS_RETRY_BASE_SECONDS": "0.5",
        "WEBHOOKS_RETRY_MAX_SECONDS": "2",
    }

    def kill(self):
        """SIGKILL, mid-batch or not; returns the pid."""
        pid = self.process.pid
        os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None
        return pid
