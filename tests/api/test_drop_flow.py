"""A whole drop through the API, as a shopper and an admin would see it."""


def test_a_shopper_reserves_checks_out_and_cancels(
    client, make_product, user_headers, redis_client
):
    product = make_product(live=True, stock=5, per_user_limit=2)
    pid = product["id"]

    reservation = client.post(
        f"/api/v1/sales/reserve/{pid}", json={"quantity": 2}, headers=user_headers
    )
    assert reservation.status_code == 201
    assert client.get(f"/api/v1/sales/stock/{pid}").json["available"] == 3

    order = client.post(
        "/api/v1/orders", json={"reservation_id": reservation.json["id"]}, headers=user_headers
    )
    assert order.status_code == 201
    assert order.json["status"] == "placed"
    assert order.json["total"] == "20.00"
    assert redis_client.get(f"fc:{{p:{pid}}}:sold") == "2"

    cancelled = client.delete(f"/api/v1/orders/{order.json['id']}", headers=user_headers)
    assert cancelled.status_code == 200
    assert cancelled.json["status"] == "cancelled"
    assert client.get(f"/api/v1/sales/stock/{pid}").json["available"] == 5
    assert redis_client.get(f"fc:{{p:{pid}}}:sold") == "0"
