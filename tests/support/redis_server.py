"""A throwaway redis-server process, for the session's Redis and for fault tests."""

import shutil
import subprocess
import tempfile
import time

import redis

from tests.support.ports import free_port


class RedisServer:
    """A throwaway redis-server process on a free port (restartable, for fault tests)."""

    def __init__(self, maxclients=2000, args=()):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="flashcart-redis-")
        self.maxclients = maxclients
        # More options, after the defaults (e.g. `--replicaof`, `--appendonly yes`).
        self.args = list(args)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server"),
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
                str(self.maxclients),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        if self.process:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self):
        self.stop()
        return self.start()
