"""Roles: the claim is re-checked against the account on privileged actions, only an
admin may grant or revoke the admin role, and there is always an admin left."""

import pytest

from flashcart.auth import service as accounts

from .helpers import assert_problem, b64, bearer, claims_of, login, unb64

PRODUCTS = "/api/v1/products"
NEW_PRODUCT = {"name": "Drop", "price": "10.00", "stock": 5}


def role_path(user):
    return f"/api/v1/auth/users/{user['id']}/role"


def set_role(client, headers, user, role):
    return client.put(role_path(user), json={"role": role}, headers=headers)


@pytest.fixture
def users_order(client, make_product, make_user, headers_for):
    """A placed order of a fresh customer: (order, the customer's headers)."""
    customer = headers_for(make_user())
    product = make_product(live=True)
    reservation = client.post(f"/api/v1/sales/reserve/{product['id']}", headers=customer).json
    order = client.post(
        "/api/v1/orders", json={"reservation_id": reservation["id"]}, headers=customer
    )
    assert order.status_code == 201
    return order.json, customer


# -- a demoted admin loses power at once ----------------------------------------------


def test_a_demoted_admin_loses_admin_routes_at_once_with_the_same_token(
    client, admin, admin_headers, make_user, headers_for, mongo_db
):
    boss = make_user("admin")
    assert client.post(PRODUCTS, json=NEW_PRODUCT, headers=admin_headers).status_code == 201

    assert set_role(client, headers_for(boss), admin, "user").status_code == 200

    # The token still says "admin" and has not expired; the account says otherwise.
    assert claims_of(admin_headers["Authorization"].split()[1])["role"] == "admin"
    assert_problem(
        client.post(PRODUCTS, json=NEW_PRODUCT, headers=admin_headers), 403, "admin_only"
    )
    assert_problem(
        set_role(client, admin_headers, admin, "admin"), 403, "admin_only"
    )  # cannot re-promote itself
    assert mongo_db.products.count_documents({}) == 1


def test_a_demoted_admin_can_no_longer_read_or_cancel_others_orders(
    client, users_order, admin, admin_headers, mongo_db
):
    order, _ = users_order
    path = f"/api/v1/orders/{order['id']}"
    assert client.get(path, headers=admin_headers).status_code == 200

    mongo_db.users.update_one({"email": admin["email"]}, {"$set": {"role": "user"}})

    assert_problem(client.get(path, headers=admin_headers), 404, "order_not_found")
    assert_problem(client.delete(path, headers=admin_headers), 404, "order_not_found")
    assert client.get("/api/v1/orders", headers=admin_headers).json["items"] == []
    assert mongo_db.orders.find_one()["status"] == "placed"


def test_a_deleted_admin_account_loses_admin_routes_at_once(client, admin, admin_headers, mongo_db):
    mongo_db.users.delete_one({"email": admin["email"]})

    assert_problem(
        client.post(PRODUCTS, json=NEW_PRODUCT, headers=admin_headers), 403, "admin_only"
    )


def test_a_user_promoted_in_the_database_gains_nothing_until_a_new_token(
    client, user, user_headers, mongo_db
):
    # The reverse direction: a user's token is trusted as it stands, without a lookup.
    mongo_db.users.update_one({"email": user["email"]}, {"$set": {"role": "admin"}})

    assert_problem(client.post(PRODUCTS, json=NEW_PRODUCT, headers=user_headers), 403, "admin_only")


def test_the_user_hot_path_reads_no_account_but_admin_actions_do(
    client, make_product, user_headers, admin_headers, monkeypatch
):
    product = make_product(live=True)
    reads = []
    users = accounts._users
    monkeypatch.setattr(accounts, "_users", lambda: reads.append(1) or users())

    reserved = client.post(f"/api/v1/sales/reserve/{product['id']}", headers=user_headers)
    assert reserved.status_code == 201
    assert client.get("/api/v1/orders", headers=user_headers).status_code == 200
    assert reads == []

    assert client.post(PRODUCTS, json=NEW_PRODUCT, headers=admin_headers).status_code == 201
    assert len(reads) == 1


# -- granting and revoking the admin role --------------------------------------------


def test_an_admin_promotes_a_user_who_gets_admin_power_from_the_next_token(
    client, user, admin_headers
):
    response = set_role(client, admin_headers, user, "admin")

    assert response.status_code == 200
    assert response.json["role"] == "admin"
    assert response.json["id"] == user["id"]
    tokens = login(client, user)
    assert claims_of(tokens["access_token"])["role"] == "admin"
    assert (
        client.post(PRODUCTS, json=NEW_PRODUCT, headers=bearer(tokens["access_token"])).status_code
        == 201
    )


def test_setting_the_role_an_account_already_has_is_harmless(client, user, admin_headers):
    response = set_role(client, admin_headers, user, "user")

    assert response.status_code == 200
    assert response.json["role"] == "user"


def test_a_user_cannot_grant_itself_or_anyone_the_admin_role(
    client, user, user_headers, make_user, mongo_db
):
    other = make_user()

    for target in (user, other):
        assert_problem(set_role(client, user_headers, target, "admin"), 403, "admin_only")
    assert_problem(set_role(client, {}, user, "admin"), 401, "token_missing")
    assert mongo_db.users.count_documents({"role": "admin"}) == 0


def test_a_user_token_with_a_forged_admin_claim_cannot_change_roles(client, user, user_headers):
    header, payload, signature = user_headers["Authorization"].split()[1].split(".")
    forged = ".".join([header, b64(unb64(payload) | {"role": "admin"}), signature])

    assert_problem(set_role(client, bearer(forged), user, "admin"), 401, "token_invalid")


def test_the_last_admin_cannot_be_demoted(client, admin, admin_headers, mongo_db):
    response = set_role(client, admin_headers, admin, "user")

    assert_problem(response, 409, "last_admin")
    assert mongo_db.users.find_one({"email": admin["email"]})["role"] == "admin"


def test_an_admin_may_step_down_while_another_admin_remains(
    client, admin, admin_headers, make_user, mongo_db
):
    other = make_user("admin")

    assert set_role(client, admin_headers, admin, "user").json["role"] == "user"

    assert mongo_db.users.find_one({"email": admin["email"]})["role"] == "user"
    assert mongo_db.users.find_one({"email": other["email"]})["role"] == "admin"


def test_two_admins_demoting_each_other_leave_one_admin(client, app, make_user, mongo_db):
    one, two = make_user("admin"), make_user("admin")

    with app.app_context():
        accounts.set_role(user_id=two["id"], role="user")
        with pytest.raises(accounts.LastAdmin):
            accounts.set_role(user_id=one["id"], role="user")

    assert mongo_db.users.count_documents({"role": "admin"}) == 1


@pytest.mark.parametrize(
    "user_id", ["0" * 24, "not-an-id", '{"$ne":null}', "%7B%22%24gt%22%3A%22%22%7D"]
)
def test_an_unknown_or_malformed_user_id_is_404(client, admin_headers, user_id):
    response = client.put(
        f"/api/v1/auth/users/{user_id}/role", json={"role": "admin"}, headers=admin_headers
    )

    assert_problem(response, 404, "user_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"role": "superuser"},
        {"role": "ADMIN"},
        {"role": {"$ne": "user"}},
        {"role": ["admin"]},
        {},
        {"role": "admin", "email": "taken@example.com"},
        {"role": "admin", "password_hash": "x"},
    ],
)
def test_a_role_change_takes_only_a_known_role(client, user, admin_headers, mongo_db, body):
    response = client.put(role_path(user), json=body, headers=admin_headers)

    assert_problem(response, 422, "validation_error")
    stored = mongo_db.users.find_one({"email": user["email"]})
    assert stored["role"] == "user" and stored["email"] == user["email"]
