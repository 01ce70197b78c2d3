"""FlashCart: the backend for limited-edition product drops."""

from werkzeug.middleware.proxy_fix import ProxyFix

from config import load_config

# Each name bound here must not be a submodule's (say `stores` or `sales`): it would
# replace `flashcart.stores` for everyone who reaches the module through the package.
from flashcart import (
    deadlines,
    extensions,
    health,
    http_caching,
    json_bodies,
    json_provider,
    logs,
    metrics,
    query_params,
    rate_limits,
    security_headers,
    swagger_ui,
)
from flashcart.auth.roles import init_jwt, init_verified_tokens
from flashcart.auth.routes import blp as auth_routes
from flashcart.checkout import report as sweeper_report
from flashcart.cli import register_commands as register_cli_commands
from flashcart.errors import register_error_handlers
from flashcart.events.routes import blp as event_routes
from flashcart.extensions import api, cors, jwt
from flashcart.orders.routes import blp as order_routes
from flashcart.products import service as product_service
from flashcart.products.routes import blp as product_routes
from flashcart.sales import service as sale_service
from flashcart.sales.routes import blp as sale_routes
from flashcart.webhooks import service as webhook_service
from flashcart.webhooks.routes import blp as webhook_routes


def create_app(config=None, *, db=None, redis_client=None):
    """Build the app: configure it and register its parts. Nothing connects and no
    data is written here (the embedded demo is seeded by wsgi.py, see bootstrap.py).

    `config` is a config class or a dict of overrides on top of the class that
    FLASHCART_ENV names. Tests may hand in ready `db` / `redis_client` objects.
    """
    app = json_provider.FlashCartFlask(__name__)
    _configure(app, config)
    register_request_hooks(app)
    register_extensions(app, db, redis_client)
    register_blueprints(app)
    register_measures(app)
    register_error_handlers(app)
    register_cli_commands(app)
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
    """The request's time bound, proxy headers, request ids and logs, metrics, body and
    query checks, security headers: ahead of other hooks."""
    deadlines.init_app(app)
    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    logs.init_app(app)
    metrics.init_app(app)
    json_bodies.init_app(app)
    query_params.init_app(app)
    security_headers.init_app(app)


def register_extensions(app, db, redis_client):
    extensions.stores.init_app(app, db=db, redis_client=redis_client)
    jwt.init_app(app)
    init_jwt(jwt)
    init_verified_tokens(app)
    rate_limits.init_app(app)
    if app.config["CORS_ORIGINS"]:  # else no browser origin is allowed: nothing to add
        cors.init_app(app)
    api.init_app(app)
    http_caching.init_app(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )


def register_blueprints(app):
    for blueprint in (
        health.blp,
        auth_routes,
        product_routes,
        sale_routes,
        order_routes,
        event_routes,
        webhook_routes,
    ):
        api.register_blueprint(blueprint)
    swagger_ui.init_app(app)


def register_measures(app):
    """What domains keep per worker, and serve at /metrics (metrics knows no domain)."""
    sale_service.init_app(app)
    product_service.init_app(app)
    health.init_app(app)
    sweeper_report.init_app(app)
    webhook_service.init_app(app)
