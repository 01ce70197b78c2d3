"""The shared extension objects, created unbound and bound in `create_app`."""

from flask_cors import CORS
from flask_jwt_extended import JWTManager

from flashcart.apidoc import Api
from flashcart.stores import Stores

api = Api()
jwt = JWTManager()
stores = Stores()
# Origins come from CORS_ORIGINS; with none, the app leaves CORS out (create_app).
cors = CORS(
    resources={r"/api/*": {}},
    # Every answer, errors included, passes the after-request hook, which sets the
    # headers; intercepting exceptions as well would set them twice on each error.
    intercept_exceptions=False,
    allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
    expose_headers=["ETag", "Retry-After", "X-Request-ID", "Idempotent-Replayed"],
    max_age=600,
)
