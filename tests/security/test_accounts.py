"""Accounts: password rules, argon2id upgraded on login, one answer (and one hash
check) for "no such user" and "wrong password", and login throttling."""

import concurrent.futures
import threading

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from bson import ObjectId

from flashcart import create_app
from flashcart.auth import passwords
from tests.support.app import PASSWORD, app_settings

from .helpers import LOGIN, SIGNUP, assert_problem

EMAIL = "ana.silva@example.com"


def signup(client, password, email=EMAIL):
    return client.post(SIGNUP, json={"email": email, "password": password, "name": "Ana"})


# -- password rules ------------------------------------------------------------------

WEAK = {
    "too short": "Ab3$xy7",
    "too long": "correct horse " * 10,
    "one character": "aaaaaaaaaaaa",
    "two characters": "abababababab",
    "four characters": "abcdabcdabcd",
    "common": "password123",
    "common, other case": "PassWord123",
    "common keyboard walk": "qwertyuiop",
    "common digits": "1234567890",
    "the shop's name": "flashcart123",
    "the email": EMAIL,
    "the email, other case": EMAIL.upper(),
    "the part before the @": "ana.silva",
}


@pytest.mark.parametrize("password", WEAK.values(), ids=WEAK.keys())
def test_sign_up_refuses_a_weak_password_and_stores_nothing(client, mongo_db, password):
    response = signup(client, password)

    problem = assert_problem(response, 422, "validation_error")
    assert list(problem["errors"]) == ["password"]
    assert mongo_db.users.count_documents({}) == 0
    # The refusal never echoes the password back.
    assert password not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "password",
    ["a long password", "Tr0ub4dor&3", "correct horse battery", "zwölf Äpfel", "x" * 4 + "yz!?9"],
)
def test_sign_up_accepts_a_reasonable_password(client, password):
    assert signup(client, password).status_code == 201


def test_the_common_password_list_ships_with_the_code_and_is_long_enough_to_matter():
    common = passwords.common_passwords()

    assert len(common) > 100
    assert "password" in common and "12345678" in common
    assert all(len(entry) >= passwords.MIN_LENGTH for entry in common)


def test_create_admin_applies_the_same_rules(runner, mongo_db):
    result = runner.invoke(args=["create-admin", "boss@example.com", "--password", "password1"])

    assert result.exit_code != 0
    assert "too common" in result.output
    assert mongo_db.users.count_documents({}) == 0


def test_existing_passwords_are_not_rechecked_at_login(client, make_user, app, mongo_db):
    # An account from before the rules still logs in (and can then be asked to change).
    user = make_user()
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("password")
    mongo_db.users.update_one({"email": user["email"]}, {"$set": {"password_hash": weak}})

    response = client.post(LOGIN, json={"email": user["email"], "password": "password"})

    assert response.status_code == 200


# -- one account per address, however it is spelled -----------------------------------

LOOK_ALIKES = [
    "ANA@EXAMPLE.COM",
    "\uff21\uff4e\uff41@example.com",  # fullwidth "Ana"
    "ana@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",  # fullwidth "example"
    "  Ana@Example.com ",
]


def test_look_alike_spellings_of_an_address_are_one_account(client, mongo_db):
    assert signup(client, "a long password", email="ana@example.com").status_code == 201
    assert signup(client, "a long password", email="stra\u00dfe@example.com").status_code == 201
    assert signup(client, "a long password", email="\ufb01ona@example.com").status_code == 201

    for email in [*LOOK_ALIKES, "STRASSE@example.com", "fiona@example.com"]:
        assert_problem(signup(client, "a long password", email=email), 409, "email_taken")

    assert sorted(user["email"] for user in mongo_db.users.find()) == [
        "ana@example.com",
        "fiona@example.com",
        "strasse@example.com",
    ]


@pytest.mark.parametrize("email", LOOK_ALIKES)
def test_any_look_alike_spelling_logs_in_to_the_one_account(client, email):
    account = signup(client, "a long password", email="ana@example.com").json

    response = client.post(LOGIN, json={"email": email, "password": "a long password"})

    assert response.status_code == 200
    assert response.json["user"]["id"] == account["id"]


@pytest.mark.parametrize(
    "email",
    [
        "p\u0430ypal@example.com",  # a Cyrillic "a" among Latin letters
        "\u03b1lpha@example.com",  # a Greek alpha
        "ana@examp\u04cfe.com",  # a Cyrillic palochka in a domain label
    ],
)
def test_sign_up_refuses_an_address_that_mixes_scripts(client, mongo_db, email):
    response = signup(client, "a long password", email=email)

    problem = assert_problem(response, 422, "validation_error")
    assert "scripts" in problem["errors"]["email"][0]
    assert mongo_db.users.count_documents({}) == 0


@pytest.mark.parametrize(
    "email",
    [
        "\u0438\u0432\u0430\u043d@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",
        "ivan@\u043f\u0440\u0438\u043c\u0435\u0440.com",  # each label in one script
        "\u4f50\u3005\u6728@example.jp",  # Japanese: Han with its iteration mark
        "\u3055\u3068\u3046taro@example.jp",  # kana with Latin, as Japanese writes
        "jos\u00e9@example.com",
    ],
)
def test_sign_up_accepts_an_address_written_in_one_script(client, email):
    assert signup(client, "a long password", email=email).status_code == 201


def test_create_admin_refuses_an_address_that_mixes_scripts(runner, mongo_db):
    result = runner.invoke(
        args=["create-admin", "b\u043ess@example.com", "--password", "a long password"]
    )

    assert result.exit_code != 0
    assert "scripts" in result.output
    assert mongo_db.users.count_documents({}) == 0


def test_normalise_emails_rewrites_old_spellings_and_reports_clashes(
    client, runner, make_user, mongo_db
):
    # Stored by the old rule (trimmed and lower-cased only).
    ana, carl, carl_again = make_user(), make_user(), make_user()
    old_spellings = {
        ana["id"]: "\uff41\uff4e\uff41@example.com",
        carl["id"]: "\uff43arl@example.com",
        carl_again["id"]: "carl@example.com",
    }
    for user_id, email in old_spellings.items():
        mongo_db.users.update_one({"_id": ObjectId(user_id)}, {"$set": {"email": email}})

    for _ in range(2):  # safe to run again
        result = runner.invoke(args=["normalise-emails"])
        assert result.exit_code == 1, result.output
        assert f"clash: accounts {carl['id']}, {carl_again['id']} are all carl@example.com" in (
            result.output
        )

    stored = {str(doc["_id"]): doc["email"] for doc in mongo_db.users.find()}
    assert stored[ana["id"]] == "ana@example.com"
    assert stored[carl["id"]] == "\uff43arl@example.com"  # left for the operator
    login = client.post(LOGIN, json={"email": "ANA@example.com", "password": PASSWORD})
    assert login.status_code == 200 and login.json["user"]["id"] == ana["id"]


# -- argon2id, upgraded on login -----------------------------------------------------


def test_a_hash_made_with_weaker_parameters_is_upgraded_on_login(client, app, user, mongo_db):
    weaker = PasswordHasher(time_cost=1, memory_cost=256, parallelism=1).hash(PASSWORD)
    mongo_db.users.update_one({"email": user["email"]}, {"$set": {"password_hash": weaker}})

    assert (
        client.post(LOGIN, json={"email": user["email"], "password": PASSWORD}).status_code == 200
    )

    upgraded = mongo_db.users.find_one({"email": user["email"]})["password_hash"]
    config = app.config
    assert upgraded.startswith(
        f"$argon2id$v=19$m={config['ARGON2_MEMORY_KIB']},t={config['ARGON2_TIME_COST']},"
        f"p={config['ARGON2_PARALLELISM']}$"
    )
    assert upgraded != weaker
    assert PasswordHasher().verify(upgraded, PASSWORD)


def test_a_hash_made_with_the_former_default_is_rehashed_once_on_login(client, app, user, mongo_db):
    # 64 MiB, t=3, p=4: the default until issue 21; more memory than the configured
    # parameters is still "other parameters": the next login rewrites the hash.
    former = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash(PASSWORD)
    mongo_db.users.update_one({"email": user["email"]}, {"$set": {"password_hash": former}})
    login = {"email": user["email"], "password": PASSWORD}

    assert client.post(LOGIN, json=login).status_code == 200
    rehashed = mongo_db.users.find_one({"email": user["email"]})["password_hash"]
    assert rehashed != former
    assert not app.extensions["flashcart.password_hasher"].check_needs_rehash(rehashed)

    assert client.post(LOGIN, json=login).status_code == 200
    assert mongo_db.users.find_one({"email": user["email"]})["password_hash"] == rehashed


def test_an_argon2i_hash_is_upgraded_to_argon2id_on_login(client, user, mongo_db):
    from argon2 import Type

    old = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.I).hash(PASSWORD)
    mongo_db.users.update_one({"email": user["email"]}, {"$set": {"password_hash": old}})

    assert (
        client.post(LOGIN, json={"email": user["email"], "password": PASSWORD}).status_code == 200
    )

    assert mongo_db.users.find_one({"email": user["email"]})["password_hash"].startswith(
        "$argon2id$"
    )


def test_a_failed_login_does_not_touch_the_stored_hash(client, user, mongo_db):
    weaker = PasswordHasher(time_cost=1, memory_cost=256, parallelism=1).hash(PASSWORD)
    mongo_db.users.update_one({"email": user["email"]}, {"$set": {"password_hash": weaker}})

    client.post(LOGIN, json={"email": user["email"], "password": "not the password"})

    assert mongo_db.users.find_one({"email": user["email"]})["password_hash"] == weaker


# -- no account enumeration ------------------------------------------------------------


@pytest.fixture
def verify_calls(monkeypatch):
    """Each PasswordHasher.verify call made while the test runs: (hash, ok)."""
    calls = []
    verify = PasswordHasher.verify

    def spy(self, stored, password):
        try:
            result = verify(self, stored, password)
        except VerificationError:
            calls.append((stored, False))
            raise
        calls.append((stored, True))
        return result

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    return calls


def _answer(response):
    drop = {"X-Request-ID", "Date", "Content-Length"}
    return (
        response.status_code,
        response.get_data(),
        {name: value for name, value in response.headers if name not in drop},
    )


def test_no_such_user_and_wrong_password_get_the_same_answer_after_one_hash_check_each(
    client, user, verify_calls
):
    wrong_password = client.post(LOGIN, json={"email": user["email"], "password": "wrong pass 1"})
    assert len(verify_calls) == 1
    unknown_user = client.post(
        LOGIN, json={"email": "nobody@example.com", "password": "wrong pass 1"}
    )
    assert len(verify_calls) == 2

    assert_problem(wrong_password, 401, "invalid_credentials")
    assert _answer(wrong_password) == _answer(unknown_user)
    # Both paths paid for one full argon2id verification with the same parameters.
    (real_hash, ok1), (dummy_hash, ok2) = verify_calls
    assert not ok1 and not ok2
    assert real_hash.rsplit("$", 2)[0] == dummy_hash.rsplit("$", 2)[0]


def test_sign_up_does_not_reveal_more_than_that_an_email_is_taken(client, user):
    # Sign-up must say "taken" to be usable; it is rate-limited per address instead.
    response = signup(client, "another long one", email=user["email"])

    body = assert_problem(response, 409, "email_taken")
    assert user["id"] not in str(body)


# -- login throttling ----------------------------------------------------------------


@pytest.fixture
def limited(mongo_db, redis_client, app_config):
    def build(**limits):
        config = app_settings() | app_config | {"RATELIMIT_ENABLED": True} | limits
        return create_app(config, db=mongo_db, redis_client=redis_client).test_client()

    return build


def test_password_guessing_on_one_account_is_throttled_across_addresses_and_spellings(
    limited, user
):
    client = limited(RATELIMIT_LOGIN_PER_ACCOUNT="4 per minute", RATELIMIT_LOGIN_PER_IP="")
    fullwidth = "".join(
        chr(ord(char) + 0xFEE0) if char.isalnum() else char for char in user["email"]
    )
    spellings = [user["email"], user["email"].upper(), f"  {user['email'].title()} ", fullwidth]

    for number, email in enumerate(spellings):
        response = client.post(
            LOGIN,
            json={"email": email, "password": f"guess number {number}"},
            environ_base={"REMOTE_ADDR": f"10.1.0.{number}"},
        )
        assert response.status_code == 401

    # Even the right password is refused now: the attacker cannot tell it was right.
    right = client.post(
        LOGIN,
        json={"email": user["email"], "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.1.0.99"},
    )
    assert_problem(right, 429, "too_many_requests")
    assert "access_token" not in right.json


def test_guessing_from_one_address_is_throttled_across_accounts(limited, make_user):
    client = limited(RATELIMIT_LOGIN_PER_IP="3 per minute", RATELIMIT_LOGIN_PER_ACCOUNT="")
    here = {"REMOTE_ADDR": "192.0.2.50"}

    for _ in range(3):
        body = {"email": make_user()["email"], "password": "wrong password"}
        assert client.post(LOGIN, json=body, environ_base=here).status_code == 401

    body = {"email": make_user()["email"], "password": PASSWORD}
    assert_problem(client.post(LOGIN, json=body, environ_base=here), 429, "too_many_requests")


def test_a_forged_x_forwarded_for_does_not_escape_the_address_limit(limited, user):
    # No trusted proxy is configured, so the header is the client's word and is ignored.
    client = limited(RATELIMIT_LOGIN_PER_IP="2 per minute", RATELIMIT_LOGIN_PER_ACCOUNT="")
    body = {"email": user["email"], "password": "wrong password"}

    for number in range(2):
        forged = {"X-Forwarded-For": f"203.0.113.{number}"}
        assert client.post(LOGIN, json=body, headers=forged).status_code == 401

    forged = {"X-Forwarded-For": "203.0.113.200"}
    assert_problem(client.post(LOGIN, json=body, headers=forged), 429, "too_many_requests")


OWNER_HOME, OWNER_AWAY = "198.51.100.7", "192.0.2.99"


def through_the_proxy(client, address, email, password):
    """A login as the trusted load balancer forwards it from `address`."""
    return client.post(
        LOGIN,
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": address},
    )


def test_guessing_from_many_addresses_slows_new_addresses_but_never_locks_the_owner_out(
    limited, user, redis_client
):
    # The shipped limits, behind one trusted proxy (TRUSTED_PROXIES=1).
    client = limited(TRUSTED_PROXIES=1)
    email = user["email"]
    assert through_the_proxy(client, OWNER_HOME, email, PASSWORD).status_code == 200
    assert not [key for key in redis_client.keys("*") if email in key]

    answers = []
    for attacker in range(1, 11):  # ten addresses, five guesses each
        for guess in range(5):
            address = f"203.0.113.{attacker}"
            response = through_the_proxy(client, address, email, f"guess {attacker}-{guess}")
            answers.append(response.status_code)
    # 20 failures a minute from addresses it never logged in from, then slowed down.
    assert answers == [401] * 20 + [429] * 30

    # The owner, at home, still gets in; a typo there is just a wrong password.
    assert through_the_proxy(client, OWNER_HOME, email, "a typo").status_code == 401
    home = through_the_proxy(client, OWNER_HOME, email, PASSWORD)
    assert home.status_code == 200 and home.json["user"]["id"] == user["id"]
    # From a new address the owner waits, for the minute's window only: slowed, not locked.
    away = through_the_proxy(client, OWNER_AWAY, email, PASSWORD)
    assert_problem(away, 429, "too_many_requests")
    assert 1 <= int(away.headers["Retry-After"]) <= 61
    # Claiming the owner's address in X-Forwarded-For is no way in: the proxy appends
    # the real one, and only that one is trusted.
    forged = through_the_proxy(client, f"{OWNER_HOME}, 203.0.113.77", email, PASSWORD)
    assert_problem(forged, 429, "too_many_requests")


def test_guessing_from_one_address_is_stopped_there_only(limited, user):
    client = limited(TRUSTED_PROXIES=1)
    email = user["email"]

    for guess in range(5):
        assert through_the_proxy(client, "203.0.113.1", email, f"guess {guess}").status_code == 401

    # That address is stopped, even with the right password...
    stopped = through_the_proxy(client, "203.0.113.1", email, PASSWORD)
    assert_problem(stopped, 429, "too_many_requests")
    assert 1 <= int(stopped.headers["Retry-After"]) <= 61
    # ...while every other address is not, the owner's first login included.
    assert through_the_proxy(client, "203.0.113.2", email, "guess 6").status_code == 401
    assert through_the_proxy(client, OWNER_AWAY, email, PASSWORD).status_code == 200


def test_threads_logging_in_together_on_a_fresh_worker_share_one_hasher(app, monkeypatch):
    """A threaded worker's first logins may arrive at once: one hasher (one pool of
    hashing threads, one dummy hash) is built, and every thread gets it."""
    from flashcart.auth import service

    built = []

    class CountedHasher(service.Hasher):
        def __init__(self, **settings):
            built.append(self)
            super().__init__(**settings)

    monkeypatch.setattr(service, "Hasher", CountedHasher)
    start = threading.Barrier(8)

    def first_login(_):
        start.wait(timeout=10)
        with app.app_context():
            return service._hasher()

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        hashers = list(pool.map(first_login, range(8)))
    assert len(built) == 1
    assert all(hasher is built[0] for hasher in hashers)
