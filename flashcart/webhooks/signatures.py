"""Signing a delivery, as Stripe does: HMAC-SHA256 over "<timestamp>.<body>".

The header is `FlashCart-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]`: one v1 per
secret in use (two while a rotated-out secret is still honoured). A receiver
recomputes the HMAC with its secret, compares it in constant time with each v1, and
refuses an old timestamp (docs/webhooks.md).
"""

import hashlib
import hmac
import secrets

HEADER = "FlashCart-Signature"
SECRET_PREFIX = "whsec_"  # noqa: S105  # nosec B105 # a prefix, not a secret


def new_secret():
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret, timestamp, body):
    """The hex HMAC-SHA256 of "<timestamp>.<body>" under `secret` (body: bytes)."""
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def header(secrets_in_use, timestamp, body):
    """The FlashCart-Signature value for `body`, signed with every secret in use."""
    parts = [f"t={int(timestamp)}"]
    parts += [f"v1={signature(secret, timestamp, body)}" for secret in secrets_in_use]
    return ",".join(parts)
