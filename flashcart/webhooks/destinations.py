"""Where a webhook may be sent: the server-side request forgery checks.

A URL is checked when an endpoint is registered and again before every delivery,
since its name may resolve elsewhere by then. `check` resolves the name once,
refuses it if any address is one the API must not reach, and hands back the checked
addresses: the sender connects to one of them, never to a second resolution.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

# Cloud metadata services: refused even where private destinations are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
DEFAULT_PORTS = {"http": 80, "https": 443}


class DestinationRefused(ValueError):
    """The URL names a destination webhooks may not be sent to."""


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str  # the name, for the Host header and TLS (SNI and certificate check)
    port: int
    target: str  # path and query
    addresses: tuple  # the checked addresses, in resolver order

    @property
    def host_header(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def resolve(host, port):
    """Every address `host` resolves to (IP literals resolve to themselves)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise DestinationRefused(f"{host} does not resolve: {error}") from None
    return [info[4][0] for info in infos]


def refusal(address, *, allow_private):
    """Why `address` may not be reached, or None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified or ip.is_multicast:
        return "not a unicast address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_loopback or ip.is_private:
        return None if allow_private else "a loopback or private address"
    if not ip.is_global:
        return "not a public address"
    return None


def check(url, *, allow_http, allow_private, resolver=None):
    """The Destination for `url`, or DestinationRefused saying why not."""
    try:
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port
    except ValueError as error:  # "http://[", a port out of range...
        raise DestinationRefused(f"The URL is not valid: {error}.") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise DestinationRefused(f"The URL must use {' or '.join(schemes)}.")
    if parts.username or parts.password:
        raise DestinationRefused("The URL must not carry a user name or password.")
    if not hostname:
        raise DestinationRefused("The URL has no host.")
    port = port or DEFAULT_PORTS[parts.scheme]
    addresses = (resolver or resolve)(hostname, port)
    if not addresses:
        raise DestinationRefused(f"{hostname} does not resolve.")
    for address in addresses:
        why = refusal(address, allow_private=allow_private)
        if why:
            raise DestinationRefused(f"{hostname} resolves to {address}: {why}.")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(parts.scheme, hostname, port, target, tuple(addresses))
