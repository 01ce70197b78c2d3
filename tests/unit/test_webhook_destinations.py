"""Where webhooks may go (the SSRF checks), how long retries wait, what a signature is."""

import hashlib
import hmac

import pytest

from flashcart.webhooks import destinations, signatures
from flashcart.webhooks.deliverer import backoff_seconds
from flashcart.webhooks.destinations import DestinationRefused, check


def public(host, port):
    return ["93.184.215.14"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/h",
        "http://127.8.9.10/h",
        "http://10.0.0.7/h",
        "http://172.16.3.4/h",
        "http://192.168.1.1/h",
        "http://100.64.0.1/h",  # shared (carrier-grade NAT)
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/h",
        "http://[::ffff:10.0.0.1]/h",
        "http://[fd00:ec2::254]/h",
        "http://[fe80::1]/h",
        "http://0.0.0.0/h",
        "http://224.0.0.1/h",
        "http://localhost/h",
    ],
)
def test_loopback_private_link_local_and_metadata_addresses_are_refused(url):
    with pytest.raises(DestinationRefused, match="resolves to"):
        check(url, allow_http=True, allow_private=False)


def test_a_name_is_refused_if_any_of_its_addresses_is_private():
    def mixed(host, port):
        return ["93.184.215.14", "10.0.0.1"]

    with pytest.raises(DestinationRefused, match="10.0.0.1"):
        check("https://hooks.example/h", allow_http=False, allow_private=False, resolver=mixed)


def test_allowing_private_destinations_admits_loopback_but_never_metadata_or_link_local():
    assert check("http://127.0.0.1:9/h", allow_http=True, allow_private=True).addresses == (
        "127.0.0.1",
    )
    check("http://10.1.2.3/h", allow_http=True, allow_private=True)
    check("http://[::1]:9/h", allow_http=True, allow_private=True)
    for url in ("http://169.254.169.254/", "http://[fd00:ec2::254]/", "http://169.254.1.1/"):
        with pytest.raises(DestinationRefused):
            check(url, allow_http=True, allow_private=True)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example/h", "must use https"),
        ("ftp://hooks.example/h", "must use https"),
        ("https://user:pw@hooks.example/h", "user name or password"),
        ("https:///h", "no host"),
        ("https://[/h", "not valid"),
        ("https://hooks.example:99999/h", "not valid"),
    ],
)
def test_malformed_or_plain_http_urls_are_refused(url, why):
    with pytest.raises(DestinationRefused, match=why):
        check(url, allow_http=False, allow_private=False, resolver=public)


def test_a_checked_destination_keeps_the_name_for_host_and_tls_and_the_addresses_to_connect():
    destination = check(
        "https://hooks.example:8443/in?x=1", allow_http=False, allow_private=False, resolver=public
    )
    assert destination.addresses == ("93.184.215.14",)
    assert (destination.host, destination.port, destination.target) == (
        "hooks.example",
        8443,
        "/in?x=1",
    )
    assert destination.host_header == "hooks.example:8443"


def test_a_name_that_does_not_resolve_is_refused():
    with pytest.raises(DestinationRefused, match="does not resolve"):
        destinations.check("https://no-such-host.invalid/", allow_http=False, allow_private=False)


def test_the_waits_between_attempts_double_up_to_the_cap_with_the_upper_half_random():
    for attempts, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80), (10, 300), (30, 300)]:
        waits = [backoff_seconds(attempts, base=10, cap=300) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 100  # jitter: receivers are not hit in step


def test_the_signature_is_hmac_sha256_over_the_timestamp_and_body_with_each_secret():
    body = b'{"id":"evt_1"}'
    header = signatures.header(["whsec_new", "whsec_old"], 1767225600, body)
    new = hmac.new(b"whsec_new", b"1767225600." + body, hashlib.sha256).hexdigest()
    old = hmac.new(b"whsec_old", b"1767225600." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1767225600,v1={new},v1={old}"
    assert signatures.new_secret() != signatures.new_secret()
