"""Helpers for the attack tests: the problem shape, logins, and hand-made tokens."""

import base64
import json

from tests.support.app import PASSWORD
from tests.support.http import assert_problem  # noqa: F401 (the attack tests import it from here)

API = "/api/v1"
LOGIN = f"{API}/auth/login"
REFRESH = f"{API}/auth/refresh"
LOGOUT = f"{API}/auth/logout"
SIGNUP = f"{API}/auth/signup"


def login(client, user, password=PASSWORD):
    """The token pair of a real login."""
    response = client.post(LOGIN, json={"email": user["email"], "password": password})
    assert response.status_code == 200, response.json
    return response.json


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def b64(data):
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(segment):
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def claims_of(token):
    """The payload of a token, read without checking it (as an attacker would)."""
    return unb64(token.split(".")[1])
