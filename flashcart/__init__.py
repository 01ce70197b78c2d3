"""FlashCart: the backend for limited-edition product drops."""

from flask import Flask

from config import load_config


def create_app(config=None, *, db=None, redis_client=None):
    """Build the app.

    `config` is a config class or a dict of overrides on top of the class that
    FLASHCART_ENV names. Tests may hand in ready `db` / `redis_client` objects.
    """
    app = Flask(__name__)
    _configure(app, config)
    register_request_hooks(app)
    register_extensions(app, db, redis_client)
    register_blueprints(app)
    register_measures(app)
    register_errors(app)
    register_commands(app)
    seed_embedded_demo(app)
    return app


def _configure(app, config):
    overrides = config if isinstance(config, dict) else {}
    config_class = config if isinstance(config, type) else load_config(overrides.get("ENV_NAME"))
    if overrides:
        # Checked with the overrides applied, so a dict cannot slip past production's rules.
        config_class = type(config_class.__name__, (config_class,), overrides)
    config_class.check()
    app.config.from_object(config_class)
    app.config.update(overrides)


def register_request_hooks(app):
    """Proxy headers, request ids and logs, metrics, body and query checks, security
    headers: ahead of other hooks."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    from flashcart import json_bodies, logs, metrics, query_params, security_headers

    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    logs.init_app(app)
    metrics.init_app(app)
    json_bodies.init_app(app)
    query_params.init_app(app)
    security_headers.init_app(app)


def register_extensions(app, db, redis_client):
    from flashcart import rate_limits
    from flashcart.auth.roles import init_jwt
    from flashcart.extensions import api, cors, jwt, stores

    stores.init_app(app, db=db, redis_client=redis_client)
    jwt.init_app(app)
    init_jwt(jwt)
    rate_limits.init_app(app)
    cors.init_app(app)
    api.init_app(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )


def register_blueprints(app):
    from flashcart import health
    from flashcart.auth.routes import blp as auth
    from flashcart.extensions import api
    from flashcart.orders.routes import blp as orders
    from flashcart.products.routes import blp as products
    from flashcart.sales.routes import blp as sales

    for blueprint in (health.blp, auth, products, sales, orders):
        api.register_blueprint(blueprint)


def register_measures(app):
    """The gauges domains serve at /metrics (metrics itself knows no domain)."""
    from flashcart.sales import service as sales

    sales.init_app(app)


def register_errors(app):
    from flashcart.errors import register_error_handlers

    register_error_handlers(app)


def register_commands(app):
    from flashcart.cli import register_commands as register

    register(app)


def seed_embedded_demo(app):
    # Not named `bootstrap`: importing the flashcart.bootstrap submodule would rebind it.
    from flashcart.bootstrap import run

    run(app)
