"""Object-level authorization: every route with an id, tried with another user's token.

Another user's order or reservation is answered as missing (404), so ids cannot be
probed; admin routes answer a user 403. A new route with an id fails the inventory
test below until it is classified here and attacked.
"""

import pytest

from flashcart.webhooks import service as webhooks

from .helpers import assert_problem

ORDERS = "/api/v1/orders"

# Every route with an id in its path, and who may use it on someone else's object.
ID_ROUTES = {
    ("GET", "/api/v1/orders/<order_id>"): "owner or admin",
    ("DELETE", "/api/v1/orders/<order_id>"): "owner or admin",
    ("PUT", "/api/v1/auth/users/<user_id>/role"): "admin",
    ("POST", "/api/v1/sales/start/<product_id>"): "admin",
    ("POST", "/api/v1/sales/end/<product_id>"): "admin",
    ("POST", "/api/v1/sales/restock/<product_id>"): "admin",
    ("GET", "/api/v1/sales/audit/<product_id>"): "admin",
    ("GET", "/api/v1/webhooks/<endpoint_id>"): "admin",
    ("DELETE", "/api/v1/webhooks/<endpoint_id>"): "admin",
    ("POST", "/api/v1/webhooks/<endpoint_id>/rotate-secret"): "admin",
    ("GET", "/api/v1/webhooks/<endpoint_id>/deliveries"): "admin",
    ("POST", "/api/v1/webhooks/<endpoint_id>/replay"): "admin",
    # Products are public; a reservation is always the caller's own.
    ("GET", "/api/v1/products/<product_id>"): "anyone",
    ("GET", "/api/v1/sales/stock/<product_id>"): "anyone",
    ("POST", "/api/v1/sales/reserve/<product_id>"): "anyone",
}


def test_every_route_with_an_id_is_classified_here(app):
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        # Static files (the app's, the docs page's) are named by path, not by an id.
        if "<" in rule.rule
        and rule.endpoint.rpartition(".")[2] != "static"
        and rule.endpoint.split(".")[0] != "api-docs"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }

    assert routes == set(ID_ROUTES)


@pytest.fixture
def victim(client, make_product, make_user, headers_for):
    """A customer with a placed order and a live reservation of a product on sale."""
    product = make_product(live=True, stock=10, per_user_limit=5)
    headers = headers_for(make_user())
    reserve = f"/api/v1/sales/reserve/{product['id']}"
    placed = client.post(reserve, json={"quantity": 2}, headers=headers).json
    order = client.post(ORDERS, json={"reservation_id": placed["id"]}, headers=headers).json
    held = client.post(reserve, json={"quantity": 1}, headers=headers).json
    return {"headers": headers, "order": order, "reservation": held, "product": product}


@pytest.fixture
def attacker(make_user, headers_for):
    return headers_for(make_user())


def snapshot(mongo_db, sale_state, victim):
    return list(mongo_db.orders.find({}, {"_id": 0})), sale_state(victim["product"]["id"])


def test_an_attacker_cannot_read_or_cancel_the_victims_order(
    client, victim, attacker, mongo_db, sale_state
):
    path = f"{ORDERS}/{victim['order']['id']}"
    before = snapshot(mongo_db, sale_state, victim)

    read = client.get(path, headers=attacker)
    cancel = client.delete(path, headers=attacker)

    for response in (read, cancel):
        body = assert_problem(response, 404, "order_not_found")
        assert victim["order"]["id"] not in str(body)
    # The same answer as for an id that does not exist at all: nothing to probe.
    unknown = client.get(f"{ORDERS}/{'0' * 24}", headers=attacker)
    assert read.json == unknown.json
    assert snapshot(mongo_db, sale_state, victim) == before
    assert client.get(path, headers=victim["headers"]).json["status"] == "placed"


def test_an_attacker_cannot_check_out_the_victims_reservation(
    client, victim, attacker, mongo_db, sale_state
):
    before = snapshot(mongo_db, sale_state, victim)

    response = client.post(
        ORDERS, json={"reservation_id": victim["reservation"]["id"]}, headers=attacker
    )

    assert_problem(response, 404, "reservation_not_found")
    assert snapshot(mongo_db, sale_state, victim) == before
    mine = client.post(
        ORDERS, json={"reservation_id": victim["reservation"]["id"]}, headers=victim["headers"]
    )
    assert mine.status_code == 201


def test_an_attacker_cannot_replay_the_victims_placed_order_by_its_reservation(
    client, victim, attacker
):
    response = client.post(
        ORDERS, json={"reservation_id": victim["order"]["reservation_id"]}, headers=attacker
    )

    assert_problem(response, 404, "reservation_not_found")
    assert victim["order"]["id"] not in response.get_data(as_text=True)


def test_an_attacker_cannot_list_the_victims_orders(client, victim, attacker, user):
    for query in ("", f"?user_id={user['id']}", "?status=placed", "?all=true"):
        response = client.get(f"{ORDERS}{query}", headers=attacker)
        if response.status_code == 200:
            assert response.json["items"] == [], query
        else:
            assert_problem(response, 422, "validation_error")


def test_an_idempotency_key_of_the_victim_replays_nothing_for_the_attacker(
    client, victim, attacker
):
    reserve_key, order_key = {"Idempotency-Key": "reserve-1"}, {"Idempotency-Key": "order-1"}
    reserve = f"/api/v1/sales/reserve/{victim['product']['id']}"
    first = client.post(reserve, json={"quantity": 1}, headers=victim["headers"] | reserve_key)
    body = {"reservation_id": first.json["id"]}
    order = client.post(ORDERS, json=body, headers=victim["headers"] | order_key)
    assert (first.status_code, order.status_code) == (201, 201)

    theirs = client.post(reserve, json={"quantity": 1}, headers=attacker | reserve_key)
    checkout = client.post(ORDERS, json=body, headers=attacker | order_key)

    assert theirs.status_code == 201
    assert theirs.json["id"] != first.json["id"]
    assert "Idempotent-Replayed" not in theirs.headers
    assert_problem(checkout, 404, "reservation_not_found")
    assert order.json["id"] not in checkout.get_data(as_text=True)


def test_admin_routes_with_an_id_refuse_a_user(app, client, victim, attacker, user, mongo_db):
    product_id = victim["product"]["id"]
    with app.app_context():
        app.config["WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS"] = True
        endpoint = webhooks.create_endpoint(url="http://127.0.0.1:9/in", types=["order.placed"])
    collections = ("products", "users", "webhook_endpoints", "webhook_deliveries")
    before = [list(mongo_db[name].find()) for name in collections]

    for (method, rule), who in ID_ROUTES.items():
        if who != "admin":
            continue
        path = (
            rule.replace("<product_id>", product_id)
            .replace("<user_id>", user["id"])
            .replace("<endpoint_id>", endpoint["id"])
        )
        body = {"role": "admin"} if "role" in rule else {"quantity": 5}
        if "replay" in rule:
            body = {}
        response = client.open(path, method=method, json=body, headers=attacker)
        assert_problem(response, 403, "admin_only")
        assert endpoint["secret"] not in response.get_data(as_text=True)

    assert [list(mongo_db[name].find()) for name in collections] == before
