"""Rate limits (flask-limiter, counted in Redis).

A ceiling per client IP over the whole API (RATELIMIT_GLOBAL, set on the limiter in
extensions.py), login attempts per IP and failed ones per account, sign-ups per IP
and reservations per user. Every limit is a config value (README "Configuration"),
read per request; an empty value turns that limit off. Behind a load balancer set
TRUSTED_PROXIES, or every client shares the balancer's address.
"""

import hashlib
import time

from flask import current_app, request
from flask_jwt_extended import get_jwt_identity
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address

from flashcart import health, metrics
from flashcart.apidoc import RETRY_AFTER, problem
from flashcart.errors import problem as problem_response
from flashcart.extensions import limiter


def init_app(app):
    """Bind the limiter: counters in RATELIMIT_STORAGE_URI, else REDIS_URL."""
    config = app.config
    config["RATELIMIT_STORAGE_URI"] = config["RATELIMIT_STORAGE_URI"] or config["REDIS_URL"]
    tls = {}
    if config["RATELIMIT_STORAGE_URI"].startswith("rediss+cluster://"):
        # limits spells a TLS Redis Cluster as redis+cluster:// with ssl on.
        config["RATELIMIT_STORAGE_URI"] = config["RATELIMIT_STORAGE_URI"].replace(
            "rediss", "redis", 1
        )
        tls = {"ssl": True}
    if config["RATELIMIT_STORAGE_URI"].startswith("redis"):
        timeout = config["REDIS_TIMEOUT_SECONDS"]
        config.setdefault(
            "RATELIMIT_STORAGE_OPTIONS",
            {"socket_timeout": timeout, "socket_connect_timeout": timeout, **tls},
        )
    limiter.init_app(app)
    app.register_error_handler(RateLimitExceeded, too_many_requests)
    # Probes and scrapes must never be refused.
    for blueprint in (health.blp, metrics.blp):
        limiter.exempt(blueprint)


def too_many_requests(error):
    """429 in the problem shape, with Retry-After: when the breached window resets."""
    breached = limiter.current_limit
    seconds = max(1, round(breached.reset_at - time.time())) if breached else 1
    return problem_response(
        429,
        "too_many_requests",
        f"Too many requests: the limit is {error.description}. Retry in {seconds} s.",
        headers={"Retry-After": str(seconds)},
    )


def _setting(name):
    return lambda: current_app.config[name]


def _login_account():
    body = request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or not email.strip():
        return f"ip:{get_remote_address()}"
    # Hashed so that Redis keys carry no email addresses.
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"account:{digest}"


def _failed_login(response):
    return response.status_code == 401


def _current_user():
    return f"user:{get_jwt_identity()}"


def _documented(view):
    return problem(
        429,
        {"too_many_requests": "Too many requests: the limit is 5 per 1 minute. Retry in 42 s."},
        headers={"Retry-After": RETRY_AFTER},
    )(view)


def login(view):
    """Limit login attempts per client IP, and failed ones per account."""
    view = limiter.limit(
        _setting("RATELIMIT_LOGIN_PER_ACCOUNT"),
        key_func=_login_account,
        deduct_when=_failed_login,
        scope="login-account",
    )(view)
    view = limiter.limit(_setting("RATELIMIT_LOGIN_PER_IP"), scope="login-ip")(view)
    return _documented(view)


def signup(view):
    """Limit sign-ups per client IP."""
    view = limiter.limit(_setting("RATELIMIT_SIGNUP_PER_IP"), scope="signup-ip")(view)
    return _documented(view)


def reservations(view):
    """Limit reservations per user. Apply after authentication."""
    view = limiter.limit(
        _setting("RATELIMIT_RESERVE_PER_USER"), key_func=_current_user, scope="reserve-user"
    )(view)
    return _documented(view)
