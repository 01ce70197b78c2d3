"""Route guards built on the JWT: `auth_required()` and `auth_required(ADMIN)`.

A user's token is trusted as it stands (signature, expiry, type, not revoked), so
the hot path costs no database read. An admin's is not: its role claim is confirmed
against the stored account, so a demoted admin loses power at once.

An access token is checked in one pass (`tokens.verify_access`, which gives the
library's answer), and each app remembers the tokens it verified (`VerifiedTokens`),
so a client's next request only checks expiry and revocation. The request's claims
are read through `current_claims()` and `current_user_id()` here, never through the
library's own accessors (ruff bans them elsewhere): on a remembered token the
library has not run.
"""

import time
from datetime import timedelta
from functools import wraps
from types import MappingProxyType

from flask import abort, current_app, g, request
from flask_jwt_extended import verify_jwt_in_request
from flask_smorest import Blueprint

from flashcart import apidoc
from flashcart.auth import service as accounts
from flashcart.auth import tokens
from flashcart.errors import Forbidden, problem
from flashcart.local_cache import LocalCache

# A worker's verified tokens: 8192 outlast a drop's active clients per worker (a
# token's claims are well under a kilobyte, so a few MB at most); a full cache starts
# over, which costs one library check per client. An entry is trusted 60 s at most, so
# a change to the app's JWT settings reaches every token within a minute; `exp` is
# checked on each use, so none outlives its token.
VERIFIED_TOKENS_MAX = 8192
VERIFIED_TOKEN_SECONDS = 60
# The flask.g attributes auth_required sets; logs.py reads USER_ID_ATTRIBUTE itself
# (a leaf, it may not import auth).
CLAIMS_ATTRIBUTE = "flashcart_claims"
USER_ID_ATTRIBUTE = "user_id"

BEARER = [{"bearerAuth": []}]
TOKEN_PROBLEMS = {
    error.code: error.__doc__.strip()
    for error in (
        tokens.TokenMissing,
        tokens.TokenInvalid,
        tokens.TokenExpired,
        tokens.TokenRevoked,
    )
}


class AdminOnly(Forbidden):
    """Only an admin may do this."""

    code = "admin_only"


def auth_required(role=None, *, along=None):
    """Require a valid access token, and the given role if one is named.

    `along()`, called once the token is verified, gives what the request sends in its
    session check's round trip (rate_limits.counted_with_the_session): `commands`;
    `settle(replies)` once the session is live (replies None where the library
    checked the session); `withdraw()` if it has ended.
    """

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            claims, session_checked = _verified_claims()
            if claims is not None:  # None: an OPTIONS request, which the library exempts
                setattr(g, CLAIMS_ATTRIBUTE, claims)
                setattr(g, USER_ID_ATTRIBUTE, claims["sub"])
                share = along() if along else None
                try:
                    revoked, along_replies = (
                        (False, None)
                        if session_checked
                        else tokens.revocation(claims, share.commands if share else ())
                    )
                except BaseException:
                    _forget_claims()  # never logged as a user whose token did not pass
                    raise
                if revoked:
                    if share and along_replies is not None:
                        share.withdraw()
                    _forget_claims()
                    abort(_token_revoked())
                if share:
                    share.settle(along_replies)
            if role and not _has_role(role):
                raise AdminOnly()
            return view(*args, **kwargs)

        wrapper = apidoc.problem(
            401, TOKEN_PROBLEMS, headers={"WWW-Authenticate": {"schema": {"type": "string"}}}
        )(wrapper)
        if role:
            wrapper = apidoc.problems(AdminOnly)(wrapper)
        return Blueprint.doc(security=BEARER)(wrapper)

    return decorator


def _forget_claims():
    g.pop(CLAIMS_ATTRIBUTE, None)
    g.pop(USER_ID_ATTRIBUTE, None)


class VerifiedTokens:
    """The access tokens one app verified recently: the exact Authorization header
    (hence the exact token) -> its claims, read-only.

    Only what `auth_required` verified through the library is put here, so never a
    refresh token (the library refuses one there). Kept per app, so two apps in one
    process never take each other's word. Only when tokens come in the Authorization
    header alone: then the same header means the same token the library verified.
    """

    def __init__(self, config):
        self.enabled = list(config["JWT_TOKEN_LOCATION"]) == ["headers"] and (
            config["JWT_HEADER_NAME"] == "Authorization"
        )
        self.claims = LocalCache(VERIFIED_TOKEN_SECONDS, VERIFIED_TOKENS_MAX)

    def remembered(self, header):
        """The claims of `header`'s token if remembered and not expired, else None.

        Expired as PyJWT has it, with the leeway the library reads per request
        (`exp <= now - leeway`): the library then gives its own answer."""
        claims = self.claims.get(header) if self.enabled and header else None
        if claims is None or claims["exp"] <= time.time() - _leeway_seconds():
            return None
        return claims

    def remember(self, header, claims):
        if self.enabled and header and "exp" in claims:
            self.claims.put(header, claims)


def _leeway_seconds():
    leeway = current_app.config["JWT_DECODE_LEEWAY"]
    return leeway.total_seconds() if isinstance(leeway, timedelta) else leeway


def init_verified_tokens(app):
    """Give the app its own memory of verified tokens (per worker: LocalCache empties
    it in a forked child). After `jwt.init_app`, which sets the JWT defaults."""
    app.extensions["flashcart.verified_tokens"] = VerifiedTokens(app.config)


def _verified_claims():
    """(The request's access token claims, whether its session was checked), claims
    None where the library checks nothing.

    A token this app verified recently is not verified again; its session is checked
    on every request all the same (by the caller, unless the library did)."""
    verified_tokens = current_app.extensions["flashcart.verified_tokens"]
    header = request.headers.get("Authorization")
    claims = verified_tokens.remembered(header)
    if claims is not None:
        return claims, False
    # Where tokens may come from elsewhere, the header alone says nothing.
    claims, session_checked = _verify(header if verified_tokens.enabled else None)
    if claims is not None:
        verified_tokens.remember(header, claims)
    return claims, session_checked


def _verify(header):
    """(The claims of the token in `header`, whether its session was checked), read
    from the request as the library does when `header` is None, checked by the library.

    A plain bearer access token goes through `tokens.verify_access` (signature,
    algorithm, expiry with leeway, required claims) and its type is checked here,
    its session by the caller: `verify_jwt_in_request` would parse the token twice
    more. Anything else (no token, another scheme, another type, an OPTIONS request)
    takes `verify_jwt_in_request`, which gives the library's answer, its revocation
    check included.
    """
    encoded = _bearer_token(header) if request.method != "OPTIONS" else None
    claims = tokens.verify_access(encoded) if encoded else None
    if claims is None or claims.get("type") != "access":
        verified = verify_jwt_in_request()
        return (None if verified is None else MappingProxyType(dict(verified[1]))), True
    return MappingProxyType(dict(claims)), False


def _bearer_token(header):
    """The token of an `Authorization: <JWT_HEADER_TYPE> <token>` header, else None."""
    parts = (header or "").split()
    if len(parts) == 2 and parts[0] == current_app.config["JWT_HEADER_TYPE"]:
        return parts[1]
    return None


def current_claims():
    """The verified claims of the request's access token (read-only)."""
    claims = g.get(CLAIMS_ATTRIBUTE)
    if claims is None:
        raise RuntimeError("No verified token: current_claims() needs auth_required().")
    return claims


def current_user_id():
    return current_claims()["sub"]


def _has_role(role):
    """The token's role claim, confirmed once per request against the stored account."""
    if current_claims().get("role") != role:
        return False
    confirmed = g.setdefault("flashcart_confirmed_roles", {})
    if role not in confirmed:
        confirmed[role] = accounts.has_role(current_user_id(), role)
    return confirmed[role]


def current_user_is_admin():
    return _has_role(accounts.ADMIN)


def _unauthorized(code, detail):
    return problem(401, code, detail, headers={"WWW-Authenticate": "Bearer"})


def _token_revoked(*_header_and_claims):
    return _unauthorized("token_revoked", "The token has been revoked.")


def init_jwt(jwt):
    """Answer every token failure with the common error shape."""
    jwt.unauthorized_loader(lambda reason: _unauthorized("token_missing", reason))
    jwt.invalid_token_loader(lambda reason: _unauthorized("token_invalid", reason))
    jwt.expired_token_loader(
        lambda header, payload: _unauthorized("token_expired", "The token has expired.")
    )
    jwt.revoked_token_loader(_token_revoked)
    jwt.token_in_blocklist_loader(lambda header, payload: tokens.is_revoked(payload))
