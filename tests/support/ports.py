"""A free loopback port for a server a test starts (or for nothing to listen on)."""

import socket


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
