"""A throwaway Redis Cluster for the tests: 3 masters and 3 replicas on loopback.

Six `redis-server --cluster-enabled yes` processes on free ports (each with its own
directory and nodes file, no persistence, a short node timeout so a failover takes
about a second), joined by `redis-cli --cluster create ... --cluster-replicas 1`.
Both binaries come in Debian's `redis-server` package.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time

import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.support.ports import free_port

MASTERS = 3
NODE_TIMEOUT_MS = 1000


def free_ports(count):
    """`count` distinct free loopback ports."""
    return [free_port() for _ in range(count)]


def available():
    return bool(shutil.which("redis-server") and shutil.which("redis-cli"))


class PortTaken(RuntimeError):
    """A node exited at once: its port or bus port was taken meanwhile."""


class ClusterServers:
    """Start with `start()`, always `stop()` (kills every process, removes the dirs)."""

    def __init__(self, masters=MASTERS, replicas_per_master=1):
        self.size = masters * (1 + replicas_per_master)
        self.replicas_per_master = replicas_per_master
        self.processes = {}
        self._choose_ports()

    def _choose_ports(self):
        ports = free_ports(self.size * 2)
        # Client ports, and cluster bus ports chosen too (the default, port + 10000,
        # may be taken or past 65535).
        self.ports, self.bus_ports = ports[: self.size], ports[self.size :]
        self.dir = tempfile.mkdtemp(prefix="flashcart-cluster-")

    @property
    def url(self):
        """The REDIS_URL FlashCart takes for this cluster."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def node_url(self, port):
        return f"redis://127.0.0.1:{port}/0"

    def start(self, attempts=3):
        """Start the nodes and join them. A port taken between choosing and binding
        (other test runs share the machine) means fresh ports and another go."""
        for attempt in range(attempts):
            try:
                return self._start()
            except PortTaken:
                if attempt == attempts - 1:
                    raise
                self._choose_ports()
        return self

    def _start(self):
        try:
            for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
                self.start_node(port, bus_port)
            for port in self.ports:
                self._wait_answers(port)
            subprocess.run(
                [
                    shutil.which("redis-cli"),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas",
                    str(self.replicas_per_master),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_healthy()
            self.wait_replicas_synced()
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, port, bus_port):
        node_dir = f"{self.dir}/{port}"
        os.makedirs(node_dir, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(bus_port),
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                node_dir,
                "--maxclients",
                "2000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _wait_answers(self, port, timeout=10):
        client = redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.TimeoutError):
                    if self.processes[port].poll() is not None:
                        raise PortTaken(f"redis-server on {port} exited") from None
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def cluster_info(self, port):
        client = redis.Redis(port=port, decode_responses=True, socket_timeout=1)
        try:
            return client.cluster("info")
        finally:
            client.close()

    def live_ports(self):
        return [port for port, process in self.processes.items() if process.poll() is None]

    def wait_healthy(self, timeout=30):
        """Every live node says cluster_state:ok and knows as many masters as at start."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                infos = [self.cluster_info(port) for port in self.live_ports()]
                if all(
                    info["cluster_state"] == "ok"
                    and int(info["cluster_size"]) == self.size // (1 + self.replicas_per_master)
                    for info in infos
                ):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ok after {timeout}s")
            time.sleep(0.1)

    def client(self, **kwargs):
        """A RedisCluster client (decode_responses) on this cluster."""
        nodes = [ClusterNode("127.0.0.1", port) for port in self.live_ports()]
        return RedisCluster(startup_nodes=nodes, decode_responses=True, **kwargs)

    def master_of(self, key):
        """The client port of the master that owns `key`'s slot now."""
        with contextlib.closing(self.client()) as cluster:
            return cluster.get_node_from_key(key).port

    def role(self, port):
        client = redis.Redis(port=port, decode_responses=True, socket_timeout=1)
        try:
            return client.role()[0]
        finally:
            client.close()

    def replica_of(self, master_port):
        """The client port of a replica of the master on `master_port`."""
        client = redis.Redis(port=master_port, decode_responses=True, socket_timeout=1)
        try:
            nodes = client.execute_command("CLUSTER", "NODES")
        finally:
            client.close()
        lines = [line.split() for line in nodes.splitlines()]
        [master_id] = [f[0] for f in lines if f[1].startswith(f"127.0.0.1:{master_port}@")]
        return next(int(f[1].split("@")[0].rsplit(":", 1)[1]) for f in lines if f[3] == master_id)

    def wait_replicas_synced(self, timeout=30):
        """Every replica's link to its master is up (only then can it take over)."""
        deadline = time.monotonic() + timeout
        while True:
            links = []
            for port in self.live_ports():
                client = redis.Redis(port=port, decode_responses=True, socket_timeout=1)
                try:
                    info = client.info("replication")
                finally:
                    client.close()
                if info["role"] == "slave":
                    links.append(info["master_link_status"] == "up")
            if len(links) == self.size - self.size // (1 + self.replicas_per_master) and all(links):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas not in sync after {timeout}s")
            time.sleep(0.1)

    def kill(self, port):
        """SIGKILL the node on `port` (no goodbye to the cluster: a crash)."""
        process = self.processes[port]
        process.kill()
        process.wait()

    def rejoin(self, port, timeout=30):
        """Start the node killed on `port` again, empty (no persistence) but with its
        nodes file: it rejoins as a replica of the master that took over, and this
        returns once every replica is in sync again."""
        self.start_node(port, self.bus_ports[self.ports.index(port)])
        self._wait_answers(port)
        self.wait_healthy(timeout)
        self.wait_replicas_synced(timeout)

    def flushall(self):
        for port in self.live_ports():
            if self.role(port) == "master":
                client = redis.Redis(port=port)
                try:
                    client.flushall()
                finally:
                    client.close()

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
