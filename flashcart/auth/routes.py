from flask_smorest import Blueprint

from flashcart.auth import service
from flashcart.auth.schemas import Credentials, SignupIn, TokenOut, UserOut
from flashcart.schemas import ProblemSchema

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Accounts and tokens.")


@blp.route("/signup", methods=["POST"])
@blp.arguments(SignupIn)
@blp.response(201, UserOut)
@blp.alt_response(409, schema=ProblemSchema, description="Email already registered.")
def signup(data):
    """Register a customer account (the role is always `user`)."""
    return service.register(**data)


@blp.route("/login", methods=["POST"])
@blp.arguments(Credentials)
@blp.response(200, TokenOut)
@blp.alt_response(401, schema=ProblemSchema, description="Wrong email or password.")
def login(data):
    """Exchange email and password for a bearer access token carrying the role."""
    return service.login(**data)
