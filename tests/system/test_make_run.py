"""`make run`, the README's first command, as a new user runs it: gunicorn with the
production settings file, on the embedded in-memory stores, serving a whole drop."""

import pytest

from tests.support.make_targets import call, start_make, stop_make, wait_until_serving
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(180)


def test_make_run_serves_a_drop_through_gunicorn_on_the_embedded_stores(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "make-run.log"
    # As README has it: make itself sees that the virtualenv is installed.
    process = start_make("run", port, tmp_path, keep_venv=False)
    try:
        status, body, headers = wait_until_serving(base, process)
        assert (status, body) == (200, {"status": "ok"})
        assert headers["Server"] == "gunicorn"

        shopper = {"email": "ana@example.com", "password": "a long password", "name": "Ana"}
        assert call(base, "POST", "/api/v1/auth/signup", shopper)[0] == 201
        credentials = {"email": shopper["email"], "password": shopper["password"]}
        status, tokens, _ = call(base, "POST", "/api/v1/auth/login", credentials)
        assert status == 200
        token = tokens["access_token"]
        status, listed, _ = call(base, "GET", "/api/v1/products")
        assert status == 200 and listed["items"], "the embedded demo has products on sale"
        product = listed["items"][0]
        _, before, _ = call(base, "GET", f"/api/v1/sales/stock/{product['id']}")

        status, hold, _ = call(
            base, "POST", f"/api/v1/sales/reserve/{product['id']}", {"quantity": 1}, token
        )
        assert status == 201
        checkout = {"reservation_id": hold["id"]}
        status, order, _ = call(base, "POST", "/api/v1/orders", checkout, token)
        assert status == 201 and order["status"] == "placed"
        _, mine, _ = call(base, "GET", "/api/v1/orders", token=token)
        assert [o["id"] for o in mine["items"]] == [order["id"]]
        _, after, _ = call(base, "GET", f"/api/v1/sales/stock/{product['id']}")
        assert after["available"] == before["available"] - 1
    finally:
        stop_make(process)
    log = log_path.read_text()
    assert "Using worker: gthread" in log
    assert "Traceback" not in log
