"""Route guards built on the JWT: `auth_required()` and `auth_required(ADMIN)`.

A user's token is trusted as it stands (signature, expiry, type, not revoked), so
the hot path costs no database read. An admin's is not: its role claim is confirmed
against the stored account, so a demoted admin loses power at once.
"""

from functools import wraps

from flask import g
from flask_jwt_extended import get_jwt, get_jwt_identity, verify_jwt_in_request
from flask_smorest import Blueprint

from flashcart import apidoc
from flashcart.auth import service as accounts
from flashcart.auth import tokens
from flashcart.errors import Forbidden, problem

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


def auth_required(role=None):
    """Require a valid access token, and the given role if one is named."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            verify_jwt_in_request()
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


def current_user_id():
    return get_jwt_identity()


def _has_role(role):
    """The token's role claim, confirmed once per request against the stored account."""
    if get_jwt().get("role") != role:
        return False
    confirmed = g.setdefault("flashcart_confirmed_roles", {})
    if role not in confirmed:
        confirmed[role] = accounts.has_role(get_jwt_identity(), role)
    return confirmed[role]


def current_user_is_admin():
    return _has_role(accounts.ADMIN)


def _unauthorized(code, detail):
    return problem(401, code, detail, headers={"WWW-Authenticate": "Bearer"})


def init_jwt(jwt):
    """Answer every token failure with the common error shape."""
    jwt.unauthorized_loader(lambda reason: _unauthorized("token_missing", reason))
    jwt.invalid_token_loader(lambda reason: _unauthorized("token_invalid", reason))
    jwt.expired_token_loader(
        lambda header, payload: _unauthorized("token_expired", "The token has expired.")
    )
    jwt.revoked_token_loader(
        lambda header, payload: _unauthorized("token_revoked", "The token has been revoked.")
    )
    jwt.token_in_blocklist_loader(lambda header, payload: tokens.is_revoked(payload))
