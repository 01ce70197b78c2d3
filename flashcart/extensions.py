"""The shared extension objects, created unbound and bound in `create_app`."""

from flask_jwt_extended import JWTManager
from flask_smorest import Api as _Api

from flashcart.errors import handle_http_exception
from flashcart.stores import Stores


class Api(_Api):
    """flask-smorest's Api, answering errors in FlashCart's problem-details shape."""

    def handle_http_exception(self, error):
        return handle_http_exception(error)


api = Api()
jwt = JWTManager()
stores = Stores()
