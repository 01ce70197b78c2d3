"""Throwaway servers for the benchmark: redis-server and gunicorn on free loopback ports."""

import os
import shutil
import subprocess
import sys
import urllib.request

# The suite's process tools; cpu_seconds and settled_cpu_seconds are here for bench/'s
# other modules (`from bench.servers import ...`).
from tests.support.ports import free_port
from tests.support.processes import ROOT, stop, wait_for
from tests.support.processes import cpu_seconds as cpu_seconds
from tests.support.processes import settled_cpu_seconds as settled_cpu_seconds
from tests.support.redis_server import RedisServer as SuiteRedisServer


class RedisServer(SuiteRedisServer):
    """The suite's throwaway redis-server, with room for the load generator's
    connections."""

    def __init__(self, args=()):
        if not shutil.which("redis-server"):
            sys.exit("redis-server is not installed")
        super().__init__(maxclients=10_000, args=args)


# Every benchmark user comes from one address, the load generator's: a per-address
# limit it would hit is raised to a number it never reaches, so the limit still
# counts every request, as it does as shipped. In the app (per-address login limits)
# and at the edge (nginx's ceiling per address: rate and burst).
LOAD_GENERATOR_CEILING = "1000000000 per minute"
LOAD_GENERATOR_EDGE_CEILING = ("1000000r/s", "1000000")


class Gunicorn:
    """The app under gunicorn with the production settings (gunicorn.conf.py)."""

    health_path = "/healthz"

    def __init__(self, redis_url, env=None, app="bench.app:create()"):
        self.app = app
        self.config = "gunicorn.conf.py"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FLASHCART_ENV": "production",
            "PORT": str(self.port),
            "REDIS_URL": redis_url,
            "JWT_SECRET_KEY": "bench-secret-" + "x" * 40,
            **(env or {}),
        }
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "gunicorn"),
                "--config",
                self.config,
                "--bind",
                f"127.0.0.1:{self.port}",
                self.app,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        health = self.url + self.health_path
        try:
            wait_for(lambda: urllib.request.urlopen(health, timeout=1).status == 200, "gunicorn")  # noqa: S310
        except BaseException:
            stop(self.process)
            raise
        return self

    def __exit__(self, *exc):
        stop(self.process)


class Floor(Gunicorn):
    """The yardstick (bench/floor.py): a bare Flask endpoint on 4 sync workers, in the
    environment as it is (no setting of the app's applies to it)."""

    health_path = "/"

    def __init__(self):
        self.app = "bench.floor:app"
        self.config = "python:bench.floor"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.process = None
