"""Rate limits: on here (TestingConfig turns them off), counted in the suite's Redis."""

import socket
import threading
import time

import pytest
from limits import parse

from flashcart import create_app
from flashcart.auth import service as accounts
from flashcart.host_slots import NoSlotFree
from tests.support.app import PASSWORD, app_settings
from tests.support.ports import free_port

LOGIN = "/api/v1/auth/login"


@pytest.fixture
def limited(mongo_db, redis_client, app_config):
    """limited(**limits) -> a test client of an app with rate limits on."""

    def build(**limits):
        config = app_settings() | app_config | {"RATELIMIT_ENABLED": True} | limits
        return create_app(config, db=mongo_db, redis_client=redis_client).test_client()

    return build


def assert_limited(response):
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    assert response.json["code"] == "too_many_requests"
    assert response.json["status"] == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 61


def test_counters_live_in_redis_by_default(limited, redis_client):
    client = limited(RATELIMIT_GLOBAL="100 per minute")
    client.get("/api/v1/products")
    assert any(key.startswith("LIMITS:") for key in redis_client.keys("*"))


def test_failed_logins_per_account_are_limited_even_across_addresses(limited, user):
    client = limited(RATELIMIT_LOGIN_PER_ACCOUNT="3 per minute", RATELIMIT_LOGIN_PER_IP="")
    wrong = {"email": user["email"], "password": "not the password"}

    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        response = client.post(LOGIN, json=wrong, environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 401

    blocked = client.post(
        LOGIN,
        json={"email": user["email"].upper(), "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.0.0.4"},
    )
    assert_limited(blocked)
    other = client.post(LOGIN, json={"email": "someone@example.com", "password": "x" * 10})
    assert other.status_code == 401  # another account is not affected


def test_successful_logins_do_not_use_up_the_account_limit(limited, user):
    client = limited(RATELIMIT_LOGIN_PER_ACCOUNT="2 per minute", RATELIMIT_LOGIN_PER_IP="")
    for _ in range(4):
        response = client.post(LOGIN, json={"email": user["email"], "password": PASSWORD})
        assert response.status_code == 200


def test_login_attempts_per_address_are_limited(limited, user):
    client = limited(RATELIMIT_LOGIN_PER_IP="2 per minute", RATELIMIT_LOGIN_PER_ACCOUNT="")
    body = {"email": user["email"], "password": PASSWORD}
    here = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.post(LOGIN, json=body, environ_base=here).status_code == 200
    assert client.post(LOGIN, json=body, environ_base=here).status_code == 200
    assert_limited(client.post(LOGIN, json=body, environ_base=here))
    elsewhere = {"REMOTE_ADDR": "192.0.2.8"}
    assert client.post(LOGIN, json=body, environ_base=elsewhere).status_code == 200


def _sale(client, headers_for, make_user):
    admin = headers_for(make_user("admin"))
    product = client.post(
        "/api/v1/products",
        json={"name": "Drop", "price": "10.00", "stock": 50, "per_user_limit": 50},
        headers=admin,
    ).json
    assert client.post(f"/api/v1/sales/start/{product['id']}", headers=admin).status_code == 200
    return f"/api/v1/sales/reserve/{product['id']}"


def test_reservations_are_limited_per_user(limited, make_user, headers_for, redis_client):
    client = limited(RATELIMIT_RESERVE_PER_USER="2 per minute")
    reserve = _sale(client, headers_for, make_user)
    first, second = headers_for(make_user()), headers_for(make_user())

    assert client.post(reserve, json={}, headers=first).status_code == 201
    assert client.post(reserve, json={}, headers=first).status_code == 201
    assert_limited(client.post(reserve, json={}, headers=first))
    assert client.post(reserve, json={}, headers=second).status_code == 201
    assert any("reserve-user" in key for key in redis_client.keys("LIMITS:*"))


def test_the_reservation_limit_counts_each_authenticated_user_apart(
    limited, make_user, headers_for, redis_client
):
    client = limited(RATELIMIT_RESERVE_PER_USER="1 per minute")
    reserve = _sale(client, headers_for, make_user)
    first_user, second_user = make_user(), make_user()
    first, second = headers_for(first_user), headers_for(second_user)

    # Refused at authentication, so counted against no one.
    for _ in range(3):
        assert (
            client.post(reserve, json={}, headers={"Authorization": "Bearer x"}).status_code == 401
        )
    assert client.post(reserve, json={}, headers=first).status_code == 201
    over = client.post(reserve, json={}, headers=first)
    assert_limited(over)
    assert over.json["detail"].startswith("Too many requests: the limit is 1 per 1 minute.")
    # Same address, another user: a count of its own, kept under the user's id.
    assert client.post(reserve, json={}, headers=second).status_code == 201
    # The keys flask-limiter wrote, so counts carry over a deploy.
    assert sorted(redis_client.keys("LIMITS:*reserve-user*")) == sorted(
        f"LIMITS:LIMITER/fc:rl/{user['id']}/sales.reserve:reserve-user/1/1/minute"
        for user in (first_user, second_user)
    )


def test_the_reservation_limit_is_counted_in_the_session_checks_round_trip(
    limited, make_user, headers_for, redis_client
):
    client = limited(RATELIMIT_RESERVE_PER_USER="3 per minute")
    reserve = _sale(client, headers_for, make_user)
    shopper = make_user()
    headers = headers_for(shopper)
    scripts_before = redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)

    assert client.post(reserve, json={}, headers=headers).status_code == 201

    # No round trip of the limits library's own (its counter is a script)...
    scripts_after = redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    assert scripts_after == scripts_before
    # ...but its counter all the same: the library's key, with the window's expiry.
    key = f"LIMITS:LIMITER/fc:rl/{shopper['id']}/sales.reserve:reserve-user/3/1/minute"
    assert redis_client.get(key) == "1"
    assert 0 < redis_client.ttl(key) <= 60
    # The library reads and adds to the same count.
    counters = client.application.extensions["flashcart.rate_limit_counters"]
    window, identifiers = parse("3 per minute"), (shopper["id"], "sales.reserve:reserve-user")
    assert counters.hit(window, *identifiers)
    assert client.post(reserve, json={}, headers=headers).status_code == 201
    assert not counters.test(window, *identifiers)
    assert_limited(client.post(reserve, json={}, headers=headers))
    assert 0 < redis_client.ttl(key) <= 60  # the window's first expiry stands


def test_a_revoked_token_is_refused_as_such_and_spends_none_of_its_owners_limit(
    limited, make_user, headers_for, app, redis_client
):
    client = limited(RATELIMIT_RESERVE_PER_USER="2 per minute")
    reserve = _sale(client, headers_for, make_user)
    owner = make_user()
    with app.app_context():
        stolen = accounts.issue_token(owner)
    stolen_headers = {"Authorization": f"Bearer {stolen['access_token']}"}
    assert client.post(reserve, json={}, headers=stolen_headers).status_code == 201
    logout = {"refresh_token": stolen["refresh_token"]}
    logged_out = client.post("/api/v1/auth/logout", json=logout, headers=stolen_headers)
    assert logged_out.status_code == 204

    for _ in range(3):
        refused = client.post(reserve, json={}, headers=stolen_headers)
        assert (refused.status_code, refused.json["code"]) == (401, "token_revoked")

    key = f"LIMITS:LIMITER/fc:rl/{owner['id']}/sales.reserve:reserve-user/2/1/minute"
    assert redis_client.get(key) == "1"
    assert 0 < redis_client.ttl(key) <= 60
    # The owner's other login still has its second reservation of the minute.
    assert client.post(reserve, json={}, headers=headers_for(owner)).status_code == 201


def test_the_reservation_limit_holds_where_the_library_checks_the_session(
    limited, make_user, headers_for
):
    # Tokens also taken from the query string: every request goes through the
    # library, which checks the session itself, and the limit is counted on its own.
    client = limited(
        RATELIMIT_RESERVE_PER_USER="1 per minute", JWT_TOKEN_LOCATION=["headers", "query_string"]
    )
    reserve = _sale(client, headers_for, make_user)
    headers = headers_for(make_user())
    assert client.post(reserve, json={}, headers=headers).status_code == 201
    assert_limited(client.post(reserve, json={}, headers=headers))


def test_reservations_stay_limited_per_user_while_the_counters_store_is_down(
    limited, make_user, headers_for
):
    client = limited(
        RATELIMIT_RESERVE_PER_USER="2 per minute",
        RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}",  # nothing listens
        RATELIMIT_GLOBAL="",  # nothing else finds the store down first
    )
    reserve = _sale(client, headers_for, make_user)
    first = headers_for(make_user())

    assert client.post(reserve, json={}, headers=first).status_code == 201
    assert client.post(reserve, json={}, headers=first).status_code == 201
    assert_limited(client.post(reserve, json={}, headers=first))


def test_a_global_ceiling_per_address_covers_the_whole_api(limited):
    client = limited(RATELIMIT_GLOBAL="3 per minute")
    assert client.get("/api/v1/products").status_code == 200
    assert client.get("/api/v1/products/trending").status_code == 200
    assert client.get("/api/v1/products?page=2").status_code == 200
    assert_limited(client.get("/api/v1/products/trending"))
    other = client.get("/api/v1/products", environ_base={"REMOTE_ADDR": "198.51.100.1"})
    assert other.status_code == 200


def test_probes_and_scrapes_are_never_refused_nor_counted(limited, redis_client):
    client = limited(RATELIMIT_GLOBAL="1 per minute")
    assert client.get("/api/v1/products").status_code == 200
    assert_limited(client.get("/api/v1/products"))
    counters = sorted(redis_client.keys("LIMITS:*"))
    assert counters  # the ceiling counts in Redis

    answers = {client.get(path).status_code for path in ("/healthz", "/metrics") * 5}

    assert answers == {200}
    assert sorted(redis_client.keys("LIMITS:*")) == counters


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/products/6b0000000000000000000001",
        "/api/v1/sales/stock/6b0000000000000000000001",
    ],
)
def test_the_ceiling_covers_the_hot_routes_too(limited, path):
    client = limited(RATELIMIT_GLOBAL="2 per minute")
    assert client.get(path).status_code == 404
    assert client.get(path).status_code == 404
    assert_limited(client.get(path))


def test_behind_a_trusted_proxy_the_client_address_is_the_forwarded_one(limited):
    client = limited(RATELIMIT_GLOBAL="1 per minute", TRUSTED_PROXIES=1)
    first = {"X-Forwarded-For": "203.0.113.1"}
    second = {"X-Forwarded-For": "203.0.113.2"}
    assert client.get("/api/v1/products", headers=first).status_code == 200
    assert client.get("/api/v1/products", headers=second).status_code == 200
    assert_limited(client.get("/api/v1/products", headers=first))


def test_an_empty_limit_turns_it_off(limited, user):
    client = limited(
        RATELIMIT_GLOBAL="",
        RATELIMIT_LOGIN_PER_IP="",
        RATELIMIT_LOGIN_PER_ACCOUNT="",
        RATELIMIT_LOGIN_PER_ACCOUNT_AND_IP="",
    )
    for _ in range(10):
        response = client.post(LOGIN, json={"email": user["email"], "password": "wrong password"})
        assert response.status_code == 401


def test_limits_are_off_in_the_testing_config(client, user):
    for _ in range(40):
        response = client.post(LOGIN, json={"email": user["email"], "password": "wrong password"})
        assert response.status_code == 401


def test_ordinary_answers_carry_no_limiter_headers(limited):
    """Only a 429 says when to retry, so a 503's own Retry-After is never overwritten."""
    client = limited(RATELIMIT_GLOBAL="100 per minute")
    response = client.get("/api/v1/products")
    assert "Retry-After" not in response.headers
    assert "X-RateLimit-Limit" not in response.headers


# -- password checks each host admits (logins and sign-ups together) -------------------

SIGNUP = "/api/v1/auth/signup"


def _login(client, user, address, password=PASSWORD):
    body = {"email": user["email"], "password": password}
    return client.post(LOGIN, json=body, environ_base={"REMOTE_ADDR": address})


def test_password_checks_are_admitted_per_host_whatever_the_address(limited, user):
    client = limited(RATELIMIT_PASSWORD_CHECKS_PER_HOST="3 per minute", RATELIMIT_LOGIN_PER_IP="")

    assert _login(client, user, "198.51.100.1").status_code == 200
    assert _login(client, user, "198.51.100.2", password="not the password").status_code == 401
    assert _login(client, user, "198.51.100.3").status_code == 200

    # The account's known address, a good password, another account: the host's
    # budget for this minute is spent all the same.
    assert_limited(_login(client, user, "198.51.100.1"))
    signup = {"email": "new@example.com", "password": PASSWORD, "name": "New"}
    assert_limited(client.post(SIGNUP, json=signup, environ_base={"REMOTE_ADDR": "192.0.2.9"}))


def test_sign_ups_spend_the_same_password_checks(limited, user):
    client = limited(RATELIMIT_PASSWORD_CHECKS_PER_HOST="2 per minute")
    for n in (1, 2):
        body = {"email": f"new{n}@example.com", "password": PASSWORD, "name": "New"}
        assert client.post(SIGNUP, json=body).status_code == 201

    assert_limited(_login(client, user, "203.0.113.5"))


def test_requests_that_check_no_password_spend_none_of_the_host_budget(limited, user, redis_client):
    client = limited(
        RATELIMIT_PASSWORD_CHECKS_PER_HOST="2 per minute", RATELIMIT_LOGIN_PER_IP="1 per minute"
    )

    assert _login(client, user, "192.0.2.1").status_code == 200
    assert_limited(_login(client, user, "192.0.2.1"))  # refused per address: not checked
    malformed = client.post(LOGIN, json={"email": user["email"]})  # no password
    assert malformed.status_code == 422
    assert _login(client, user, "192.0.2.2").status_code == 200
    assert_limited(_login(client, user, "192.0.2.3"))

    host = socket.gethostname()
    assert any("password-checks" in key and host in key for key in redis_client.keys("LIMITS:*"))


# -- password checks in flight on a host -----------------------------------------------


def _every_place_held(client, *names):
    """Hold every slot of each extension named, as other workers' checks would."""
    holds = []
    for name in names:
        slots = client.application.extensions[name]
        holds += [slots.take() for _ in range(slots.count)]
    return holds


def _every_slot_and_waiting_place_held(client):
    return _every_place_held(
        client, "flashcart.password_check_slots", "flashcart.password_check_queue"
    )


def _release(holds):
    for hold in holds:
        hold.release()


def assert_busy(response):
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    assert response.json["code"] == "busy"
    assert response.headers["Retry-After"] == "1"


def test_with_every_slot_and_waiting_place_taken_logins_and_sign_ups_answer_busy_at_once(
    limited, user, mongo_db
):
    client = limited(
        PASSWORD_CHECKS_IN_FLIGHT_PER_HOST=2,
        PASSWORD_CHECKS_WAITING_PER_HOST=1,
        PASSWORD_CHECK_WAIT_SECONDS=30,
    )
    holds = _every_slot_and_waiting_place_held(client)
    try:
        started = time.monotonic()
        assert_busy(_login(client, user, "198.51.100.7"))
        signup = {"email": "later@example.com", "password": PASSWORD, "name": "Later"}
        assert_busy(client.post(SIGNUP, json=signup))
        assert time.monotonic() - started < 10, "a refusal waited for a slot"
        assert mongo_db.users.count_documents({"email": "later@example.com"}) == 0
    finally:
        _release(holds)

    assert _login(client, user, "198.51.100.7").status_code == 200
    assert client.post(SIGNUP, json=signup).status_code == 201


def _release_once_someone_waits(client, holds, seen):
    """Free `holds` once a request holds the (only) waiting place: it did wait."""
    queue = client.application.extensions["flashcart.password_check_queue"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            queue.take().release()
        except NoSlotFree:
            seen.append(True)
            break
        time.sleep(0.005)
    _release(holds)


def test_a_login_waits_for_a_slot_that_comes_free_in_time(limited, user):
    client = limited(
        PASSWORD_CHECKS_IN_FLIGHT_PER_HOST=1,
        PASSWORD_CHECKS_WAITING_PER_HOST=1,
        PASSWORD_CHECK_WAIT_SECONDS=30,
    )
    holds, seen = _every_place_held(client, "flashcart.password_check_slots"), []
    releaser = threading.Thread(target=_release_once_someone_waits, args=(client, holds, seen))
    releaser.start()
    try:
        assert _login(client, user, "198.51.100.9").status_code == 200
    finally:
        releaser.join()
    assert seen, "the login never waited in the queue"


def test_a_login_whose_wait_runs_out_answers_busy(limited, user):
    client = limited(PASSWORD_CHECKS_IN_FLIGHT_PER_HOST=1, PASSWORD_CHECK_WAIT_SECONDS=0.2)
    holds = _every_place_held(client, "flashcart.password_check_slots")
    try:
        assert_busy(_login(client, user, "198.51.100.10"))
    finally:
        _release(holds)
    assert _login(client, user, "198.51.100.10").status_code == 200


def test_a_login_refused_for_want_of_a_slot_spends_none_of_the_limits(limited, user):
    client = limited(
        PASSWORD_CHECKS_IN_FLIGHT_PER_HOST=1,
        RATELIMIT_PASSWORD_CHECKS_PER_HOST="1 per minute",
        RATELIMIT_LOGIN_PER_IP="1 per minute",
    )
    holds = _every_slot_and_waiting_place_held(client)
    try:
        for _ in range(3):
            assert_busy(_login(client, user, "198.51.100.8"))
    finally:
        _release(holds)

    assert _login(client, user, "198.51.100.8").status_code == 200
    assert_limited(_login(client, user, "198.51.100.8"))


def test_other_requests_do_not_wait_for_password_check_slots(limited, user_headers):
    client = limited(PASSWORD_CHECKS_IN_FLIGHT_PER_HOST=1, PASSWORD_CHECK_WAIT_SECONDS=30)
    holds = _every_slot_and_waiting_place_held(client)
    try:
        assert client.get("/api/v1/products").status_code == 200
        assert client.get("/api/v1/orders", headers=user_headers).status_code == 200
    finally:
        _release(holds)


@pytest.mark.parametrize(
    "setting",
    [
        {"PASSWORD_CHECKS_IN_FLIGHT_PER_HOST": 0},
        {"PASSWORD_CHECKS_WAITING_PER_HOST": 0},
        {"PASSWORD_CHECK_NICENESS": 20},
        {"PASSWORD_CHECK_NICENESS": -1},
    ],
)
def test_password_check_settings_out_of_range_stop_the_app_at_start(limited, setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        limited(**setting)


@pytest.mark.parametrize("setting", ["RATELIMIT_RESERVE_PER_USER", "RATELIMIT_GLOBAL"])
def test_a_limit_that_does_not_parse_stops_the_app_at_start(limited, setting):
    with pytest.raises(ValueError, match=setting):
        limited(**{setting: "30 a minute"})


def test_a_request_the_hosts_password_checks_refuse_spends_none_of_its_address_limit(
    limited, user, redis_client
):
    client = limited(
        RATELIMIT_PASSWORD_CHECKS_PER_HOST="1 per minute", RATELIMIT_LOGIN_PER_IP="2 per hour"
    )
    assert _login(client, user, "192.0.2.7").status_code == 200
    assert_limited(_login(client, user, "192.0.2.7"))  # the host's minute is spent

    assert redis_client.get("LIMITS:LIMITER/fc:rl/192.0.2.7/auth.login:login-ip/2/1/hour") == "1"


def test_an_email_that_cannot_be_encoded_is_refused_by_validation_not_an_error(limited):
    client = limited()
    for path in (LOGIN, SIGNUP):
        body = {"email": "\ud800@example.com", "password": PASSWORD, "name": "Odd"}
        response = client.post(path, json=body)
        assert response.status_code == 422, response.get_data(as_text=True)
