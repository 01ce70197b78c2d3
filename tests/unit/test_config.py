"""Production refuses unsafe settings; the app factory enforces it."""

import pytest

import config
from config import DEV_JWT_SECRET, MEMORY_URI, ProductionConfig, UnsafeConfigError
from flashcart import create_app

GOOD_SECRET = "k" * 48
REAL_MONGO = "mongodb://db.internal:27017/flashcart"
REAL_REDIS = "redis://cache.internal:6379/0"


def production(**settings):
    """A ProductionConfig subclass: safe by default, with `settings` on top."""
    attributes = {
        "MONGO_URI": REAL_MONGO,
        "REDIS_URL": REAL_REDIS,
        "JWT_SECRET_KEY": GOOD_SECRET,
        "ADMIN_EMAIL": None,
        "ADMIN_PASSWORD": None,
    } | settings
    return type("ProductionUnderTest", (ProductionConfig,), attributes)


def refusal(config_class):
    with pytest.raises(UnsafeConfigError) as caught:
        config_class.check()
    return str(caught.value)


def test_a_safe_production_config_passes_the_check():
    assert production().check() is None


def test_production_refuses_an_in_memory_mongodb():
    message = refusal(production(MONGO_URI=MEMORY_URI))

    assert message.startswith("refusing to start in production")
    assert "MONGO_URI" in message
    assert "REDIS_URL" not in message
    assert "JWT_SECRET_KEY" not in message


def test_production_refuses_an_in_memory_redis():
    message = refusal(production(REDIS_URL=MEMORY_URI))

    assert "REDIS_URL" in message
    assert "MONGO_URI" not in message


@pytest.mark.parametrize(
    "secret",
    [None, "", "s" * 31, DEV_JWT_SECRET],
    ids=["missing", "empty", "31 characters", "development default"],
)
def test_production_refuses_a_missing_short_or_default_jwt_secret(secret):
    message = refusal(production(JWT_SECRET_KEY=secret))

    assert "JWT_SECRET_KEY" in message
    assert "at least 32 characters" in message
    assert "MONGO_URI" not in message


def test_a_jwt_secret_of_exactly_32_characters_is_accepted():
    assert production(JWT_SECRET_KEY="s" * 32).check() is None


def test_production_lists_every_problem_at_once():
    message = refusal(
        production(MONGO_URI=MEMORY_URI, REDIS_URL=MEMORY_URI, JWT_SECRET_KEY=DEV_JWT_SECRET)
    )

    for setting in ("MONGO_URI", "REDIS_URL", "JWT_SECRET_KEY"):
        assert setting in message


def test_development_and_testing_configs_do_not_refuse_memory_backends():
    assert config.DevelopmentConfig.check() is None
    assert config.TestingConfig.check() is None


def test_an_unknown_environment_name_is_refused():
    with pytest.raises(UnsafeConfigError, match="FLASHCART_ENV='staging' is unknown"):
        config.load_config("staging")


@pytest.mark.parametrize(
    "unsafe",
    [
        {"MONGO_URI": MEMORY_URI},
        {"REDIS_URL": MEMORY_URI},
        {"JWT_SECRET_KEY": "short"},
        {"JWT_SECRET_KEY": DEV_JWT_SECRET},
    ],
    ids=["memory mongo", "memory redis", "short secret", "default secret"],
)
def test_create_app_refuses_an_unsafe_production_config_class(redis_client, mongo_db, unsafe):
    with pytest.raises(UnsafeConfigError):
        create_app(production(**unsafe), db=mongo_db, redis_client=redis_client)


def test_create_app_builds_from_a_safe_production_config_class(redis_client, mongo_db):
    app = create_app(production(), db=mongo_db, redis_client=redis_client)

    assert app.config["ENV_NAME"] == "production"
    assert app.config["JWT_SECRET_KEY"] == GOOD_SECRET
    assert app.test_client().get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "unsafe",
    [{"JWT_SECRET_KEY": "short"}, {"REDIS_URL": MEMORY_URI}, {"MONGO_URI": MEMORY_URI}],
    ids=["short secret", "memory redis", "memory mongo"],
)
def test_create_app_refuses_unsafe_overrides_in_production_mode(
    monkeypatch, redis_client, mongo_db, unsafe
):
    # The production class itself is safe here; the unsafe value arrives as an override.
    for name, value in vars(production()).items():
        if name.isupper():
            monkeypatch.setattr(ProductionConfig, name, value)

    with pytest.raises(UnsafeConfigError):
        create_app(
            {"ENV_NAME": "production", **unsafe},
            db=mongo_db,
            redis_client=redis_client,
        )


def test_create_app_can_build_more_than_one_app_in_a_process(redis_client, mongo_db):
    # Workers, tests and tools build several apps; the second must not fail.
    for _ in range(2):
        app = create_app(production(), db=mongo_db, redis_client=redis_client)
        assert app.config["ENV_NAME"] == "production"


def test_demo_data_is_made_only_when_both_stores_are_in_memory(redis_server, redis_client):
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    from flashcart import demo
    from flashcart.bootstrap import seed_embedded_demo
    from flashcart.products import service as products

    # The benchmark's pairing: MongoDB in memory, a real Redis (no demo sales in it).
    paired = create_app(
        {"ENV_NAME": "development", "MONGO_URI": MEMORY_URI, "REDIS_URL": redis_server.url}
    )
    seed_embedded_demo(paired)
    assert redis_client.keys("fc:{p:*") == []

    embedded = create_app({"ENV_NAME": "development"})  # both in memory: `make run`
    with embedded.app_context():
        assert products.list_products(page=1, per_page=50)["items"] == [], (
            "building the app seeds nothing: the entry point does (wsgi.py)"
        )
    seed_embedded_demo(embedded)
    with embedded.app_context():
        listed = products.list_products(page=1, per_page=50)["items"]
    names = {product["name"] for product in listed}
    assert names >= {spec["name"] for spec in demo.DEMO_PRODUCTS}


def test_building_the_app_talks_to_no_real_store_even_with_an_admin_configured(
    redis_server, redis_client
):
    # gunicorn builds the app in its master (preload_app) and forks the workers: an
    # unreachable MongoDB must not stop it starting, and nothing may be opened there
    # to live on across the forks. The admin is made by `flask init` (tests/api/test_cli.py).
    if redis_server is None:
        pytest.skip("needs a real redis-server")
    # Clients an earlier test's app left open are not this app's.
    before = {c["id"] for c in redis_client.client_list()}
    app = create_app(
        production(
            MONGO_URI="mongodb://127.0.0.1:9/flashcart",
            REDIS_URL=redis_server.url,
            ADMIN_EMAIL="boss@example.com",
            ADMIN_PASSWORD="a long admin passphrase",
        )
    )

    assert [c for c in redis_client.client_list() if c["id"] not in before] == []
    assert app.test_client().get("/healthz").status_code == 200


# OWASP Password Storage Cheat Sheet: argon2id settings of equal strength.
OWASP_ARGON2ID = {(47104, 1, 1), (19456, 2, 1), (12288, 3, 1), (9216, 4, 1), (7168, 5, 1)}


def test_passwords_are_hashed_with_a_setting_owasp_lists():
    shipped = (
        ProductionConfig.ARGON2_MEMORY_KIB,
        ProductionConfig.ARGON2_TIME_COST,
        ProductionConfig.ARGON2_PARALLELISM,
    )
    assert shipped in OWASP_ARGON2ID


@pytest.mark.parametrize(
    ("server", "cores", "expected"),
    [
        ({}, 2, (2, 1)),  # gunicorn.conf.py's defaults: 2 workers x 4 threads
        ({}, 8, (4, 2)),  # half the 8 request slots, a quarter waiting
        ({"WEB_CONCURRENCY": "2"}, 2, (2, 1)),  # a thread is a slot: 2 x 4 threads
        ({"WEB_CONCURRENCY": "2", "WEB_THREADS": "1"}, 2, (1, 1)),  # compose's `logins`
        ({"WEB_CONCURRENCY": "8", "WEB_THREADS": "4"}, 2, (2, 1)),  # a core a check, at most
    ],
    ids=["default", "default on 8 cores", "two threaded workers", "two sync workers", "more"],
)
def test_password_checks_by_default_leave_most_of_the_request_slots_to_others(
    monkeypatch, server, cores, expected
):
    for name in ("WEB_CONCURRENCY", "WEB_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(config, "_usable_cores", lambda: cores)
    assert (config._password_checks_at_once(), config._password_checks_waiting()) == expected
