from flask_smorest import Blueprint

from flashcart import rate_limits
from flashcart.apidoc import problems
from flashcart.auth import service
from flashcart.auth.schemas import Credentials, SignupIn, TokenOut, UserOut

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Accounts and tokens.")


@blp.route("/signup", methods=["POST"])
@rate_limits.signup
@blp.arguments(SignupIn)
@blp.response(201, UserOut)
@problems(service.EmailTaken)
def signup(data):
    """Register a customer account (the role is always `user`)."""
    return service.register(**data)


@blp.route("/login", methods=["POST"])
@rate_limits.login
@blp.arguments(Credentials)
@blp.response(200, TokenOut)
@problems(service.InvalidCredentials)
def login(data):
    """Exchange email and password for a bearer access token carrying the role."""
    return service.login(**data)
