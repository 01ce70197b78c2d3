"""Route guards built on the JWT: `auth_required()` and `auth_required(ADMIN)`."""

from functools import wraps

from flask_jwt_extended import get_jwt, get_jwt_identity, verify_jwt_in_request
from flask_smorest import Blueprint

from flashcart import apidoc
from flashcart.errors import Forbidden, problem

BEARER = [{"bearerAuth": []}]
TOKEN_PROBLEMS = {
    "token_missing": "Missing Authorization Header",
    "token_invalid": "Not enough segments",
    "token_expired": "The token has expired.",
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
            if role and get_jwt().get("role") != role:
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


def current_user_is_admin():
    return get_jwt().get("role") == "admin"


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
