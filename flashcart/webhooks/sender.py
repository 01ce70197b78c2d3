"""One webhook request: POST a signed body to a checked address, within limits.

The name is resolved and checked here (destinations.check) and the connection goes
to a checked address, with the name kept for the Host header and for TLS (SNI and
the certificate check), so a name that re-resolves elsewhere cannot redirect it.
Redirects are not followed, each socket operation has a timeout, the whole request
a deadline, and at most `max_response_bytes` of the answer are read.
"""

import logging
import time
from dataclasses import dataclass

import urllib3

from flashcart.webhooks import destinations

log = logging.getLogger(__name__)
USER_AGENT = "FlashCart-Webhooks/1"
# Failures to connect at all, after which the next checked address is tried.
UNREACHABLE = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
EXCERPT_CHARS = 200


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int
    response_excerpt: str = ""

    @property
    def ok(self):
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def _pool(destination, address, timeout):
    common = {"timeout": timeout, "retries": False, "maxsize": 1}
    if destination.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            destination.port,
            cert_reqs="CERT_REQUIRED",
            server_hostname=destination.host,
            assert_hostname=destination.host,
            **common,
        )
    return urllib3.HTTPConnectionPool(address, destination.port, **common)


def _read_limited(response, limit, deadline):
    """Up to `limit` bytes of the answer, giving up at `deadline` (a slow drip)."""
    received = b""
    while len(received) < limit and time.monotonic() < deadline:
        chunk = response.read(min(16384, limit - len(received)), decode_content=False)
        if not chunk:
            break
        received += chunk
    return received


def post(url, body, headers, *, settings):
    """POST `body` (bytes) to `url`; an Outcome whatever happens (never raises)."""
    started = time.monotonic()
    timeout_seconds = settings["WEBHOOKS_TIMEOUT_SECONDS"]

    def outcome(status_code=None, error=None, excerpt=b""):
        duration_ms = int((time.monotonic() - started) * 1000)
        text = excerpt.decode("utf-8", "replace")[:EXCERPT_CHARS]
        return Outcome(status_code, error, duration_ms, text)

    try:
        destination = destinations.check(
            url,
            allow_http=settings["WEBHOOKS_ALLOW_HTTP"],
            allow_private=settings["WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS"],
        )
    except destinations.DestinationRefused as error:
        return outcome(error=f"destination refused: {error}")
    request_headers = {
        "Host": destination.host_header,
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
        **headers,
    }
    error = None
    # The checked addresses in the resolver's order: the next one only if this one
    # could not be reached at all, and within one timeout of the start (so a request
    # keeps within the deliverer's budget of two).
    for address in destination.addresses:
        if error is not None and time.monotonic() - started > timeout_seconds:
            break
        try:
            status, excerpt = _exchange(destination, address, body, request_headers, settings)
        except UNREACHABLE as unreachable:
            error = unreachable
            continue
        except (urllib3.exceptions.HTTPError, OSError) as failure:
            error = failure
            break
        if 300 <= status < 400:  # the Location is not followed
            return outcome(status, "redirects are not followed", excerpt)
        if not 200 <= status < 300:
            return outcome(status, f"answered {status}", excerpt)
        return outcome(status, None, excerpt)
    return outcome(error=f"{type(error).__name__}: {error}"[:EXCERPT_CHARS])


def _exchange(destination, address, body, headers, settings):
    """POST to one address; (status, the answer's first bytes)."""
    started = time.monotonic()
    timeout_seconds = settings["WEBHOOKS_TIMEOUT_SECONDS"]
    timeout = urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds)
    pool = _pool(destination, address, timeout)
    try:
        response = pool.urlopen(
            "POST",
            destination.target,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            assert_same_host=False,
            preload_content=False,
            timeout=timeout,
        )
        try:
            excerpt = _read_limited(
                response, settings["WEBHOOKS_MAX_RESPONSE_BYTES"], started + 2 * timeout_seconds
            )
        finally:
            response.close()
        return response.status, excerpt
    finally:
        pool.close()
