from flask_smorest import Blueprint

from flashcart import rate_limits
from flashcart.apidoc import problems
from flashcart.auth import service, tokens
from flashcart.auth.roles import auth_required, current_claims
from flashcart.auth.schemas import Credentials, RefreshTokenIn, RoleIn, SignupIn, TokenOut, UserOut

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Accounts and tokens.")


@blp.route("/signup", methods=["POST"])
@rate_limits.signup
@blp.arguments(SignupIn())
@blp.response(201, UserOut)
@problems(service.EmailTaken)
def signup(data):
    """Register a customer account (the role is always `user`)."""
    return service.register(**data)


@blp.route("/login", methods=["POST"])
@rate_limits.login
@blp.arguments(Credentials())
@blp.response(200, TokenOut)
@problems(service.InvalidCredentials)
def login(data):
    """Exchange email and password for an access token (with the role) and a refresh token."""
    return service.login(**data)


@blp.route("/refresh", methods=["POST"])
@blp.arguments(RefreshTokenIn())
@blp.response(200, TokenOut)
@problems(tokens.TokenInvalid, tokens.TokenExpired, tokens.TokenRevoked)
def refresh(data):
    """Spend a refresh token on a new access and refresh token pair."""
    return service.refresh(**data)


@blp.route("/logout", methods=["POST"])
@auth_required()
@blp.arguments(RefreshTokenIn())
@blp.response(204)
@problems(tokens.TokenInvalid)
def logout(data):
    """Revoke the bearer access token and the refresh token in the body."""
    tokens.logout(access_claims=current_claims(), **data)


@blp.route("/users/<user_id>/role", methods=["PUT"])
@auth_required("admin")
@blp.arguments(RoleIn())
@blp.response(200, UserOut)
@problems(service.UserNotFound, service.LastAdmin)
def set_role(data, user_id):
    """Grant (`admin`) or revoke (`user`) the admin role of an account (admin)."""
    return service.set_role(user_id=user_id, **data)
