"""Configuration: production refuses unsafe settings, secrets come from the
environment only, the image runs as non-root, and every answer carries the
security headers."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import config
from config import ProductionConfig, UnsafeConfigError
from flashcart import create_app
from tests.support.app import app_settings

ROOT = Path(__file__).resolve().parents[2]
SAFE = {
    "MONGO_URI": "mongodb://db.internal:27017/flashcart",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "JWT_SECRET_KEY": "a-random-secret-of-more-than-thirty-two-chars",
    "DEBUG": False,
    "ADMIN_EMAIL": None,
    "ADMIN_PASSWORD": None,
}


def production(**settings):
    return type("ProductionUnderTest", (ProductionConfig,), SAFE | settings)


# -- production refuses unsafe settings ----------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"DEBUG": True}, "debug"),
        ({"JWT_SECRET_KEY": config.DEV_JWT_SECRET}, "JWT_SECRET_KEY"),
        ({"JWT_SECRET_KEY": "s" * 31}, "JWT_SECRET_KEY"),
        ({"JWT_SECRET_KEY": None}, "JWT_SECRET_KEY"),
        ({"MONGO_URI": config.MEMORY_URI}, "MONGO_URI"),
        ({"REDIS_URL": config.MEMORY_URI}, "REDIS_URL"),
        ({"WEBHOOKS_ALLOW_HTTP": True}, "WEBHOOKS_ALLOW_HTTP"),
        ({"WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS": True}, "WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS"),
    ],
)
def test_production_refuses_to_start_unsafe(settings, named):
    with pytest.raises(UnsafeConfigError, match=named):
        production(**settings).check()


def test_production_refuses_debug_handed_in_as_an_override(monkeypatch, redis_client):
    monkeypatch.setenv("FLASHCART_ENV", "production")

    with pytest.raises(UnsafeConfigError, match="debug"):
        create_app(SAFE | {"DEBUG": True}, redis_client=redis_client)


def _import_config(tmp_path, env):
    """Import config.py in a fresh interpreter, from a folder with a .env file in it."""
    shutil.copy(ROOT / "config.py", tmp_path / "config.py")
    (tmp_path / ".env").write_text("JWT_SECRET_KEY=from-a-file-in-the-working-tree-0123456789\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK", "JWT_"))}
    script = (
        "import config; c = config.load_config(); "
        "print(c.JWT_SECRET_KEY); print(c.DEBUG); print(c.HSTS_SECONDS)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=clean | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_production_reads_secrets_from_the_environment_not_from_a_file(tmp_path):
    secret, _, _ = _import_config(tmp_path, {"FLASHCART_ENV": "production"})
    assert secret == config.DEV_JWT_SECRET  # i.e. unset, so production refuses to start

    secret, _, _ = _import_config(
        tmp_path, {"FLASHCART_ENV": "production", "JWT_SECRET_KEY": "from-the-environment"}
    )
    assert secret == "from-the-environment"


def test_development_still_reads_the_env_file(tmp_path):
    secret, _, _ = _import_config(tmp_path, {"FLASHCART_ENV": "development"})

    assert secret == "from-a-file-in-the-working-tree-0123456789"


def test_flask_debug_in_the_environment_turns_production_debug_on_so_it_is_refused(tmp_path):
    _, debug, hsts = _import_config(tmp_path, {"FLASHCART_ENV": "production", "FLASK_DEBUG": "1"})

    assert debug == "True"
    assert int(hsts) >= 180 * 24 * 3600


def test_the_docker_image_runs_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)

    assert users and users[-1] not in ("root", "0")
    assert dockerfile.index(f"USER {users[-1]}") < dockerfile.index("CMD")
    # Files are copied by name, so no .env (or anything else) rides into the image.
    for copied in re.findall(r"^COPY\s+(.*)$", dockerfile, re.MULTILINE):
        assert ".env" not in copied.split() and not copied.startswith(". "), copied


# -- security headers ------------------------------------------------------------------

BASELINE = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _requests(client, user_headers, make_product):
    product = make_product(live=True)
    yield "list", client.get("/api/v1/products")
    yield (
        "cached 304",
        client.get(f"/api/v1/products/{product['id']}", headers={"If-None-Match": "*"}),
    )
    yield "authenticated", client.get("/api/v1/orders", headers=user_headers)
    yield "401", client.get("/api/v1/orders")
    yield "404", client.get("/no/such/page")
    yield "405", client.delete("/api/v1/products")
    yield "422", client.post("/api/v1/auth/login", json={"email": "x"})
    yield "health", client.get("/healthz")
    yield "spec", client.get("/openapi.json")


def test_every_answer_carries_the_security_headers(client, user_headers, make_product):
    for name, response in _requests(client, user_headers, make_product):
        for header, value in BASELINE.items():
            assert response.headers.get(header) == value, (name, header)
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, name
        assert "Strict-Transport-Security" not in response.headers  # off outside production


def test_each_security_header_is_sent_once(client):
    for response in (client.get("/healthz"), client.get("/docs")):
        for header in (*BASELINE, "Content-Security-Policy"):
            assert len(response.headers.getlist(header)) == 1, (response.request.path, header)


def test_a_500_carries_the_security_headers_too(app, client):
    @app.route("/boom")
    def boom():
        raise RuntimeError("boom")

    response = client.get("/boom")

    assert response.status_code == 500
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_token_and_personal_answers_are_not_stored_by_caches(client, user, user_headers):
    login = client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": "correct horse battery"}
    )
    orders = client.get("/api/v1/orders", headers=user_headers)

    assert login.status_code == 200
    assert login.headers["Cache-Control"] == "no-store"
    assert orders.headers["Cache-Control"] == "no-store"


def test_public_product_pages_stay_cacheable(client, make_product):
    product = make_product()

    response = client.get(f"/api/v1/products/{product['id']}")

    assert "public" in response.headers["Cache-Control"]


def test_hsts_is_sent_when_configured(app_config, mongo_db, redis_client):
    app = create_app(
        app_settings() | app_config | {"HSTS_SECONDS": 31536000},
        db=mongo_db,
        redis_client=redis_client,
    )

    response = app.test_client().get("/healthz")

    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_the_docs_page_may_load_from_this_origin_only_and_run_no_inline_script(client):
    response = client.get("/docs")

    assert response.status_code == 200
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no host, no hash, no 'unsafe-inline'
    assert policy["style-src"] == "'self'"
    assert policy["img-src"].split() == ["'self'", "data:"]  # the stylesheet's icons
    assert policy["connect-src"] == "'self'"
    # Nothing else may name a source: every other kind falls back to 'none'.
    assert set(policy) == {
        "default-src",
        "script-src",
        "style-src",
        "img-src",
        "connect-src",
        "frame-ancestors",
        "base-uri",
        "form-action",
    }
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["X-Frame-Options"] == "DENY"
