"""Access and refresh tokens, and their revocation list in Redis.

Access tokens live minutes (JWT_ACCESS_TOKEN_EXPIRES) and carry the role; refresh
tokens live days (JWT_REFRESH_TOKEN_EXPIRES) and are good for one refresh each:
using one revokes it and hands out a new pair, so a stolen refresh token stops
working as soon as either holder uses it. A revoked token's `jti` is kept in Redis
only until the token would have expired anyway, so the list holds live tokens only.
"""

import math
import time

import jwt
from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException

from flashcart.errors import Unauthorized
from flashcart.extensions import stores
from flashcart.redis_wire import query

ACCESS, REFRESH = "access", "refresh"
SCHEME = "Bearer"


class TokenMissing(Unauthorized):
    """No bearer token was sent (`Authorization: Bearer <access_token>`)."""

    code = "token_missing"


class TokenInvalid(Unauthorized):
    """The token is malformed, forged, or not of the kind this endpoint takes."""

    code = "token_invalid"


class TokenExpired(Unauthorized):
    """The token has expired."""

    code = "token_expired"


class TokenRevoked(Unauthorized):
    """The token has been revoked (logged out, or a refresh token used a second time)."""

    code = "token_revoked"


def _revoked_key(jti):
    return f"fc:revoked:{jti}"


def _seconds(delta):
    return int(delta.total_seconds())


def issue(user):
    """A new access and refresh token pair for the (public) `user`."""
    config = current_app.config
    access = create_access_token(identity=user["id"], additional_claims={"role": user["role"]})
    return {
        "access_token": access,
        "refresh_token": create_refresh_token(identity=user["id"]),
        "token_type": SCHEME,
        "expires_in": _seconds(config["JWT_ACCESS_TOKEN_EXPIRES"]),
        "refresh_expires_in": _seconds(config["JWT_REFRESH_TOKEN_EXPIRES"]),
        "user": user,
    }


def decode(token, kind, *, allow_expired=False):
    """The verified claims of an encoded `kind` token (signature, expiry, type)."""
    try:
        claims = decode_token(token, allow_expired=allow_expired)
    except jwt.ExpiredSignatureError:
        raise TokenExpired() from None
    except (jwt.InvalidTokenError, JWTExtendedException):
        raise TokenInvalid() from None
    if claims.get("type") != kind:
        raise TokenInvalid(f"Only {kind} tokens are allowed here.")
    return claims


def revoke(claims):
    """Revoke the token until it expires. True if this call revoked it (atomic)."""
    ttl = math.ceil(claims["exp"] - time.time())
    if ttl <= 0:
        return False
    return bool(stores.redis.set(_revoked_key(claims["jti"]), "1", ex=ttl, nx=True))


def is_revoked(claims):
    # Asked on every authenticated request: one raw round trip (redis_wire).
    return query(stores.redis, [("EXISTS", _revoked_key(claims["jti"]))])[0] > 0


def redeem(refresh_token):
    """The claims of a refresh token, which is revoked by this one use.

    Two requests with the same token cannot both succeed: only the one that
    revokes it does, the other gets TokenRevoked.
    """
    claims = decode(refresh_token, REFRESH)
    if not revoke(claims):
        raise TokenRevoked()
    return claims


def logout(*, access_claims, refresh_token):
    """Revoke the caller's access token and their refresh token.

    An expired refresh token is accepted (there is nothing left to revoke); one of
    another account is refused: a logout ends the caller's own session only.
    """
    refresh = decode(refresh_token, REFRESH, allow_expired=True)
    if refresh["sub"] != access_claims["sub"]:
        raise TokenInvalid("The refresh token belongs to another account.")
    revoke(access_claims)
    revoke(refresh)
