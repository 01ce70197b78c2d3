"""Accounts: sign-up, login, roles in the token, and the guards on admin routes."""

import base64
import json
from datetime import timedelta

import jwt as pyjwt
import pytest
from argon2 import PasswordHasher
from flask_jwt_extended import create_access_token, decode_token

from tests.support.app import PASSWORD
from tests.support.http import assert_problem

SIGNUP = "/api/v1/auth/signup"
LOGIN = "/api/v1/auth/login"


def signup(client, email="shopper@example.com", password=PASSWORD, name="Shopper", **extra):
    return client.post(SIGNUP, json={"email": email, "password": password, "name": name} | extra)


# -- sign-up -----------------------------------------------------------------


def test_signup_creates_a_user_account_and_returns_it_without_secrets(client, mongo_db):
    response = signup(client, email="Shopper@Example.com")

    assert response.status_code == 201
    body = response.json
    assert body["email"] == "shopper@example.com"
    assert body["name"] == "Shopper"
    assert body["role"] == "user"
    assert "password" not in body and "password_hash" not in body
    stored = mongo_db.users.find_one({"email": "shopper@example.com"})
    assert stored is not None
    assert str(stored["_id"]) == body["id"]
    assert stored["role"] == "user"


def test_signup_refuses_a_role_field_as_unknown_and_writes_nothing(client, mongo_db):
    response = signup(client, role="admin")

    body = assert_problem(response, 422, "validation_error")
    assert "role" in body["errors"]
    assert mongo_db.users.count_documents({}) == 0


def test_signup_email_is_unique_case_insensitively(client, mongo_db):
    assert signup(client, email="dup@example.com").status_code == 201

    again = signup(client, email="  DUP@Example.COM ", name="Impostor")

    assert_problem(again, 409, "email_taken")
    assert mongo_db.users.count_documents({}) == 1
    assert mongo_db.users.find_one()["name"] == "Shopper"


def test_signup_stores_only_an_argon2_hash_of_the_password(client, mongo_db):
    assert signup(client, email="hash@example.com").status_code == 201

    stored = mongo_db.users.find_one({"email": "hash@example.com"})
    digest = stored["password_hash"]
    assert digest.startswith("$argon2id$")
    assert PasswordHasher().verify(digest, PASSWORD)
    # The plaintext appears in no field of the document.
    assert PASSWORD not in json.dumps(stored, default=str)
    assert "password" not in stored


def test_two_accounts_with_the_same_password_get_different_hashes(client, mongo_db):
    assert signup(client, email="one@example.com").status_code == 201
    assert signup(client, email="two@example.com").status_code == 201

    hashes = {doc["password_hash"] for doc in mongo_db.users.find()}
    assert len(hashes) == 2


# -- login ---------------------------------------------------------------------


def test_login_returns_a_bearer_token_carrying_the_user_role(client, app, user):
    response = client.post(LOGIN, json={"email": user["email"], "password": PASSWORD})

    assert response.status_code == 200
    body = response.json
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["user"]["id"] == user["id"]
    assert "password_hash" not in body["user"]
    with app.app_context():
        claims = decode_token(body["access_token"])
    assert claims["sub"] == user["id"]
    assert claims["role"] == "user"


def test_login_token_of_an_admin_carries_the_admin_role(client, app, admin):
    response = client.post(LOGIN, json={"email": admin["email"], "password": PASSWORD})

    assert response.status_code == 200
    with app.app_context():
        assert decode_token(response.json["access_token"])["role"] == "admin"


def test_login_accepts_the_email_in_any_case(client, user):
    response = client.post(LOGIN, json={"email": user["email"].upper(), "password": PASSWORD})

    assert response.status_code == 200
    assert response.json["user"]["id"] == user["id"]


def test_logged_in_token_works_on_a_protected_route(client, make_product, user):
    product = make_product(live=True)
    token = client.post(LOGIN, json={"email": user["email"], "password": PASSWORD}).json[
        "access_token"
    ]

    response = client.post(
        f"/api/v1/sales/reserve/{product['id']}", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 201


def test_wrong_password_and_unknown_email_get_identical_401_bodies(client, user):
    wrong_password = client.post(
        LOGIN, json={"email": user["email"], "password": "not the password"}
    )
    unknown_email = client.post(
        LOGIN, json={"email": "nobody@example.com", "password": "not the password"}
    )

    assert_problem(wrong_password, 401, "invalid_credentials")
    assert_problem(unknown_email, 401, "invalid_credentials")
    assert wrong_password.get_data() == unknown_email.get_data()
    assert "access_token" not in wrong_password.json


# -- guards --------------------------------------------------------------------

ADMIN_ROUTES = [
    ("POST", "/api/v1/products", {"name": "Drop", "price": "10.00", "stock": 5}),
    ("POST", "/api/v1/sales/start/{draft}", None),
    ("POST", "/api/v1/sales/restock/{live}", {"quantity": 5}),
    ("GET", "/api/v1/sales/audit/{live}", None),
    ("POST", "/api/v1/sales/end/{live}", None),
]


def store_state(mongo_db, redis_client):
    """Everything a refused request could have changed."""
    products = sorted(
        (str(doc["_id"]), doc["stock"], doc["sale_status"]) for doc in mongo_db.products.find()
    )
    keys = sorted(redis_client.keys("*"))
    values = {key: redis_client.dump(key) for key in keys}
    return products, values


@pytest.fixture
def guarded(make_product):
    """{draft, live}: one product of each kind for the admin routes to act on."""
    return {"draft": make_product()["id"], "live": make_product(live=True)["id"]}


def call_each_admin_route(client, guarded, headers):
    for method, path, body in ADMIN_ROUTES:
        yield path, client.open(path.format(**guarded), method=method, json=body, headers=headers)


def test_admin_only_routes_refuse_a_user_with_403_admin_only(
    client, guarded, user_headers, mongo_db, redis_client
):
    before = store_state(mongo_db, redis_client)

    for path, response in call_each_admin_route(client, guarded, user_headers):
        assert response.status_code == 403, path
        assert_problem(response, 403, "admin_only")

    assert store_state(mongo_db, redis_client) == before


def test_admin_only_routes_refuse_anonymous_callers_with_401(
    client, guarded, mongo_db, redis_client
):
    before = store_state(mongo_db, redis_client)

    for path, response in call_each_admin_route(client, guarded, {}):
        assert response.status_code == 401, path
        assert_problem(response, 401, "token_missing")
        assert response.headers["WWW-Authenticate"] == "Bearer"

    assert store_state(mongo_db, redis_client) == before


def test_admin_only_routes_admit_an_admin(client, guarded, admin_headers):
    # The same calls succeed for an admin, so the refusals above are about the role.
    for path, response in call_each_admin_route(client, guarded, admin_headers):
        assert response.status_code in (200, 201), (path, response.json)


def test_user_routes_refuse_anonymous_callers_with_401(client, mongo_db):
    response = client.get("/api/v1/orders")

    assert_problem(response, 401, "token_missing")


def _b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _unb64(segment):
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def test_a_user_token_with_its_role_rewritten_to_admin_is_rejected(client, user_headers, mongo_db):
    header, payload, signature = user_headers["Authorization"].split(" ")[1].split(".")
    forged = ".".join([header, _b64(_unb64(payload) | {"role": "admin"}), signature])

    response = client.post(
        "/api/v1/products",
        json={"name": "Drop", "price": "10.00", "stock": 5},
        headers={"Authorization": f"Bearer {forged}"},
    )

    assert_problem(response, 401, "token_invalid")
    assert mongo_db.products.count_documents({}) == 0


def test_a_token_signed_with_another_secret_is_rejected(client, user, mongo_db):
    claims = {"sub": user["id"], "role": "admin", "type": "access", "fresh": False}
    forged = pyjwt.encode(claims, "some-other-secret-that-is-long-enough-0123", "HS256")

    response = client.post(
        "/api/v1/products",
        json={"name": "Drop", "price": "10.00", "stock": 5},
        headers={"Authorization": f"Bearer {forged}"},
    )

    assert_problem(response, 401, "token_invalid")
    assert mongo_db.products.count_documents({}) == 0


def test_an_unsigned_alg_none_token_is_rejected(client, user_headers):
    _, payload, _ = user_headers["Authorization"].split(" ")[1].split(".")
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."

    response = client.get("/api/v1/orders", headers={"Authorization": f"Bearer {unsigned}"})

    assert_problem(response, 401, "token_invalid")


GARBAGE_AUTHORIZATION = [
    "Bearer garbage",
    "Bearer a.b.c",
    "Bearer ",
    "Token abc",
    "Bearer " + "x" * 500,
    "Bearer eyJhbGciOiJIUzI1NiJ9.e30.",
]


def test_garbage_authorization_headers_get_401(client):
    for authorization in GARBAGE_AUTHORIZATION:
        response = client.get("/api/v1/orders", headers={"Authorization": authorization})

        assert response.status_code == 401, authorization
        assert response.content_type == "application/problem+json"
        assert response.json["code"] in {"token_invalid", "token_missing"}, authorization


def test_an_expired_token_gets_401_token_expired(client, app, user):
    with app.app_context():
        token = create_access_token(
            identity=user["id"],
            additional_claims={"role": "user"},
            expires_delta=timedelta(seconds=-10),
        )

    response = client.get("/api/v1/orders", headers={"Authorization": f"Bearer {token}"})

    assert_problem(response, 401, "token_expired")
