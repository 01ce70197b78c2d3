"""The benchmark measures what ships: production settings, rate limits on; and its
yardstick, the floor, is a bare Flask endpoint on 4 sync gunicorn workers."""

import os

import limits
from gunicorn.config import Config as GunicornConfig

from bench import floor
from bench.app import BenchConfig
from bench.durability import ACKED_ENV
from bench.logins import CAPACITY_ENV, STORM_ENV, Deployment
from bench.servers import LOAD_GENERATOR_CEILING, LOAD_GENERATOR_EDGE_CEILING, Floor, Gunicorn
from config import MEMORY_URI, ProductionConfig
from tests.support import compose

# What the benchmark may set: where to find its stores and its secret.
ALLOWED = {"FLASHCART_ENV", "PORT", "REDIS_URL", "JWT_SECRET_KEY"}


def test_the_benchmark_server_changes_no_setting_but_its_stores():
    server = Gunicorn("redis://127.0.0.1:1/0", env={})
    changed = {key for key in server.env if os.environ.get(key) != server.env[key]}

    assert changed <= ALLOWED
    assert server.env["FLASHCART_ENV"] == "production"
    assert "RATELIMIT_ENABLED" not in changed


def test_the_benchmark_server_runs_the_shipped_gunicorn_settings_file():
    server = Gunicorn("redis://127.0.0.1:1/0", env={})

    assert server.config == "gunicorn.conf.py"
    assert server.app == "bench.app:create()"


def test_the_floor_runs_four_sync_workers_and_no_other_server_setting():
    server = Floor()
    gunicorn_settings = {name for name in vars(floor) if name in GunicornConfig().settings}

    assert (server.config, server.app) == ("python:bench.floor", "bench.floor:app")
    assert server.env == dict(os.environ)
    assert gunicorn_settings == {"workers", "worker_class"}
    assert (floor.workers, floor.worker_class) == (4, "sync")


def test_the_floor_is_one_bare_flask_json_endpoint():
    app = floor.app
    hooks = [app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs]

    assert [rule.rule for rule in app.url_map.iter_rules()] == ["/"]
    assert not any(hooks) and not app.extensions and not app.blueprints
    response = app.test_client().get("/")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_the_load_generator_ceilings_are_limits_not_switches():
    parsed = limits.parse_many(LOAD_GENERATOR_CEILING)
    rate, burst = LOAD_GENERATOR_EDGE_CEILING

    assert len(parsed) == 1 and parsed[0].amount >= 10**6
    assert rate.endswith("r/s") and int(rate[:-3]) >= 10**6 and int(burst) >= 10**6


def test_the_benchmark_app_differs_from_production_only_in_its_in_memory_mongodb():
    overridden = {key for key in vars(BenchConfig) if key.isupper()}

    assert issubclass(BenchConfig, ProductionConfig)
    assert overridden == {"MONGO_URI"}
    assert BenchConfig.MONGO_URI == MEMORY_URI


def test_the_login_storm_runs_with_the_shipped_admission():
    # One address stands for every shopper: its login limit is raised like the ceiling.
    assert set(STORM_ENV) <= ALLOWED | {"RATELIMIT_LOGIN_PER_IP"}
    assert STORM_ENV["RATELIMIT_LOGIN_PER_IP"] == LOAD_GENERATOR_CEILING
    assert "RATELIMIT_PASSWORD_CHECKS_PER_HOST" not in STORM_ENV
    assert "PASSWORD_CHECKS_IN_FLIGHT_PER_HOST" not in STORM_ENV


def test_only_the_capacity_table_lifts_the_per_host_admission_and_bound():
    raised = {key for key in CAPACITY_ENV if CAPACITY_ENV[key] != STORM_ENV.get(key)}

    assert raised == {"RATELIMIT_PASSWORD_CHECKS_PER_HOST", "PASSWORD_CHECKS_IN_FLIGHT_PER_HOST"}
    assert CAPACITY_ENV["RATELIMIT_PASSWORD_CHECKS_PER_HOST"] == LOAD_GENERATOR_CEILING


def test_the_durability_variant_changes_only_the_replica_acknowledgement():
    assert set(ACKED_ENV) == {"REDIS_ACK_REPLICAS", "REDIS_ACK_TIMEOUT_MS"}
    assert ACKED_ENV["REDIS_ACK_REPLICAS"] == "1"


def test_the_login_benchmark_runs_composes_logins_service_behind_nginx():
    deployment = Deployment("redis://127.0.0.1:1/0", "accounts.txt", STORM_ENV)

    for server, name in ((deployment.api, "api"), (deployment.logins, "logins")):
        settings = compose.service_settings(name)
        assert {key: server.env[key] for key in settings} == settings
    assert deployment.api.env["TRUSTED_PROXIES"] == "1"
    # nginx's ceiling is the one edge setting raised: one address stands for every shopper.
    assert deployment.edge_ceiling == LOAD_GENERATOR_EDGE_CEILING
    assert deployment.api.env.get("WEB_CONCURRENCY") == os.environ.get("WEB_CONCURRENCY")
