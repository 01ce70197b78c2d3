"""Settings, read from the environment (and a `.env` file in development).

Every variable is documented in docs/configuration.md. `load_config()` picks the
class from `FLASHCART_ENV` (development, testing, production; default development)
and `check()` refuses a production configuration that would be unsafe.
"""

import os
from datetime import timedelta

from dotenv import load_dotenv

# Production reads secrets from the process environment only, never from a file
# lying in the working tree (the image ships none; .env is for development).
if os.environ.get("FLASHCART_ENV") != "production":
    load_dotenv()

MEMORY_URI = "memory://"
DEV_JWT_SECRET = "dev-only-secret-change-me-in-production-0123456789"  # noqa: S105  # nosec B105 # refused in production
MIN_SECRET_LENGTH = 32


def _usable_cores():
    """The cores this process may run on (a container's CPU quota is not seen here)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _request_slots():
    """Requests the host's gunicorn serves at once: workers x threads (gunicorn.conf.py's
    defaults, 2 x 4)."""
    workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
    threads = int(os.environ.get("WEB_THREADS") or 4)
    return workers * max(1, threads)


def _password_checks_at_once():
    """A check a core, and at most half the request slots."""
    return max(1, min(_usable_cores(), _request_slots() // 2))


def _password_checks_waiting():
    """Half as many: checks and waiters leave at least a quarter of the slots free."""
    return max(1, min(_usable_cores() // 2, _request_slots() // 4))


def _env(name, default=None):
    value = os.environ.get(name)
    return default if value in (None, "") else value


def _int(name, default):
    return int(_env(name, default))


def _float(name, default):
    return float(_env(name, default))


def _list(name, default=""):
    return [item.strip() for item in _env(name, default).split(",") if item.strip()]


def _limit(name, default):
    # Unlike the other settings, an empty value is kept: it turns the limit off.
    return os.environ.get(name, default)


def _flag(name, default):
    return str(_env(name, default)).lower() in ("1", "true", "yes", "on")


class UnsafeConfigError(RuntimeError):
    """The configuration must not be used in this mode."""


class Config:
    ENV_NAME = "development"
    TESTING = False
    DEBUG = False

    MONGO_URI = _env("MONGO_URI", MEMORY_URI)
    REDIS_URL = _env("REDIS_URL", MEMORY_URI)
    # Fail fast when a dependency is down or slow instead of hanging the request.
    MONGO_TIMEOUT_MS = _int("MONGO_TIMEOUT_MS", 2000)
    REDIS_TIMEOUT_SECONDS = _float("REDIS_TIMEOUT_SECONDS", 2.0)
    # Replicas that must have a reservation (Redis WAIT) before it is answered 201;
    # 0 = the primary's word. Too few within REDIS_ACK_TIMEOUT_MS: the hold is
    # released and the answer is 503 (docs/operations.md "What survives what").
    REDIS_ACK_REPLICAS = _int("REDIS_ACK_REPLICAS", 0)
    REDIS_ACK_TIMEOUT_MS = _int("REDIS_ACK_TIMEOUT_MS", 250)
    # Orders are the durable truth: acknowledged once a majority of the replica set
    # has them, so a MongoDB failover cannot roll a placed order back ("" = the URI's).
    MONGO_ORDERS_WRITE_CONCERN = os.environ.get("MONGO_ORDERS_WRITE_CONCERN", "majority")
    # `orders` sharded on {user_id: 1, reservation_id: 1}: its unique index must then
    # begin with the shard key (docs/scaling-out.md).
    MONGO_ORDERS_SHARDED = _flag("MONGO_ORDERS_SHARDED", "false")

    JWT_SECRET_KEY = _env("JWT_SECRET_KEY", _env("JWT_SECRET", DEV_JWT_SECRET))
    # Short-lived access tokens; clients renew them with the refresh token.
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(seconds=_int("JWT_ACCESS_TOKEN_SECONDS", 15 * 60))
    JWT_REFRESH_TOKEN_EXPIRES = timedelta(seconds=_int("JWT_REFRESH_TOKEN_SECONDS", 7 * 24 * 3600))
    JWT_TOKEN_LOCATION = ["headers"]
    # Claims a token does not need cost every request that verifies it: a CSRF value
    # (for cookies only) and nbf (always iat).
    JWT_COOKIE_CSRF_PROTECT = False
    JWT_ENCODE_NBF = False
    # Pinned so that a token naming another algorithm (`none`, RS256...) is refused.
    JWT_ALGORITHM = "HS256"
    JWT_DECODE_ALGORITHMS = ["HS256"]
    # Strict-Transport-Security max-age in seconds (0: no header; on in production).
    HSTS_SECONDS = _int("HSTS_SECONDS", 0)

    ADMIN_EMAIL = _env("ADMIN_EMAIL")
    ADMIN_PASSWORD = _env("ADMIN_PASSWORD")

    # How long a reservation holds its units before they return to stock.
    HOLD_SECONDS = _int("HOLD_SECONDS", 600)
    # The sweeper leaves younger half-done checkouts to the requests still running them.
    SWEEP_GRACE_SECONDS = _int("SWEEP_GRACE_SECONDS", 10)
    # The sweeper audits the sales this often and reports the figures to /metrics.
    SWEEP_AUDIT_SECONDS = _int("SWEEP_AUDIT_SECONDS", 30)
    IDEMPOTENCY_TTL_SECONDS = _int("IDEMPOTENCY_TTL_SECONDS", 24 * 3600)
    # gunicorn's worker timeout (gunicorn.conf.py reads the same variable): no request
    # outlives it, so an Idempotency-Key whose request died is free again soon after.
    REQUEST_TIMEOUT_SECONDS = _int("REQUEST_TIMEOUT_SECONDS", 30)
    # Bounded optimistic retries for the WATCH/MULTI transactions; past this the
    # client gets 503 "busy" with Retry-After.
    RESERVE_MAX_ATTEMPTS = _int("RESERVE_MAX_ATTEMPTS", 64)
    # Keys one product's live stock is spread over, so concurrent reservations
    # rarely WATCH the same one (docs/performance.md); a sale keeps its count.
    STOCK_STRIPES = _int("STOCK_STRIPES", 128)
    PRODUCT_CACHE_SECONDS = _int("PRODUCT_CACHE_SECONDS", 60)
    # A worker may answer a product page from its own read this many seconds old (0 =
    # always ask Redis); a change made through that worker drops its copy.
    PRODUCT_READ_MAX_AGE = _float("PRODUCT_READ_MAX_AGE", 1.0)
    # A worker adds its pages' views to "trending" at most this often
    # (docs/performance.md).
    VIEW_FLUSH_SECONDS = _float("VIEW_FLUSH_SECONDS", 1.0)
    # A worker may answer GET /sales/stock from its own read this many seconds old
    # (0 = always ask Redis); reservations never rely on it.
    STOCK_READ_MAX_AGE = _float("STOCK_READ_MAX_AGE", 0.1)
    TRENDING_SIZE = 3

    # argon2id parameters: OWASP's 19 MiB, t=2, p=1 (docs/security.md "Passwords":
    # why, and how to weigh another setting on a host with `python -m bench.passwords`).
    # A stored hash made with other parameters is rehashed at its next login.
    ARGON2_TIME_COST = _int("ARGON2_TIME_COST", 2)
    ARGON2_MEMORY_KIB = _int("ARGON2_MEMORY_KIB", 19456)
    ARGON2_PARALLELISM = _int("ARGON2_PARALLELISM", 1)

    MAX_CONTENT_LENGTH = 64 * 1024

    LOG_LEVEL = _env("LOG_LEVEL", "INFO").upper()
    # `json`: one JSON object per line (for log shippers); `text`: for people.
    LOG_FORMAT = _env("LOG_FORMAT", "json")
    # How many proxies (load balancers) in front set X-Forwarded-For; without this
    # every client has the balancer's address and shares its rate limits.
    TRUSTED_PROXIES = _int("TRUSTED_PROXIES", 0)
    # Storefront origins allowed to call the API from a browser (comma-separated).
    CORS_ORIGINS = _list("CORS_ORIGINS")
    # Product pages may be cached this long by browsers and CDNs (then revalidated
    # with the ETag).
    PRODUCT_HTTP_MAX_AGE = _int("PRODUCT_HTTP_MAX_AGE", 5)
    # Readiness probe: each store must answer within this many seconds.
    READY_TIMEOUT_SECONDS = _float("READY_TIMEOUT_SECONDS", 1.0)

    # Rate limits ("N per second|minute|hour|day", several separated by ";"; empty = off).
    RATELIMIT_ENABLED = _flag("RATELIMIT_ENABLED", "true")
    # Defaults to REDIS_URL (see flashcart/rate_limits.py).
    RATELIMIT_STORAGE_URI = _env("RATELIMIT_STORAGE_URI")
    # Each client address's ceiling over the whole API. Off by default: the proxy in
    # front counts it (deploy/nginx/, docs/security.md#rate-limits), for a fraction of
    # what it costs every request here; set it where nothing in front does.
    RATELIMIT_GLOBAL = _limit("RATELIMIT_GLOBAL", "")
    RATELIMIT_LOGIN_PER_IP = _limit("RATELIMIT_LOGIN_PER_IP", "30 per minute")
    # Failed logins: per account and address, and per account from the addresses that
    # have not logged in to it within LOGIN_KNOWN_ADDRESS_DAYS (docs/security.md).
    RATELIMIT_LOGIN_PER_ACCOUNT_AND_IP = _limit(
        "RATELIMIT_LOGIN_PER_ACCOUNT_AND_IP", "5 per minute;20 per hour"
    )
    RATELIMIT_LOGIN_PER_ACCOUNT = _limit(
        "RATELIMIT_LOGIN_PER_ACCOUNT", "20 per minute;100 per hour"
    )
    LOGIN_KNOWN_ADDRESS_DAYS = _int("LOGIN_KNOWN_ADDRESS_DAYS", 30)
    RATELIMIT_SIGNUP_PER_IP = _limit("RATELIMIT_SIGNUP_PER_IP", "20 per hour")
    # Password checks (logins and sign-ups, from every address) each API host admits:
    # counted per host name, so each host guards its own CPU. About 17 per second a
    # core (docs/scaling-out.md "What a host sustains"); the default suits 2 cores.
    RATELIMIT_PASSWORD_CHECKS_PER_HOST = _limit(
        "RATELIMIT_PASSWORD_CHECKS_PER_HOST", "35 per second"
    )
    # Password checks running at once on an API host, across its workers, and requests
    # waiting up to PASSWORD_CHECK_WAIT_SECONDS for one of them; beyond both, 503 `busy`.
    # Keep the two together below the requests the host serves at once (workers x
    # threads): the rest serve everyone else.
    PASSWORD_CHECKS_IN_FLIGHT_PER_HOST = _int(
        "PASSWORD_CHECKS_IN_FLIGHT_PER_HOST", _password_checks_at_once()
    )
    PASSWORD_CHECKS_WAITING_PER_HOST = _int(
        "PASSWORD_CHECKS_WAITING_PER_HOST", _password_checks_waiting()
    )
    PASSWORD_CHECK_WAIT_SECONDS = _float("PASSWORD_CHECK_WAIT_SECONDS", 1.0)
    # Password checks run on threads this much nicer than the rest (0: on the request's
    # thread, at its priority), so reservations on the same host keep the CPU they need.
    PASSWORD_CHECK_NICENESS = _int("PASSWORD_CHECK_NICENESS", 10)
    # Where the slots' lock files live: every API process of the host must name the
    # same one (default: flashcart-<uid> in the system's temporary directory).
    PASSWORD_CHECK_SLOTS_DIR = _env("PASSWORD_CHECK_SLOTS_DIR")
    RATELIMIT_RESERVE_PER_USER = _limit("RATELIMIT_RESERVE_PER_USER", "30 per minute")

    # Webhooks (docs/webhooks.md). Endpoints must be https unless WEBHOOKS_ALLOW_HTTP;
    # loopback, private and link-local destinations are refused unless
    # WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS (tests, a local walkthrough); metadata
    # addresses always. Production refuses both.
    WEBHOOKS_ALLOW_HTTP = _flag("WEBHOOKS_ALLOW_HTTP", "false")
    WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = _flag("WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS", "false")
    # Each connect and each read of a delivery; the whole answer within twice that.
    WEBHOOKS_TIMEOUT_SECONDS = _float("WEBHOOKS_TIMEOUT_SECONDS", 5.0)
    # Bytes of a receiver's answer read at most (the rest is dropped).
    WEBHOOKS_MAX_RESPONSE_BYTES = _int("WEBHOOKS_MAX_RESPONSE_BYTES", 64 * 1024)
    # Attempts before a delivery is marked failed (then it waits for a replay); the
    # waits between them double from the base up to the max, the upper half random.
    WEBHOOKS_MAX_ATTEMPTS = _int("WEBHOOKS_MAX_ATTEMPTS", 12)
    WEBHOOKS_RETRY_BASE_SECONDS = _float("WEBHOOKS_RETRY_BASE_SECONDS", 10.0)
    WEBHOOKS_RETRY_MAX_SECONDS = _float("WEBHOOKS_RETRY_MAX_SECONDS", 3600.0)
    # How long a deliverer holds an endpoint; one killed mid-visit holds it this long.
    WEBHOOKS_LEASE_SECONDS = _int("WEBHOOKS_LEASE_SECONDS", 60)
    # Events fanned out per page, and deliveries read per visit.
    WEBHOOKS_BATCH_SIZE = _int("WEBHOOKS_BATCH_SIZE", 100)
    # Endpoints one deliverer works on at once (one thread each).
    WEBHOOKS_DELIVERY_THREADS = _int("WEBHOOKS_DELIVERY_THREADS", 4)
    # After a rotation the old secret signs too (a second v1) for this long.
    WEBHOOKS_SECRET_ROTATION_GRACE_SECONDS = _int(
        "WEBHOOKS_SECRET_ROTATION_GRACE_SECONDS", 24 * 3600
    )

    API_TITLE = "FlashCart API"
    API_VERSION = "1.0.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "openapi.json"
    # flask-smorest serves the document only; /docs is flashcart/swagger_ui/, which
    # serves Swagger UI's files itself instead of loading them from a CDN.

    @classmethod
    def uses_memory_backends(cls):
        return MEMORY_URI in (cls.MONGO_URI, cls.REDIS_URL)

    @classmethod
    def check(cls):
        """Raise UnsafeConfigError if this configuration must not run."""


class DevelopmentConfig(Config):
    DEBUG = False
    WEBHOOKS_ALLOW_HTTP = _flag("WEBHOOKS_ALLOW_HTTP", "true")
    LOG_FORMAT = _env("LOG_FORMAT", "text")


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    MONGO_URI = MEMORY_URI
    REDIS_URL = MEMORY_URI
    JWT_SECRET_KEY = "testing-secret-that-is-long-enough-0123456789"  # noqa: S105  # nosec B105 # tests only
    ADMIN_EMAIL = None
    ADMIN_PASSWORD = None
    # Cheap hashing keeps the suite fast; the algorithm is the same.
    ARGON2_TIME_COST = 1
    ARGON2_MEMORY_KIB = 1024
    ARGON2_PARALLELISM = 1
    # Tests about rate limits turn them on.
    RATELIMIT_ENABLED = False
    # The suite's own values, whatever the machine's environment says.
    HOLD_SECONDS = 600
    RESERVE_MAX_ATTEMPTS = 64
    STOCK_STRIPES = 64
    SWEEP_GRACE_SECONDS = 10
    SWEEP_AUDIT_SECONDS = 30
    PRODUCT_CACHE_SECONDS = 60
    # Views go to Redis each time; tests of the workers' own counts turn this on.
    VIEW_FLUSH_SECONDS = 0
    IDEMPOTENCY_TTL_SECONDS = 24 * 3600
    # Tests deliver over http; those that reach a receiver on 127.0.0.1 allow it.
    WEBHOOKS_ALLOW_HTTP = True
    WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS = False


class ProductionConfig(Config):
    ENV_NAME = "production"
    # FLASK_DEBUG would turn on Werkzeug's interactive debugger (`flask run`): refused.
    DEBUG = _flag("FLASK_DEBUG", "false")
    HSTS_SECONDS = _int("HSTS_SECONDS", 365 * 24 * 3600)

    @classmethod
    def check(cls):
        problems = []
        if cls.DEBUG:
            problems.append("debug mode is on (FLASK_DEBUG): production never runs it")
        if cls.MONGO_URI == MEMORY_URI:
            problems.append("MONGO_URI is not set: production needs a real MongoDB")
        if cls.REDIS_URL == MEMORY_URI:
            problems.append("REDIS_URL is not set: production needs a real Redis")
        secret = cls.JWT_SECRET_KEY or ""
        if secret == DEV_JWT_SECRET or len(secret) < MIN_SECRET_LENGTH:
            problems.append(
                f"JWT_SECRET_KEY must be set to a random secret of at least "
                f"{MIN_SECRET_LENGTH} characters (e.g. `python -c 'import secrets; "
                f"print(secrets.token_urlsafe(48))'`)"
            )
        if cls.WEBHOOKS_ALLOW_HTTP:
            problems.append("WEBHOOKS_ALLOW_HTTP is on: production sends webhooks over https only")
        if cls.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS:
            problems.append(
                "WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS is on: production never sends webhooks "
                "to loopback or private addresses"
            )
        if problems:
            raise UnsafeConfigError("refusing to start in production: " + "; ".join(problems))


CONFIGS = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def load_config(name=None):
    """The config class for `name` (or FLASHCART_ENV)."""
    name = name or _env("FLASHCART_ENV", "development")
    try:
        base = CONFIGS[name]
    except KeyError:
        raise UnsafeConfigError(
            f"FLASHCART_ENV={name!r} is unknown; use one of {sorted(CONFIGS)}"
        ) from None
    return base
