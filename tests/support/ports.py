"""A free loopback port for a server a test starts (or for nothing to listen on).

Ports come from outside the kernel's ephemeral range. A port the kernel hands out
for `bind(("127.0.0.1", 0))` is one it also hands to outgoing connections: until the
server binds it, any client on the machine may take it as its local port and keep
it, and gunicorn (which binds 0.0.0.0) then cannot start. Outside the range only a
server binds, and each port is checked free on every address before it is given.
"""

import random
import socket
from pathlib import Path

LOWEST, HIGHEST = 10000, 65535
_given = set()  # never twice in one process: two servers of one test would clash
_random = random.SystemRandom()  # whatever a test seeds `random` with


def _ephemeral_range():
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _outside_the_ephemeral_range():
    low, high = _ephemeral_range()
    if low - 1 - LOWEST >= 1000:
        return LOWEST, low - 1
    if HIGHEST - high - 1 >= 1000:
        return high + 1, HIGHEST
    return None


def _free_everywhere(port):
    for address in ("0.0.0.0", "127.0.0.1"):  # noqa: S104 - only a bind check
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def free_port():
    bounds = _outside_the_ephemeral_range()
    for _attempt in range(1000 if bounds else 0):
        port = _random.randint(*bounds)
        if port not in _given and _free_everywhere(port):
            _given.add(port)
            return port
    # The ephemeral range leaves no room: the kernel's choice, with its race.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
