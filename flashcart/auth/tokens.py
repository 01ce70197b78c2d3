"""Access and refresh tokens, and their revocation by login session.

Access tokens live minutes (JWT_ACCESS_TOKEN_EXPIRES) and carry the role; refresh
tokens live days (JWT_REFRESH_TOKEN_EXPIRES) and are good for one refresh each:
using one hands out a new pair. Every token names the login session it comes from
(`sid`, flashcart/auth/sessions.py), and a refresh token its place in the session's
chain (`gen`). A refresh token used a second time ends the session, so a thief and
the victim both lose every token of that login; a logout ends it too.
"""

import jwt
from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException

from flashcart.auth import sessions
from flashcart.errors import Unauthorized
from flashcart.stores import utcnow

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


def _seconds(delta):
    return int(delta.total_seconds())


def issue(user, *, session=None):
    """A new access and refresh token pair for the (public) `user`.

    Without `session` (a login) a new session starts; a refresh passes the session
    and the generation its new refresh token is.
    """
    config = current_app.config
    refresh_lifetime = config["JWT_REFRESH_TOKEN_EXPIRES"]
    if session is None:
        session = sessions.start(user_id=user["id"], expires_at=utcnow() + refresh_lifetime)
    session_id, generation = session
    access = create_access_token(
        identity=user["id"], additional_claims={"role": user["role"], "sid": session_id}
    )
    refresh = create_refresh_token(
        identity=user["id"], additional_claims={"sid": session_id, "gen": generation}
    )
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": SCHEME,
        "expires_in": _seconds(config["JWT_ACCESS_TOKEN_EXPIRES"]),
        "refresh_expires_in": _seconds(refresh_lifetime),
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


# The algorithms verify_access checks itself: one shared secret signs and verifies.
SHARED_SECRET_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})


def verify_access(encoded):
    """The verified claims of an encoded access token, checked as flask-jwt-extended
    checks one (signature, algorithm, expiry with its leeway, subject), in one pass.

    The library's `decode_token` parses a token three times (twice unverified, to
    choose its key), a fifth of a reservation's CPU. Where the settings are the
    shipped kind (a shared secret, no audience or issuer to check) PyJWT checks the
    token once with the settings the library would pass it. Anything else, and any
    token PyJWT refuses or that is no access token, goes to the library, whose
    answer (claims or error) is the one given. The app registers no
    `decode_key_loader`; one that did would have to send every token there."""
    config = current_app.config
    algorithms = config["JWT_DECODE_ALGORITHMS"] or [config["JWT_ALGORITHM"]]
    secret = config["JWT_SECRET_KEY"]
    if (
        secret
        and config["JWT_ALGORITHM"] in algorithms
        and SHARED_SECRET_ALGORITHMS.issuperset(algorithms)
        and config["JWT_DECODE_AUDIENCE"] is None
        and config["JWT_DECODE_ISSUER"] is None
    ):
        try:
            claims = jwt.decode(
                encoded,
                secret,
                algorithms=algorithms,
                leeway=config["JWT_DECODE_LEEWAY"],
                options={"verify_aud": False, "verify_sub": config["JWT_VERIFY_SUB"]},
            )
        except jwt.InvalidTokenError:
            claims = None
        if (
            claims is not None
            and config["JWT_IDENTITY_CLAIM"] in claims
            and claims.get("type") == ACCESS
        ):
            return claims | {"fresh": claims.get("fresh", False), "jti": claims.get("jti")}
    return decode_token(encoded)


def is_revoked(claims):
    """Whether the token's session has ended. A token without one (signed before
    sessions existed) cannot be revoked by a logout, so it is refused."""
    return revocation(claims)[0]


def revocation(claims, along=()):
    """(whether the token's session has ended, the replies of `along`): Redis
    commands sent in the session check's round trip; None where none was made."""
    session_id = claims.get("sid")
    if not isinstance(session_id, str):
        return True, None
    live, along_replies = sessions.is_live(session_id, token_expires_at=claims["exp"], along=along)
    return not live, along_replies


def redeem(refresh_token):
    """The claims of a refresh token, which this one use spends, and the session and
    generation for the pair it buys.

    Two requests with the same token cannot both succeed: only the first spends it,
    and the second, a reuse, ends the session (TokenRevoked for both holders).
    """
    claims = decode(refresh_token, REFRESH)
    session_id, generation = claims.get("sid"), claims.get("gen")
    if not isinstance(session_id, str) or not isinstance(generation, int):
        raise TokenRevoked()
    lifetime = current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
    try:
        generation = sessions.rotate(
            session_id=session_id, generation=generation, expires_at=utcnow() + lifetime
        )
    except sessions.Refused:
        raise TokenRevoked() from None
    return claims, (session_id, generation)


def end_session(claims):
    """End the session of a token's `claims` (every token of that login)."""
    if isinstance(claims.get("sid"), str):
        sessions.end(session_id=claims["sid"])


def logout(*, access_claims, refresh_token):
    """End the caller's session: its access token's, and its refresh token's.

    An expired refresh token is accepted (its session ends all the same); one of
    another account is refused: a logout ends the caller's own sessions only.
    """
    refresh = decode(refresh_token, REFRESH, allow_expired=True)
    if refresh["sub"] != access_claims["sub"]:
        raise TokenInvalid("The refresh token belongs to another account.")
    end_session(access_claims)
    end_session(refresh)
