"""The app's memory of verified access tokens (flashcart/auth/roles.py, VerifiedTokens):
a token seen again skips the library's verification, never its expiry, revocation or
role checks, and never reaches a token it did not verify or another app."""

import logging
import time
from datetime import timedelta

import pytest
from flask import current_app
from flask_jwt_extended import create_access_token

from flashcart import create_app
from flashcart.auth import roles, tokens
from tests.support.app import app_settings

from .helpers import LOGOUT, REFRESH, assert_problem, bearer, claims_of, login

ORDERS = "/api/v1/orders"
PRODUCTS = "/api/v1/products"


@pytest.fixture
def library_checks(monkeypatch):
    """The apps whose requests ran the library's verification, one entry per run."""
    checked = []

    def counting(check):
        def counted(*args, **kwargs):
            checked.append(current_app._get_current_object())
            return check(*args, **kwargs)

        return counted

    # auth_required verifies through either (roles._verify).
    for module, name in ((tokens, "verify_access"), (roles, "verify_jwt_in_request")):
        monkeypatch.setattr(module, name, counting(getattr(module, name)))
    return checked


def test_a_token_verified_once_is_not_verified_again(client, user, library_checks):
    headers = bearer(login(client, user)["access_token"])

    for _ in range(3):
        assert client.get(ORDERS, headers=headers).status_code == 200

    assert library_checks == [client.application]


def test_a_request_on_a_remembered_token_is_logged_with_its_user(client, user, caplog):
    headers = bearer(login(client, user)["access_token"])

    with caplog.at_level(logging.INFO, logger="flashcart.access"):
        for _ in range(2):
            assert client.get(ORDERS, headers=headers).status_code == 200

    logged = [
        record.user_id
        for record in caplog.records
        if record.name == "flashcart.access" and record.path == ORDERS
    ]
    assert logged == [user["id"], user["id"]]


def test_a_logged_out_token_is_refused_on_the_very_next_request_though_remembered(
    client, user, mongo_db, redis_client, app_config, library_checks
):
    tokens = login(client, user)
    headers = bearer(tokens["access_token"])
    assert client.get(ORDERS, headers=headers).status_code == 200
    response = client.post(LOGOUT, json={"refresh_token": tokens["refresh_token"]}, headers=headers)
    assert response.status_code == 204
    assert library_checks == [client.application]  # the logout's own check was a hit

    remembered = client.get(ORDERS, headers=headers)

    assert library_checks == [client.application]
    assert_problem(remembered, 401, "token_revoked")
    # The library's answer, from an app that never saw the token, word for word.
    fresh = create_app(app_settings() | app_config, db=mongo_db, redis_client=redis_client)
    answered = fresh.test_client().get(ORDERS, headers=headers)
    assert library_checks[-1] is fresh
    assert (remembered.status_code, remembered.get_json()) == (401, answered.get_json())
    for name in ("WWW-Authenticate", "Content-Type"):
        assert remembered.headers[name] == answered.headers[name]
    assert remembered.headers["WWW-Authenticate"] == "Bearer"


def test_an_expired_token_is_refused_though_remembered(client, app, user):
    app.config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(seconds=1)
    token = login(client, user)["access_token"]
    assert client.get(ORDERS, headers=bearer(token)).status_code == 200

    time.sleep(max(0, claims_of(token)["exp"] - time.time()) + 0.05)

    assert_problem(client.get(ORDERS, headers=bearer(token)), 401, "token_expired")


def test_a_remembered_token_expires_with_the_librarys_leeway(client, app, user, library_checks):
    session_id = claims_of(login(client, user)["access_token"])["sid"]
    with app.app_context():
        late = create_access_token(
            identity=user["id"],
            additional_claims={"role": "user", "sid": session_id},
            expires_delta=timedelta(seconds=-5),
        )
    app.config["JWT_DECODE_LEEWAY"] = timedelta(seconds=30)
    assert client.get(ORDERS, headers=bearer(late)).status_code == 200
    assert client.get(ORDERS, headers=bearer(late)).status_code == 200  # within the leeway
    assert library_checks == [app]

    app.config["JWT_DECODE_LEEWAY"] = 0

    assert_problem(client.get(ORDERS, headers=bearer(late)), 401, "token_expired")
    assert library_checks == [app, app]  # the library gave the answer


def test_a_refresh_token_is_never_taken_as_an_access_token_even_after_a_refresh(client, user):
    tokens = login(client, user)
    assert client.get(ORDERS, headers=bearer(tokens["access_token"])).status_code == 200
    renewed = client.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    assert renewed.status_code == 200

    for refresh_token in (tokens["refresh_token"], renewed.json["refresh_token"]):
        for _ in range(2):
            refused = client.get(ORDERS, headers=bearer(refresh_token))
            assert "refresh" in assert_problem(refused, 401, "token_invalid")["detail"]


def test_a_token_differing_from_a_remembered_one_is_verified_and_refused(client, user):
    token = login(client, user)["access_token"]
    assert client.get(ORDERS, headers=bearer(token)).status_code == 200
    head, _, signature = token.rpartition(".")
    flipped = "B" if signature[5] == "A" else "A"

    for forged in (
        f"{head}.{signature[:5]}{flipped}{signature[6:]}",
        token + "x",
        token[:-4],
    ):
        assert_problem(client.get(ORDERS, headers=bearer(forged)), 401, "token_invalid")


def test_a_demoted_admin_loses_power_at_once_though_the_token_is_remembered(
    client, admin, admin_headers, mongo_db, library_checks
):
    product = {"name": "Drop", "price": "10.00", "stock": 5}
    assert client.post(PRODUCTS, json=product, headers=admin_headers).status_code == 201

    mongo_db.users.update_one({"email": admin["email"]}, {"$set": {"role": "user"}})

    assert_problem(client.post(PRODUCTS, json=product, headers=admin_headers), 403, "admin_only")
    assert library_checks == [client.application]


def test_a_token_one_app_verified_is_verified_again_by_another(
    client, user, app_config, mongo_db, redis_client, library_checks
):
    def another_app(**settings):
        return create_app(
            app_settings() | app_config | settings, db=mongo_db, redis_client=redis_client
        )

    alike, other_secret = another_app(), another_app(JWT_SECRET_KEY="another-" + "z" * 40)
    headers = bearer(login(client, user)["access_token"])
    for _ in range(2):
        assert client.get(ORDERS, headers=headers).status_code == 200

    assert alike.test_client().get(ORDERS, headers=headers).status_code == 200
    refused = other_secret.test_client().get(ORDERS, headers=headers)

    assert_problem(refused, 401, "token_invalid")
    assert library_checks == [client.application, alike, other_secret]


def test_a_bearer_header_is_no_token_where_tokens_come_only_from_elsewhere(
    client, user, app_config, mongo_db, redis_client
):
    headers = bearer(login(client, user)["access_token"])
    query_only = create_app(
        app_settings() | app_config | {"JWT_TOKEN_LOCATION": ["query_string"]},
        db=mongo_db,
        redis_client=redis_client,
    )

    refused = query_only.test_client().get(ORDERS, headers=headers)

    assert_problem(refused, 401, "token_missing")
