"""Rate limits, counted in Redis (flashcart/limit_counters.py).

Login attempts per IP and failed ones per account and IP and per account from new
addresses (auth/known_addresses.py), sign-ups per IP, the password checks each host
admits, and reservations per user; and, where no proxy in front counts it, a ceiling
per client IP over the whole API (RATELIMIT_GLOBAL). Every limit is a config value
(docs/configuration.md), read per request; an empty value turns that limit off.
Behind a load balancer set TRUSTED_PROXIES, or every client shares its address.

Only the routes that carry a limit pay for one: the limits are counted in the views'
own decorators, not in hooks every request runs (docs/decisions/0008).
"""

import functools
import hashlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from flask import Response, after_this_request, current_app, request
from limits import parse_many

from flashcart import health, metrics
from flashcart.apidoc import RETRY_AFTER, problem
from flashcart.auth import emails, known_addresses
from flashcart.auth.roles import current_user_id
from flashcart.errors import Busy, DomainError
from flashcart.extensions import stores
from flashcart.host_slots import HostSlots, NoSlotFree
from flashcart.limit_counters import STORAGE_ERRORS, Counters
from flashcart.redis_wire import query

log = logging.getLogger(__name__)
COUNTERS = "flashcart.rate_limit_counters"
LIMIT_SETTINGS = (
    "RATELIMIT_GLOBAL",
    "RATELIMIT_LOGIN_PER_IP",
    "RATELIMIT_LOGIN_PER_ACCOUNT_AND_IP",
    "RATELIMIT_LOGIN_PER_ACCOUNT",
    "RATELIMIT_SIGNUP_PER_IP",
    "RATELIMIT_PASSWORD_CHECKS_PER_HOST",
    "RATELIMIT_RESERVE_PER_USER",
)
# Probes and scrapes must never be refused.
UNLIMITED_BLUEPRINTS = frozenset({health.blp.name, metrics.blp.name})


class TooManyRequests(DomainError):
    """Too many requests; retry later."""

    status = 429
    code = "too_many_requests"

    def __init__(self, limit, retry_after):
        super().__init__(f"Too many requests: the limit is {limit}. Retry in {retry_after} s.")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limit:
    """One limit of a route: its setting, whom it counts (`key`), and under what name.

    Without `counts`, every request is counted before the view runs. With it, a
    request is refused once the limit is spent, but counted only after the answer,
    if `counts(response)` says so (failed logins, password checks that ran).
    `exempt` lets a request past the limit uncounted. A `shared` limit is one count
    across the routes that carry it; any other is counted per route."""

    setting: str
    scope: str
    key: Callable[[], str]
    counts: Callable[[Response], bool] | None = None
    exempt: Callable[[], bool] | None = None
    shared: bool = False

    def identifiers(self):
        """Whom and what the request counts against: in Redis keys as flask-limiter
        wrote them, so the counts carried over."""
        scope = self.scope if self.shared else f"{request.endpoint}:{self.scope}"
        return (self.key(), scope)


def init_app(app):
    """Counters in RATELIMIT_STORAGE_URI, else REDIS_URL; every limit checked at start."""
    config = app.config
    for name in LIMIT_SETTINGS:
        try:
            _items(config[name])
        except ValueError as error:
            raise ValueError(f"{name} is not a rate limit: {config[name]!r}") from error
    uri = config["RATELIMIT_STORAGE_URI"] or config["REDIS_URL"]
    app.extensions[COUNTERS] = Counters(
        uri, config["REDIS_TIMEOUT_SECONDS"], the_apps_redis=not config["RATELIMIT_STORAGE_URI"]
    )
    if config["RATELIMIT_ENABLED"] and config["RATELIMIT_GLOBAL"]:
        app.before_request(_within_the_ceiling)
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


@functools.lru_cache(maxsize=64)
def _items(text):
    """The windows of a limit setting ("5 per minute;20 per hour"); () for ""."""
    return tuple(parse_many(text)) if text.strip() else ()


def _client_address():
    return request.remote_addr or "127.0.0.1"


CEILING = Limit("RATELIMIT_GLOBAL", "global", _client_address, shared=True)


def _within_the_ceiling():
    """Each client address's ceiling over the API's routes, probes and scrapes aside:
    only where set (a deployment with no proxy in front to count it, decision 0007)."""
    if request.endpoint is not None and request.blueprint not in UNLIMITED_BLUEPRINTS:
        _enforce((CEILING,))


def limited(*limits):
    """Count `limits` when the view is called, the shortest windows first; the first
    one spent answers 429 `too_many_requests` with Retry-After (when its window
    resets), and the longer ones are not counted for it."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if current_app.config["RATELIMIT_ENABLED"]:
                _enforce(limits)
            return view(*args, **kwargs)

        return wrapper

    return decorator


def _enforce(limits):
    counters = current_app.extensions[COUNTERS]
    windows = []  # (window, its limit, identifiers)
    for limit in limits:
        items = _items(current_app.config[limit.setting])
        if items and not (limit.exempt and limit.exempt()):
            identifiers = limit.identifiers()
            windows += [(item, limit, identifiers) for item in items]
    # A second's window refuses before a minute's counts (as flask-limiter had it):
    # a request the host's password-check rate refuses spends none of its address's.
    windows.sort(key=lambda window: window[0])
    for item, limit, identifiers in windows:
        spend = counters.test if limit.counts else counters.hit
        if not spend(item, *identifiers):
            raise TooManyRequests(item, counters.seconds_to_reset(item, *identifiers))
    counted_after = [window for window in windows if window[1].counts]
    if counted_after:
        after_this_request(functools.partial(_count_after, counters, counted_after))


def _count_after(counters, counted_after, response):
    for item, limit, identifiers in counted_after:
        if limit.counts(response):
            counters.hit(item, *identifiers)
    return response


def _login_email():
    body = request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or not email.strip() or not _encodable(email):
        return None  # counted by address; the body's check answers it later
    return email


def _encodable(text):
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON)
        return False
    return True


def _login_account():
    email = _login_email()
    if email is None:
        return f"ip:{_client_address()}"
    # In its stored spelling, so look-alike spellings share one count; hashed so that
    # Redis keys carry no email addresses.
    digest = hashlib.sha256(emails.normalise(email).encode()).hexdigest()[:32]
    return f"account:{digest}"


def _login_account_and_address():
    return f"{_login_account()}:from:{_client_address()}"


def _from_a_known_address():
    """Whether the account in the body has logged in from this address lately."""
    email = _login_email()
    if email is None:
        return False
    try:
        return known_addresses.is_known(email, _client_address())
    except STORAGE_ERRORS:
        return False  # counted like any address: the safe side


def _failed_login(response):
    return response.status_code == 401


def _remembering_addresses(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        response = view(*args, **kwargs)  # a wrong password raises instead
        try:
            known_addresses.remember(_login_email(), _client_address())
        except STORAGE_ERRORS:
            log.warning("could not remember the address of a login", exc_info=True)
        return response

    return wrapper


def refusals_documented(view):
    """The 429 a rate-limited route may answer, in the API's documentation."""
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


# Password checks (logins and sign-ups together, from every address) at the rate
# this host sustains; counted per host name in the shared counters, so each host
# guards its own CPU and a deployment admits the sum (docs/scaling-out.md). Counted
# only when a check ran: requests refused (by this or another limit) spend none.
PASSWORD_CHECKS = Limit(
    "RATELIMIT_PASSWORD_CHECKS_PER_HOST",
    "password-checks",
    _this_host,
    counts=_checked_a_password,
    shared=True,
)


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


LOGIN_LIMITS = (
    Limit("RATELIMIT_LOGIN_PER_IP", "login-ip", _client_address),
    Limit(
        "RATELIMIT_LOGIN_PER_ACCOUNT_AND_IP",
        "login-account-ip",
        _login_account_and_address,
        counts=_failed_login,
    ),
    Limit(
        "RATELIMIT_LOGIN_PER_ACCOUNT",
        "login-account",
        _login_account,
        counts=_failed_login,
        exempt=_from_a_known_address,
    ),
    PASSWORD_CHECKS,
)
SIGNUP_LIMITS = (Limit("RATELIMIT_SIGNUP_PER_IP", "signup-ip", _client_address), PASSWORD_CHECKS)
RESERVE_LIMITS = (Limit("RATELIMIT_RESERVE_PER_USER", "reserve-user", current_user_id),)


def login(view):
    """Limit login attempts per client IP; failed ones per account and address, and
    per account from addresses that have not logged in to it lately (OWASP: throttle
    guessing per account and address, never hand anyone a switch that locks the
    owner out); and the password checks this host admits."""
    view = limited(*LOGIN_LIMITS)(_remembering_addresses(view))
    return refusals_documented(_password_check_slot(view))


def signup(view):
    """Limit sign-ups per client IP, and the password checks this host admits."""
    return refusals_documented(_password_check_slot(limited(*SIGNUP_LIMITS)(view)))


@dataclass(frozen=True)
class SessionShare:
    """A request's share of its session check's round trip (`auth_required(along=...)`):
    `commands` sent with it, `settle(replies)` once the session is live (replies None
    where no round trip carried them), `withdraw()` if the session has ended."""

    commands: tuple = ()
    settle: Callable = lambda _replies: None
    withdraw: Callable = lambda: None


def counted_with_the_session(*limits):
    """For `auth_required(along=...)`: `limits` counted in the round trip that checks
    the request's session, not in one of their own.

    Where the counters are the app's Redis and the limits come to one window that
    every request counts (no `counts`, no `exempt`), its INCRBY and EXPIRE NX go with
    the session's GET: the key, expiry and count of the limits library's fixed window.
    A request whose session has ended has its count taken back, so a revoked token
    cannot spend its owner's limit. Otherwise, and where the library checked the
    session, the limits are counted as `limited` counts them."""

    def along():
        if not current_app.config["RATELIMIT_ENABLED"]:
            return SessionShare()
        windows = [
            (item, limit) for limit in limits for item in _items(current_app.config[limit.setting])
        ]
        if not windows:
            return SessionShare()
        key = None
        if len(windows) == 1 and not (windows[0][1].counts or windows[0][1].exempt):
            item, limit = windows[0]
            identifiers = limit.identifiers()
            key = current_app.extensions[COUNTERS].key_of(item, *identifiers)
        if key is None:
            return SessionShare(settle=lambda _replies: _enforce(limits))
        expiry = item.get_expiry()
        return SessionShare(
            commands=(("INCRBY", key, 1), ("EXPIRE", key, expiry, "NX")),
            settle=functools.partial(_settle, limits, item, identifiers),
            withdraw=functools.partial(_take_back, key, expiry),
        )

    return along


def _settle(limits, item, identifiers, replies):
    if replies is None:  # no round trip carried the counters
        _enforce(limits)
    elif replies[0] > item.amount:
        counters = current_app.extensions[COUNTERS]
        raise TooManyRequests(item, counters.seconds_to_reset(item, *identifiers))


def _take_back(key, expiry):
    # The expiry again: the window may have ended in between, and a key made now by
    # DECRBY must not outlive its window.
    try:
        query(stores.redis, [("DECRBY", key, 1), ("EXPIRE", key, expiry, "NX")])
    except STORAGE_ERRORS:
        log.warning("could not take back a revoked request's count", exc_info=True)


# Reservations per user (the token's subject): `auth_required(along=...)` counts them.
reservations_per_user = counted_with_the_session(*RESERVE_LIMITS)
