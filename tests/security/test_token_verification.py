"""tokens.verify_access checks an access token in one pass, and gives for every token
exactly the answer of flask-jwt-extended's own `decode_token`: the same claims, or
the same error."""

import time
import warnings
from datetime import timedelta

import jwt
import pytest
from flask_jwt_extended import decode_token
from jwt.warnings import InsecureKeyLengthWarning

from flashcart.auth import tokens

SECRET = "testing-secret-that-is-long-enough-0123456789"  # TestingConfig's
# An HS512 token under the suite's 45-byte secret is one of the cases, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def encoded(secret=SECRET, algorithm="HS256", **changes):
    now = int(time.time())
    claims = {
        "sub": "6b0000000000000000000001",
        "iat": now,
        "exp": now + 600,
        "type": "access",
        "jti": "a-token",
        "fresh": False,
        "role": "user",
        "sid": "a-session",
    }
    claims |= changes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm)


def answer(verify, token):
    try:
        return ("claims", dict(verify(token)))
    except Exception as error:  # noqa: BLE001 - the answer is the error's type
        return ("error", type(error))


# Made when a test runs, never at collection: expiry and nbf are relative to now.
TOKENS = {
    "an access token": encoded,
    "one without jti or fresh": lambda: encoded(jti=None, fresh=None),
    "a refresh token": lambda: encoded(type="refresh"),
    "one without a type": lambda: encoded(type=None),
    "one expired": lambda: encoded(exp=int(time.time()) - 120),
    "one not valid yet": lambda: encoded(nbf=int(time.time()) + 120),
    "one signed with another secret": lambda: encoded(secret=SECRET.replace("testing", "another")),
    "one signed with another algorithm": lambda: encoded(algorithm="HS512"),
    "one unsigned": lambda: encoded(algorithm="none", secret=None),
    "one without a subject": lambda: encoded(sub=None),
    "one whose subject is no string": lambda: encoded(sub=42),
    "one with an audience": lambda: encoded(aud="someone"),
    "one that is no token": lambda: "not.a.token",
    "an empty one": lambda: "",
}


@pytest.mark.parametrize("name", list(TOKENS))
def test_every_token_gets_the_library_answer(app, name):
    token = TOKENS[name]()
    with app.app_context():
        assert answer(tokens.verify_access, token) == answer(decode_token, token)


@pytest.mark.parametrize(
    "settings",
    [
        {"JWT_DECODE_LEEWAY": timedelta(seconds=300)},
        {"JWT_DECODE_LEEWAY": 300},
        {"JWT_VERIFY_SUB": False},
        {"JWT_DECODE_AUDIENCE": "someone"},
        {"JWT_DECODE_ALGORITHMS": ["HS256", "HS512"]},
        {"JWT_IDENTITY_CLAIM": "uid"},
    ],
    ids=str,
)
def test_under_other_settings_too(app, settings):
    app.config.update(settings)
    with app.app_context():
        for make in TOKENS.values():
            token = make()
            assert answer(tokens.verify_access, token) == answer(decode_token, token)


def test_an_access_token_is_parsed_once_not_by_the_library(app, monkeypatch):
    library = []
    monkeypatch.setattr(tokens, "decode_token", lambda token: library.append(token))
    access, refresh = TOKENS["an access token"](), TOKENS["a refresh token"]()
    with app.app_context():
        claims = tokens.verify_access(access)
        tokens.verify_access(refresh)

    assert claims["sub"] == "6b0000000000000000000001"
    assert library == [refresh]
