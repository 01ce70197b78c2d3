"""The shared extension objects, created unbound and bound in `create_app`."""

from flask import current_app
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from flashcart.apidoc import Api
from flashcart.stores import Stores

api = Api()
jwt = JWTManager()
stores = Stores()
# Origins come from CORS_ORIGINS; an empty list allows no cross-origin caller.
cors = CORS(
    resources={r"/api/*": {}},
    allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
    expose_headers=["ETag", "Retry-After", "X-Request-ID", "Idempotent-Replayed"],
    max_age=600,
)
# Limits are read from the config on every request, so each app (and test) has its own.
limiter = Limiter(
    key_func=get_remote_address,
    application_limits=[lambda: current_app.config["RATELIMIT_GLOBAL"]],
    # Only a 429 says when to retry (rate_limits.py); flask-limiter would put its
    # window's Retry-After on every answer, even over our own 503s'.
    headers_enabled=False,
    key_prefix="fc:rl",
    # A Redis outage must not turn every request into an error: limits then count
    # in each process's memory until Redis answers again.
    in_memory_fallback_enabled=True,
    swallow_errors=True,
)
