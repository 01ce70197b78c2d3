"""Tokens: short-lived access tokens, one-use refresh tokens, logout that revokes both,
and every kind of bad token refused with 401 in the problem shape."""

import hashlib
import hmac
import threading
import time
from datetime import UTC, timedelta

import jwt as pyjwt
import pytest
from flask_jwt_extended import create_access_token, create_refresh_token

from flashcart import create_app
from flashcart.auth import service as accounts
from tests.support.app import app_settings

from .helpers import (
    LOGOUT,
    REFRESH,
    assert_problem,
    b64,
    bearer,
    claims_of,
    login,
    unb64,
)

ORDERS = "/api/v1/orders"


def refresh(client, token):
    return client.post(REFRESH, json={"refresh_token": token})


def logout(client, tokens):
    return client.post(
        LOGOUT,
        json={"refresh_token": tokens["refresh_token"]},
        headers=bearer(tokens["access_token"]),
    )


# -- lifetimes ---------------------------------------------------------------------


def test_login_returns_a_15_minute_access_token_and_a_7_day_refresh_token(client, user):
    tokens = login(client, user)

    access, refresh_ = claims_of(tokens["access_token"]), claims_of(tokens["refresh_token"])
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 15 * 60 == access["exp"] - access["iat"]
    assert tokens["refresh_expires_in"] == 7 * 24 * 3600 == refresh_["exp"] - refresh_["iat"]
    assert (access["type"], refresh_["type"]) == ("access", "refresh")
    assert access["role"] == "user" and access["sub"] == refresh_["sub"] == user["id"]
    # The refresh token carries no role: the role is read from the account on refresh.
    assert "role" not in refresh_


def test_token_lifetimes_come_from_the_config(client, user):
    app = client.application
    app.config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(seconds=60)
    app.config["JWT_REFRESH_TOKEN_EXPIRES"] = timedelta(seconds=600)

    tokens = login(client, user)

    assert (tokens["expires_in"], tokens["refresh_expires_in"]) == (60, 600)
    assert claims_of(tokens["access_token"])["exp"] - claims_of(tokens["access_token"])["iat"] == 60


# -- refresh -----------------------------------------------------------------------


def test_a_refresh_token_buys_a_new_pair_that_works(client, user):
    tokens = login(client, user)

    renewed = refresh(client, tokens["refresh_token"])

    assert renewed.status_code == 200
    assert renewed.json["access_token"] != tokens["access_token"]
    assert renewed.json["refresh_token"] != tokens["refresh_token"]
    assert renewed.json["user"]["id"] == user["id"]
    assert client.get(ORDERS, headers=bearer(renewed.json["access_token"])).status_code == 200


def test_a_refresh_token_replayed_after_use_is_refused(client, user):
    tokens = login(client, user)
    assert refresh(client, tokens["refresh_token"]).status_code == 200

    replay = refresh(client, tokens["refresh_token"])

    assert_problem(replay, 401, "token_revoked")


def test_the_same_refresh_token_sent_by_many_at_once_buys_one_pair(client, user):
    token = login(client, user)["refresh_token"]
    app = client.application
    results = []

    def attempt():
        results.append(app.test_client().post(REFRESH, json={"refresh_token": token}))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(response.status_code for response in results) == [200] + [401] * 7
    # The seven were reuses: the pair the first one bought is revoked with its session.
    (bought,) = [response.json for response in results if response.status_code == 200]
    assert_problem(client.get(ORDERS, headers=bearer(bought["access_token"])), 401, "token_revoked")
    assert_problem(refresh(client, bought["refresh_token"]), 401, "token_revoked")


def test_an_access_token_cannot_be_used_to_refresh(client, user):
    tokens = login(client, user)

    assert_problem(refresh(client, tokens["access_token"]), 401, "token_invalid")


def test_a_refresh_token_cannot_be_used_as_an_access_token(client, user, make_product):
    tokens = login(client, user)
    product = make_product(live=True)

    for response in (
        client.get(ORDERS, headers=bearer(tokens["refresh_token"])),
        client.post(
            f"/api/v1/sales/reserve/{product['id']}", headers=bearer(tokens["refresh_token"])
        ),
        client.post(
            LOGOUT,
            json={"refresh_token": tokens["refresh_token"]},
            headers=bearer(tokens["refresh_token"]),
        ),
    ):
        body = assert_problem(response, 401, "token_invalid")
        assert "refresh" in body["detail"]


def test_an_expired_refresh_token_is_refused(client, app, user):
    with app.app_context():
        expired = create_refresh_token(identity=user["id"], expires_delta=timedelta(seconds=-5))

    assert_problem(refresh(client, expired), 401, "token_expired")


def test_a_tampered_or_foreign_refresh_token_is_refused(client, user, admin):
    token = login(client, user)["refresh_token"]
    header, payload, signature = token.split(".")
    as_admin = ".".join([header, b64(unb64(payload) | {"sub": admin["id"]}), signature])
    foreign = pyjwt.encode(
        {**claims_of(token), "jti": "x"}, "another-secret-that-is-long-enough-0123", "HS256"
    )

    for forged in (as_admin, foreign, "garbage", token + "x", "a.b.c"):
        assert_problem(refresh(client, forged), 401, "token_invalid")


def test_refresh_reads_the_role_from_the_account(client, mongo_db, user):
    tokens = login(client, user)
    mongo_db.users.update_one({"email": user["email"]}, {"$set": {"role": "admin"}})

    renewed = refresh(client, tokens["refresh_token"]).json

    assert claims_of(renewed["access_token"])["role"] == "admin"
    assert renewed["user"]["role"] == "admin"


def test_refresh_for_a_deleted_account_is_refused(client, mongo_db, user):
    tokens = login(client, user)
    mongo_db.users.delete_one({"email": user["email"]})

    assert_problem(refresh(client, tokens["refresh_token"]), 401, "token_revoked")


# -- logout --------------------------------------------------------------------------


def test_logout_revokes_both_the_access_and_the_refresh_token(client, user):
    tokens = login(client, user)
    assert client.get(ORDERS, headers=bearer(tokens["access_token"])).status_code == 200

    response = logout(client, tokens)

    assert response.status_code == 204
    assert response.get_data() == b""
    assert_problem(client.get(ORDERS, headers=bearer(tokens["access_token"])), 401, "token_revoked")
    assert_problem(refresh(client, tokens["refresh_token"]), 401, "token_revoked")
    # Logging out twice with the same tokens: the access token is already dead.
    assert_problem(logout(client, tokens), 401, "token_revoked")


def test_logout_leaves_the_users_other_sessions_alone(client, user):
    laptop, phone = login(client, user), login(client, user)

    assert logout(client, laptop).status_code == 204

    assert client.get(ORDERS, headers=bearer(phone["access_token"])).status_code == 200
    assert refresh(client, phone["refresh_token"]).status_code == 200


def test_an_ended_session_is_kept_in_mongodb_and_cached_until_its_tokens_expire(
    client, user, mongo_db, redis_client
):
    tokens = login(client, user)
    session_id = claims_of(tokens["access_token"])["sid"]
    assert claims_of(tokens["refresh_token"])["sid"] == session_id

    assert logout(client, tokens).status_code == 204

    stored = mongo_db.sessions.find_one({"_id": session_id})
    assert stored["user_id"] == user["id"]
    assert stored["ended_at"] is not None and stored["end_reason"] == "logout"
    # MongoDB's TTL index drops it once its last token has expired.
    refresh_exp = claims_of(tokens["refresh_token"])["exp"]
    assert abs(stored["expires_at"].replace(tzinfo=UTC).timestamp() - refresh_exp) <= 2
    ttl = redis_client.ttl(f"fc:session:{session_id}")
    assert 0 < ttl <= refresh_exp - time.time() + 1


def test_logout_refuses_another_users_refresh_token_and_revokes_nothing(client, user, make_user):
    mine, theirs = login(client, user), login(client, make_user())

    response = client.post(
        LOGOUT,
        json={"refresh_token": theirs["refresh_token"]},
        headers=bearer(mine["access_token"]),
    )

    assert_problem(response, 401, "token_invalid")
    assert client.get(ORDERS, headers=bearer(mine["access_token"])).status_code == 200
    assert refresh(client, theirs["refresh_token"]).status_code == 200


def test_logout_accepts_an_already_expired_refresh_token(client, app, user):
    tokens = login(client, user)
    with app.app_context():
        expired = create_refresh_token(identity=user["id"], expires_delta=timedelta(seconds=-5))

    response = logout(client, tokens | {"refresh_token": expired})

    assert response.status_code == 204
    assert_problem(client.get(ORDERS, headers=bearer(tokens["access_token"])), 401, "token_revoked")


def test_logout_needs_an_access_token_and_a_refresh_token(client, user):
    tokens = login(client, user)

    assert_problem(
        client.post(LOGOUT, json={"refresh_token": tokens["refresh_token"]}), 401, "token_missing"
    )
    assert_problem(
        client.post(LOGOUT, json={}, headers=bearer(tokens["access_token"])),
        422,
        "validation_error",
    )


def logged_out_after_another_worker_cached_it(client, user, mongo_db, redis_client, app_config):
    """(tokens, that other worker's client): a second gunicorn worker, sharing the stores,
    accepted the tokens (caching their session live); then they were logged out here."""
    worker = create_app(app_settings() | app_config, db=mongo_db, redis_client=redis_client)
    other = worker.test_client()
    tokens = login(client, user)
    assert other.get(ORDERS, headers=bearer(tokens["access_token"])).status_code == 200
    assert logout(client, tokens).status_code == 204
    return tokens, other


def test_a_revoked_token_is_refused_by_every_worker_even_one_that_cached_it(
    client, user, mongo_db, redis_client, app_config
):
    tokens, other = logged_out_after_another_worker_cached_it(
        client, user, mongo_db, redis_client, app_config
    )

    assert_problem(other.get(ORDERS, headers=bearer(tokens["access_token"])), 401, "token_revoked")


# -- revocation survives the loss of Redis's data ------------------------------------


def lose_redis_data(redis_client, runner):
    """Redis restarts empty; the operator rebuilds the sales as README says."""
    redis_client.flushall()
    for args in (["audit", "--repair"], ["sweep"]):
        assert runner.invoke(args=args).exit_code == 0


def test_a_logout_holds_after_redis_loses_its_data(client, runner, user, redis_client):
    ended, other = login(client, user), login(client, user)
    assert logout(client, ended).status_code == 204

    lose_redis_data(redis_client, runner)

    assert_problem(client.get(ORDERS, headers=bearer(ended["access_token"])), 401, "token_revoked")
    assert_problem(refresh(client, ended["refresh_token"]), 401, "token_revoked")
    # A session that was never ended still works, from MongoDB, then from the cache again.
    for _ in range(2):
        assert client.get(ORDERS, headers=bearer(other["access_token"])).status_code == 200
    assert redis_client.get(f"fc:session:{claims_of(other['access_token'])['sid']}") == "live"


def test_a_spent_refresh_token_stays_spent_after_redis_loses_its_data(
    client, runner, user, redis_client
):
    first = login(client, user)
    second = refresh(client, first["refresh_token"]).json

    lose_redis_data(redis_client, runner)

    assert_problem(refresh(client, first["refresh_token"]), 401, "token_revoked")
    # That was a reuse: the session it belongs to has ended.
    assert_problem(client.get(ORDERS, headers=bearer(second["access_token"])), 401, "token_revoked")


def test_an_ended_session_stays_ended_on_a_worker_that_had_cached_it_live(
    client, user, mongo_db, redis_client, app_config
):
    tokens, other = logged_out_after_another_worker_cached_it(
        client, user, mongo_db, redis_client, app_config
    )
    redis_client.flushall()

    assert_problem(other.get(ORDERS, headers=bearer(tokens["access_token"])), 401, "token_revoked")


def test_a_token_without_a_login_session_is_refused(client, app, user):
    # Signed with the right key (before sessions existed): no logout could reach it.
    with app.app_context():
        access = create_access_token(identity=user["id"], additional_claims={"role": "user"})
        refresh_ = create_refresh_token(identity=user["id"])

    assert_problem(client.get(ORDERS, headers=bearer(access)), 401, "token_revoked")
    assert_problem(refresh(client, refresh_), 401, "token_revoked")


def test_a_refresh_keeps_the_session_cached_as_long_as_its_new_access_token(
    client, user, redis_client
):
    tokens = login(client, user)
    key = f"fc:session:{claims_of(tokens['access_token'])['sid']}"
    redis_client.expire(key, 5)  # the login's entry is about to lapse

    renewed = refresh(client, tokens["refresh_token"]).json

    # Its requests are answered from Redis, without reading MongoDB, to their end.
    access = claims_of(renewed["access_token"])
    assert redis_client.get(key) == "live"
    assert (
        access["exp"] - time.time() - 2 <= redis_client.ttl(key) <= access["exp"] - time.time() + 1
    )


def test_a_logout_landing_while_a_worker_refills_the_cache_wins(
    client, user, redis_client, monkeypatch
):
    from flashcart.auth import sessions

    tokens = login(client, user)
    session_id = claims_of(tokens["access_token"])["sid"]
    redis_client.flushall()
    stored = sessions._sessions

    class LogoutRightAfterTheRead:
        """MongoDB as a worker refilling the cache sees it, with a logout landing
        between its read ("live") and its write to Redis."""

        fired = False

        def __getattr__(self, name):
            return getattr(stored(), name)

        def find_one(self, *args, **kwargs):
            found = stored().find_one(*args, **kwargs)
            if not self.fired:
                self.fired = True
                sessions.end(session_id=session_id)
            return found

    collection = LogoutRightAfterTheRead()
    monkeypatch.setattr(sessions, "_sessions", lambda: collection)
    # The refill read "live" before the logout, so this one request still passes...
    assert client.get(ORDERS, headers=bearer(tokens["access_token"])).status_code == 200
    monkeypatch.undo()

    # ...but it did not cache "live" over the logout's "ended".
    assert redis_client.get(f"fc:session:{session_id}") == "ended"
    assert_problem(client.get(ORDERS, headers=bearer(tokens["access_token"])), 401, "token_revoked")


# -- a stolen refresh token ----------------------------------------------------------


def test_when_a_thief_refreshes_first_the_victims_refresh_ends_the_thiefs_session(
    client, user, mongo_db
):
    victim = login(client, user)
    thief = refresh(client, victim["refresh_token"]).json  # the stolen token, used first

    assert_problem(refresh(client, victim["refresh_token"]), 401, "token_revoked")

    assert_problem(client.get(ORDERS, headers=bearer(thief["access_token"])), 401, "token_revoked")
    assert_problem(refresh(client, thief["refresh_token"]), 401, "token_revoked")
    session = mongo_db.sessions.find_one({"_id": claims_of(thief["access_token"])["sid"]})
    assert session["end_reason"] == "refresh_token_reused"


def test_when_the_victim_logs_out_every_token_of_that_login_dies(client, user):
    victim = login(client, user)
    thief = refresh(client, victim["refresh_token"]).json
    thief = refresh(client, thief["refresh_token"]).json  # and again

    assert logout(client, victim).status_code == 204

    assert_problem(client.get(ORDERS, headers=bearer(thief["access_token"])), 401, "token_revoked")
    assert_problem(refresh(client, thief["refresh_token"]), 401, "token_revoked")


def test_a_reuse_ends_only_the_session_it_belongs_to(client, user):
    laptop, phone = login(client, user), login(client, user)
    refresh(client, laptop["refresh_token"])

    assert_problem(refresh(client, laptop["refresh_token"]), 401, "token_revoked")

    assert client.get(ORDERS, headers=bearer(phone["access_token"])).status_code == 200
    assert refresh(client, phone["refresh_token"]).status_code == 200


def _live_session(app, user):
    """Claims naming a live login session of `user`, for hand-made tokens."""
    with app.app_context():
        return {"sid": claims_of(accounts.issue_token(user)["access_token"])["sid"]}


def test_each_verified_token_is_seen_with_its_own_header(app, user):
    # A caller changing the header it was handed changes no other request's.
    from flask_jwt_extended import get_jwt_header, verify_jwt_in_request

    session = _live_session(app, user)
    with app.app_context():
        tokens = [
            create_access_token(
                identity=user["id"], additional_headers=extra, additional_claims=session
            )
            for extra in ({}, {"kid": "k1"}, {}, {"kid": "k2"})
        ]
    for token in tokens:
        with app.test_request_context(headers=bearer(token)):
            verify_jwt_in_request()
            seen = get_jwt_header()
            assert seen == pyjwt.get_unverified_header(token)
            seen["kid"] = "changed by a caller"
    with app.test_request_context(headers=bearer(tokens[0])):
        verify_jwt_in_request()
        assert "kid" not in get_jwt_header()


def test_two_apps_in_one_process_each_keep_their_own_token_settings(
    client, user, app_config, mongo_db, redis_client
):
    # One JWTManager object serves both: nothing one app verified may carry over.
    settings = {
        "JWT_SECRET_KEY": "another-secret-" + "y" * 40,
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=120),
    }
    other = create_app(
        app_settings() | app_config | settings, db=mongo_db, redis_client=redis_client
    ).test_client()
    here, there = login(client, user), login(other, user)
    assert (here["expires_in"], there["expires_in"]) == (15 * 60, 120)

    for _ in range(2):  # each token verified by its own app first, then tried on the other
        assert client.get(ORDERS, headers=bearer(here["access_token"])).status_code == 200
        assert other.get(ORDERS, headers=bearer(there["access_token"])).status_code == 200
        refused = other.get(ORDERS, headers=bearer(here["access_token"]))
        assert_problem(refused, 401, "token_invalid")
        refused = client.get(ORDERS, headers=bearer(there["access_token"]))
        assert_problem(refused, 401, "token_invalid")


# -- bad access tokens ---------------------------------------------------------------


def _sign(header, payload, secret):
    signing_input = f"{b64(header)}.{b64(payload)}".encode()
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[
        header["alg"]
    ]
    return f"{signing_input.decode()}.{b64(hmac.new(secret, signing_input, digest).digest())}"


def forged_tokens(app, user):
    """(name, token) pairs, each an attack on the token check."""
    with app.app_context():
        real = create_access_token(identity=user["id"], additional_claims={"role": "user"})
        expired = create_access_token(
            identity=user["id"],
            additional_claims={"role": "user"},
            expires_delta=timedelta(seconds=-1),
        )
    secret = app.config["JWT_SECRET_KEY"].encode()
    header, payload, signature = real.split(".")
    claims = unb64(payload)
    as_admin = claims | {"role": "admin"}
    return [
        ("role rewritten", ".".join([header, b64(as_admin), signature]), "token_invalid"),
        (
            "subject rewritten",
            ".".join([header, b64(claims | {"sub": "0" * 24}), signature]),
            "token_invalid",
        ),
        ("signature dropped", f"{header}.{payload}.", "token_invalid"),
        ("alg none", f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(as_admin)}.", "token_invalid"),
        ("alg None", f"{b64({'alg': 'None', 'typ': 'JWT'})}.{b64(as_admin)}.", "token_invalid"),
        (
            "other algorithm, right secret",
            _sign({"alg": "HS512", "typ": "JWT"}, as_admin, secret),
            "token_invalid",
        ),
        (
            "wrong secret",
            _sign({"alg": "HS256", "typ": "JWT"}, as_admin, b"guess"),
            "token_invalid",
        ),
        ("empty secret", _sign({"alg": "HS256", "typ": "JWT"}, as_admin, b""), "token_invalid"),
        ("expired", expired, "token_expired"),
        (
            "expiry extended",
            ".".join([header, b64(claims | {"exp": claims["exp"] + 10**6}), signature]),
            "token_invalid",
        ),
        ("not a jwt", "garbage", "token_invalid"),
    ]


def test_every_forged_or_expired_access_token_is_refused_with_401(
    client, app, user, mongo_db, make_product
):
    product = make_product(live=True)
    for name, token, code in forged_tokens(app, user):
        for method, path in (
            ("GET", ORDERS),
            ("POST", f"/api/v1/sales/reserve/{product['id']}"),
            ("POST", "/api/v1/products"),
        ):
            response = client.open(path, method=method, json={}, headers=bearer(token))
            body = assert_problem(response, 401)
            assert body["code"] == code, (name, path, body)
            assert response.headers["WWW-Authenticate"] == "Bearer", name
    assert mongo_db.orders.count_documents({}) == 0


@pytest.mark.parametrize(
    "authorization", ["", "Bearer", "Basic dXNlcjpwYXNz", "bearer", "Bearer a b"]
)
def test_a_missing_or_malformed_authorization_header_is_refused(client, authorization):
    response = client.get(ORDERS, headers={"Authorization": authorization})

    body = assert_problem(response, 401)
    assert body["code"] in {"token_missing", "token_invalid"}
