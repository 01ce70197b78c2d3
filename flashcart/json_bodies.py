"""Request bodies that the JSON parser itself cannot take are a client error.

webargs turns malformed JSON into a 400, but a body nested too deeply
(RecursionError) or holding a number too long to convert (ValueError from
Python's int limit) escapes it as a 500. Parsing once up front, before any
rate-limit key function or view reads the body, answers all of them with a 400.
"""

import json

from flask import request
from werkzeug.exceptions import BadRequest


def reject_unparseable_json():
    if request.content_length and request.is_json:
        try:
            json.loads(request.get_data(cache=True))
        except RecursionError:
            raise BadRequest("The JSON body is nested too deeply.") from None
        except ValueError as error:
            raise BadRequest(f"Invalid JSON body: {error}") from None


def init_app(app):
    app.before_request(reject_unparseable_json)
