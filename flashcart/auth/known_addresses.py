"""Client addresses an account has logged in from, so its owner is not locked out.

Login limits (flashcart/rate_limits.py) throttle failed logins per account and
address, and per account from any address it has not logged in from before. An
address is remembered for LOGIN_KNOWN_ADDRESS_DAYS after each successful login, so
someone guessing from elsewhere cannot shut the owner out (OWASP's device-cookie
idea, by address). Kept in Redis under a hash of account and address, so no key
names an email or an IP; losing it only means the owner's next login from there
counts as from a new address.
"""

import hashlib

from flask import current_app

from flashcart.auth import emails
from flashcart.extensions import stores


def _key(email, address):
    pair = f"{emails.normalise(email)}\n{address}".encode()
    return f"fc:login-from:{hashlib.sha256(pair).hexdigest()[:32]}"


def remember(email, address):
    """`address` has just logged in to the account `email`."""
    days = current_app.config["LOGIN_KNOWN_ADDRESS_DAYS"]
    if days > 0:
        stores.redis.set(_key(email, address), "1", ex=days * 24 * 3600)


def is_known(email, address):
    """Whether the account `email` has logged in from `address` lately."""
    return bool(stores.redis.exists(_key(email, address)))
