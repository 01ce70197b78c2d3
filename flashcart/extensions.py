"""The shared extension objects, created unbound and bound in `create_app`."""

from flask_cors import CORS
from flask_jwt_extended import JWTManager

from flashcart.apidoc import Api
from flashcart.stores import Stores

api = Api()
jwt = JWTManager()
stores = Stores()
# Origins come from CORS_ORIGINS; an empty list allows no cross-origin caller.
cors = CORS(
    resources={r"/api/*": {}},
    allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
    expose_headers=["ETag", "Retry-After", "X-Request-ID", "Idempotent-Replayed"],
    max_age=600,
)
