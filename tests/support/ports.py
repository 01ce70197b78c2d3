"""A free loopback port for a server a test starts (or for nothing to listen on).

Ports come from below the kernel's ephemeral range. A port the kernel hands out for
`bind(("127.0.0.1", 0))` is one it also hands to outgoing connections: until the
server binds it, any client on the machine may take it as its local port and keep
it, and gunicorn (which binds 0.0.0.0) then cannot start. Below the range only a
server binds, and each port is checked free on every address before it is given.
"""

import random
import socket
from pathlib import Path

LOWEST = 10000
_given = set()  # never twice in one process: two servers of one test would clash


def _ephemeral_start():
    try:
        low, _high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low)
    except (OSError, ValueError):
        return 32768  # Linux's default


def _free_everywhere(port):
    for address in ("0.0.0.0", "127.0.0.1"):  # noqa: S104 - only a bind check
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def free_port():
    highest = _ephemeral_start() - 1
    for _attempt in range(1000):
        port = random.randint(LOWEST, highest)  # noqa: S311 - not a secret
        if port not in _given and _free_everywhere(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port found between {LOWEST} and {highest}")
