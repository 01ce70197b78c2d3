"""Rate limits (flask-limiter, counted in Redis).

A ceiling per client IP over the whole API (RATELIMIT_GLOBAL, set on the limiter in
extensions.py), login attempts per IP and failed ones per account and IP and per
account from new addresses (auth/known_addresses.py), sign-ups per IP and
reservations per user. Every limit is a config value (docs/configuration.md),
read per request; an empty value turns that limit off. Behind a load balancer set
TRUSTED_PROXIES, or every client shares the balancer's address.
"""

import functools
import hashlib
import logging
import socket
import time

import redis.exceptions
from flask import current_app, request
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits.errors import StorageError
from limits.storage import RedisClusterStorage, Storage

from flashcart import health, metrics, redis_cluster
from flashcart.apidoc import RETRY_AFTER, problem
from flashcart.auth import emails, known_addresses
from flashcart.auth.roles import current_user_id
from flashcart.errors import Busy
from flashcart.errors import problem as problem_response
from flashcart.extensions import limiter
from flashcart.host_slots import HostSlots, NoSlotFree

log = logging.getLogger(__name__)
STORAGE_ERRORS = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,  # not a RedisError
    StorageError,
)


def init_app(app):
    """Bind the limiter: counters in RATELIMIT_STORAGE_URI, else REDIS_URL."""
    config = app.config
    uri = config["RATELIMIT_STORAGE_URI"] or config["REDIS_URL"]
    options = {}
    if redis_cluster.is_cluster_url(uri):
        options = {"ssl": True} if uri.startswith("rediss") else {}
        uri = ClusterCounters.STORAGE_SCHEME[0] + "://" + uri.partition("://")[2]
    config["RATELIMIT_STORAGE_URI"] = uri
    if uri.startswith(("redis", ClusterCounters.STORAGE_SCHEME[0])):
        timeout = config["REDIS_TIMEOUT_SECONDS"]
        config.setdefault(
            "RATELIMIT_STORAGE_OPTIONS",
            {"socket_timeout": timeout, "socket_connect_timeout": timeout, **options},
        )
    limiter.init_app(app)
    app.register_error_handler(RateLimitExceeded, too_many_requests)
    for name in ("PASSWORD_CHECKS_IN_FLIGHT_PER_HOST", "PASSWORD_CHECKS_WAITING_PER_HOST"):
        if config[name] < 1:
            raise ValueError(f"{name} must be 1 or more, not {config[name]}")
    if not 0 <= config["PASSWORD_CHECK_NICENESS"] <= 19:
        raise ValueError("PASSWORD_CHECK_NICENESS must be from 0 to 19")
    directory = config["PASSWORD_CHECK_SLOTS_DIR"]
    app.extensions["flashcart.password_check_slots"] = HostSlots(
        "password-checks", config["PASSWORD_CHECKS_IN_FLIGHT_PER_HOST"], directory
    )
    app.extensions["flashcart.password_check_queue"] = HostSlots(
        "password-check-queue", config["PASSWORD_CHECKS_WAITING_PER_HOST"], directory
    )


# Probes and scrapes must never be refused. A request filter, not `limiter.exempt` on
# their blueprints: the limiter looks up blueprint exemptions on every request, which
# cost every API request ~15% of /healthz's CPU; a filter costs one comparison, and
# none at all once a probe is let through. Registered once: the limiter is shared by
# every app of the process.
UNLIMITED_BLUEPRINTS = frozenset({health.blp.name, metrics.blp.name})


@limiter.request_filter
def _probe_or_scrape():
    return request.blueprint in UNLIMITED_BLUEPRINTS


class ClusterCounters(Storage):
    """limits' Redis Cluster storage, connected on first use instead of at start-up.

    limits' own `redis+cluster://` storage connects when the app is built, so an API
    host could not even start while the cluster is unreachable; with one Redis it
    starts and answers 503 until Redis is back. This keeps it so: until the cluster
    answers, the limiter counts in memory (as in any Redis outage, extensions.py).
    """

    STORAGE_SCHEME = ["flashcart+redis-cluster"]

    def __init__(self, uri, wrap_exceptions=False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._uri = "redis+cluster://" + uri.partition("://")[2]
        self._options = options
        self._storage = None

    def _counters(self):
        if self._storage is None:
            try:
                self._storage = RedisClusterStorage(self._uri, **self._options)
            except redis.exceptions.RedisClusterException as error:  # no node answered
                raise redis.exceptions.ConnectionError(str(error)) from error
        return self._storage

    @property
    def base_exceptions(self):
        return (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)

    def incr(self, key, expiry, amount=1):
        return self._counters().incr(key, expiry, amount=amount)

    def get(self, key):
        return self._counters().get(key)

    def get_expiry(self, key):
        return self._counters().get_expiry(key)

    def check(self):
        try:
            return self._counters().check()
        except redis.exceptions.RedisError:
            return False

    def reset(self):
        return self._counters().reset()

    def clear(self, key):
        return self._counters().clear(key)


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


def _login_email():
    body = request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    return email if isinstance(email, str) and email.strip() else None


def _login_account():
    email = _login_email()
    if email is None:
        return f"ip:{get_remote_address()}"
    # In its stored spelling, so look-alike spellings share one count; hashed so that
    # Redis keys carry no email addresses.
    digest = hashlib.sha256(emails.normalise(email).encode()).hexdigest()[:32]
    return f"account:{digest}"


def _login_account_and_address():
    return f"{_login_account()}:from:{get_remote_address()}"


def _from_a_known_address():
    """Whether the account in the body has logged in from this address lately."""
    email = _login_email()
    if email is None:
        return False
    try:
        return known_addresses.is_known(email, get_remote_address())
    except STORAGE_ERRORS:
        return False  # counted like any address: the safe side


def _failed_login(response):
    return response.status_code == 401


def _remembering_addresses(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        response = view(*args, **kwargs)  # a wrong password raises instead
        try:
            known_addresses.remember(_login_email(), get_remote_address())
        except STORAGE_ERRORS:
            log.warning("could not remember the address of a login", exc_info=True)
        return response

    return wrapper


def _documented(view):
    return problem(
        429,
        {"too_many_requests": "Too many requests: the limit is 5 per 1 minute. Retry in 42 s."},
        headers={"Retry-After": RETRY_AFTER},
    )(view)


def _this_host():
    return f"host:{socket.gethostname()}"


def _checked_a_password(response):
    # Login answers 200 or 401, sign-up 201 or 409, once a hash was verified or made;
    # a refusal (429) or a malformed body never reached argon2.
    return response.status_code in (200, 201, 401, 409)


def _password_checks(view):
    """Admit password checks (logins and sign-ups together, from every address) at
    the rate this host sustains, RATELIMIT_PASSWORD_CHECKS_PER_HOST; beyond it 429
    with Retry-After. Counted per host name in the limiter's shared storage, so each
    host guards its own CPU and a deployment admits the sum (docs/scaling-out.md).
    Tested before the request and counted after it, only when a check ran: refused
    requests (by this or the per-address limits) spend none of it."""
    return limiter.shared_limit(
        _setting("RATELIMIT_PASSWORD_CHECKS_PER_HOST"),
        scope="password-checks",
        key_func=_this_host,
        deduct_when=_checked_a_password,
    )(view)


def _password_check_slot(view):
    """Run the view only in one of this host's PASSWORD_CHECKS_IN_FLIGHT_PER_HOST
    slots; with none free, wait for one in one of the few PASSWORD_CHECKS_WAITING_PER_HOST
    places, up to PASSWORD_CHECK_WAIT_SECONDS; with no place either, or no slot in
    time, 503 `busy`. The admission above bounds the rate; this bounds the cores and
    the workers: password checks never take every worker, nor a slot left idle while
    refused shoppers back off. Tried before any limit, so that in a storm refusals
    cost next to nothing and spend none of anyone's limits."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            slot = _take_password_check_slot()
        except NoSlotFree:
            raise Busy(
                "This server is checking as many passwords as it can at once. Retry in 1 s."
            ) from None
        try:
            return view(*args, **kwargs)
        finally:
            slot.release()

    return wrapper


def _take_password_check_slot():
    extensions = current_app.extensions
    slots = extensions["flashcart.password_check_slots"]
    try:
        return slots.take()
    except NoSlotFree:
        with extensions["flashcart.password_check_queue"].held():
            return slots.take(current_app.config["PASSWORD_CHECK_WAIT_SECONDS"])


def login(view):
    """Limit login attempts per client IP; failed ones per account and address, and
    per account from addresses that have not logged in to it lately (OWASP: throttle
    guessing per account and address, never hand anyone a switch that locks the
    owner out); and the password checks this host admits."""
    view = _remembering_addresses(view)
    view = _password_checks(view)
    view = limiter.limit(
        _setting("RATELIMIT_LOGIN_PER_ACCOUNT"),
        key_func=_login_account,
        deduct_when=_failed_login,
        exempt_when=_from_a_known_address,
        scope="login-account",
    )(view)
    view = limiter.limit(
        _setting("RATELIMIT_LOGIN_PER_ACCOUNT_AND_IP"),
        key_func=_login_account_and_address,
        deduct_when=_failed_login,
        scope="login-account-ip",
    )(view)
    view = limiter.limit(_setting("RATELIMIT_LOGIN_PER_IP"), scope="login-ip")(view)
    return _documented(_password_check_slot(view))


def signup(view):
    """Limit sign-ups per client IP, and the password checks this host admits."""
    view = _password_checks(view)
    view = limiter.limit(_setting("RATELIMIT_SIGNUP_PER_IP"), scope="signup-ip")(view)
    return _documented(_password_check_slot(view))


def reservations(view):
    """Limit reservations per user (the token's subject). Apply after authentication:
    flask-limiter counts a decorated limit when the view it wraps is called."""
    view = limiter.limit(
        _setting("RATELIMIT_RESERVE_PER_USER"), key_func=current_user_id, scope="reserve-user"
    )(view)
    return _documented(view)
