"""Operator commands: `flask init`, `flask create-admin` and `flask seed-demo`."""

import logging

import pytest
from bson import ObjectId

from flashcart import create_app, demo

NO_ENV_PASSWORD = {"FLASHCART_ADMIN_PASSWORD": None}


@pytest.fixture
def login(client):
    def login_(email, password):
        return client.post("/api/v1/auth/login", json={"email": email, "password": password})

    return login_


def create_admin(runner, *args, **kwargs):
    return runner.invoke(args=["create-admin", *args], env=NO_ENV_PASSWORD, **kwargs)


# -- init ----------------------------------------------------------------------------


def index_keys(db, collection):
    return [info["key"] for info in db[collection].index_information().values()]


def test_init_creates_the_indexes_and_the_configured_admin_twice_safely(
    app, app_config, runner, mongo_db, login
):
    app.config.update(ADMIN_EMAIL="Boss@Example.com", ADMIN_PASSWORD="boss-passphrase-1")

    first = runner.invoke(args=["init"])
    second = runner.invoke(args=["init"])

    assert first.exit_code == 0, first.output
    assert "indexes are ready" in first.output and "Created admin boss@example.com" in first.output
    assert second.exit_code == 0 and "Updated admin boss@example.com" in second.output
    assert [("reservation_id", 1)] in index_keys(mongo_db, "orders")
    assert mongo_db.users.count_documents({}) == 1
    assert login("boss@example.com", "boss-passphrase-1").json["user"]["role"] == "admin"


def test_init_without_an_admin_configured_creates_only_the_indexes(app, runner, mongo_db):
    result = runner.invoke(args=["init"])

    assert result.exit_code == 0, result.output
    assert [("email", 1)] in index_keys(mongo_db, "users")
    assert mongo_db.users.count_documents({}) == 0


@pytest.mark.parametrize(
    ("password", "says"),
    [(None, "ADMIN_EMAIL is set without ADMIN_PASSWORD"), ("short", "at least")],
    ids=["missing", "weak"],
)
def test_init_refuses_a_missing_or_weak_admin_password_and_creates_nobody(
    app, runner, mongo_db, password, says
):
    app.config.update(ADMIN_EMAIL="boss@example.com", ADMIN_PASSWORD=password)

    result = runner.invoke(args=["init"])

    assert result.exit_code == 1
    assert says in result.output
    assert mongo_db.users.count_documents({}) == 0


def test_init_with_sharded_orders_makes_the_unique_index_begin_with_the_shard_key(
    app, runner, mongo_db
):
    app.config["MONGO_ORDERS_SHARDED"] = True

    result = runner.invoke(args=["init"])

    assert result.exit_code == 0, result.output
    keys = index_keys(mongo_db, "orders")
    assert [("user_id", 1), ("reservation_id", 1)] in keys
    assert [("reservation_id", 1)] not in keys


def test_an_index_mongodb_refuses_is_one_clear_error_at_init_and_not_one_per_request(
    app, runner, mongo_db, client, caplog
):
    # What a sharded `orders` does to the unsharded unique index, in mongomock's terms:
    # an index of that name already exists with other options.
    mongo_db.orders.create_index([("reservation_id", 1)])

    result = runner.invoke(args=["init"])

    assert result.exit_code == 1
    assert "refused the index" in result.output and "MONGO_ORDERS_SHARDED" in result.output
    with caplog.at_level(logging.ERROR, logger="flashcart.stores"):
        answers = [client.get("/api/v1/products").status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    assert len([r for r in caplog.records if "refused the index" in r.getMessage()]) == 1


def test_init_says_when_mongodb_does_not_answer():
    app = create_app(
        {
            "ENV_NAME": "testing",
            "MONGO_URI": "mongodb://127.0.0.1:9/flashcart",
            "MONGO_TIMEOUT_MS": 200,
        }
    )

    result = app.test_cli_runner().invoke(args=["init", "--wait", "0.5"])

    assert result.exit_code == 1
    assert "MongoDB does not answer" in result.output


# -- create-admin --------------------------------------------------------------------


def test_create_admin_with_password_option_creates_an_admin_who_can_log_in(runner, mongo_db, login):
    result = create_admin(runner, "Boss@Example.com", "--password", "boss-password-1")

    assert result.exit_code == 0, result.output
    assert "Created admin boss@example.com" in result.output
    users = list(mongo_db.users.find())
    assert len(users) == 1
    assert users[0]["email"] == "boss@example.com"
    assert users[0]["role"] == "admin"
    assert users[0]["name"] == "Administrator"
    assert users[0]["password_hash"].startswith("$argon2id$")
    assert str(users[0]["_id"]) in result.output
    response = login("boss@example.com", "boss-password-1")
    assert response.status_code == 200
    assert response.json["user"]["role"] == "admin"


def test_create_admin_prompts_for_the_password_twice_when_not_given(runner, mongo_db, login):
    result = create_admin(runner, "ops@example.com", input="typed-password\ntyped-password\n")

    assert result.exit_code == 0, result.output
    assert "Created admin ops@example.com" in result.output
    assert "typed-password" not in result.output
    assert mongo_db.users.find_one({"email": "ops@example.com"})["role"] == "admin"
    assert login("ops@example.com", "typed-password").status_code == 200


def test_create_admin_reads_the_password_from_the_environment(runner, mongo_db, login):
    result = runner.invoke(
        args=["create-admin", "env@example.com"],
        env={"FLASHCART_ADMIN_PASSWORD": "from-the-environment"},
    )

    assert result.exit_code == 0, result.output
    assert login("env@example.com", "from-the-environment").status_code == 200


def test_create_admin_refuses_a_short_password_and_creates_nobody(runner, mongo_db):
    result = create_admin(runner, "weak@example.com", "--password", "short")

    assert result.exit_code != 0
    assert "8 characters" in result.output
    assert mongo_db.users.count_documents({}) == 0


def test_create_admin_refuses_mismatched_confirmation(runner, mongo_db):
    result = create_admin(runner, "typo@example.com", input="first-password\nother-password\n")

    assert result.exit_code != 0
    assert mongo_db.users.count_documents({}) == 0


def test_create_admin_twice_keeps_one_admin_account(runner, mongo_db, login):
    first = create_admin(runner, "boss@example.com", "--password", "boss-password-1")
    user_id = str(mongo_db.users.find_one()["_id"])

    second = create_admin(runner, "BOSS@example.com", "--password", "boss-password-2")

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "Updated admin boss@example.com" in second.output
    users = list(mongo_db.users.find())
    assert len(users) == 1
    assert str(users[0]["_id"]) == user_id
    assert users[0]["role"] == "admin"
    # The second run reset the password.
    assert login("boss@example.com", "boss-password-2").status_code == 200
    assert login("boss@example.com", "boss-password-1").status_code == 401


def test_create_admin_promotes_an_existing_customer(runner, make_user, mongo_db):
    customer = make_user(email="promote@example.com")

    result = create_admin(runner, "promote@example.com", "--password", "new-admin-password")

    assert result.exit_code == 0, result.output
    assert "Updated admin" in result.output
    assert mongo_db.users.count_documents({}) == 1
    stored = mongo_db.users.find_one({"_id": ObjectId(customer["id"])})
    assert stored["role"] == "admin"


# -- seed-demo -------------------------------------------------------------------------


def test_seed_demo_creates_the_demo_products_on_sale(
    runner, mongo_db, redis_client, client, sale_state
):
    result = runner.invoke(args=["seed-demo"])

    assert result.exit_code == 0, result.output
    products = list(mongo_db.products.find())
    assert sorted(p["name"] for p in products) == sorted(s["name"] for s in demo.DEMO_PRODUCTS)
    specs = {spec["name"]: spec for spec in demo.DEMO_PRODUCTS}
    for product in products:
        pid = str(product["_id"])
        assert product["sale_status"] == "live"
        assert f"demo product {pid} is on sale" in result.output
        assert redis_client.exists(f"fc:{{p:{pid}}}:sale")
        state = sale_state(pid)
        assert state["status"] == "live"
        assert state["available"] == specs[product["name"]]["stock"]
        assert state["limit"] == specs[product["name"]]["per_user_limit"]
        assert (state["held"], state["sold"]) == (0, 0)
        stock = client.get(f"/api/v1/sales/stock/{pid}").json
        assert stock["available"] == specs[product["name"]]["stock"]


def test_seed_demo_twice_creates_the_products_once_and_keeps_their_stock(
    runner, mongo_db, redis_client, client, user_headers, sale_state
):
    first = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0, first.output
    ids = sorted(str(p["_id"]) for p in mongo_db.products.find())
    pid = ids[0]
    assert client.post(f"/api/v1/sales/reserve/{pid}", headers=user_headers).status_code == 201
    before = sale_state(pid)
    assert before["held"] == 1

    second = runner.invoke(args=["seed-demo"])

    assert second.exit_code == 0, second.output
    assert mongo_db.products.count_documents({}) == len(demo.DEMO_PRODUCTS)
    assert sorted(str(p["_id"]) for p in mongo_db.products.find()) == ids
    assert sale_state(pid) == before
    for product_id in ids:
        assert redis_client.exists(f"fc:{{p:{product_id}}}:sale")
        assert f"demo product {product_id} is on sale" in second.output
