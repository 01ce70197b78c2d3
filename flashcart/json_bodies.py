"""Request bodies are JSON, held to the same checks however they arrive.

A chunked body (Transfer-Encoding, no Content-Length) is read here, at most one byte
past MAX_CONTENT_LENGTH, and handed on with its length, so it meets the same limit
(413) and checks as any other body. A body that is not JSON is 415: read as JSON
it would be ignored, and `{"quantity": 3}` as text/plain would reserve one unit.
webargs turns malformed JSON into a 400, but a body nested too deeply
(RecursionError) or holding a number too long to convert (ValueError from
Python's int limit) escapes it as a 500. Parsing once up front, before any
rate-limit key function or view reads the body, answers all of them with a 400.
"""

import io
import json

from flask import request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.http import parse_set_header

JSON_ONLY = "A request body must be JSON: Content-Type application/json (or a +json type)."


class SizedChunkedBodies:
    """WSGI middleware: a chunked body becomes a body with a Content-Length.

    Only where the server marks the input as terminated (gunicorn and werkzeug's
    server do for chunked requests): without it werkzeug reads no body at all.
    """

    def __init__(self, wsgi_app, max_length):
        self.wsgi_app = wsgi_app
        self.max_length = max_length

    def __call__(self, environ, start_response):
        encoding = environ.get("HTTP_TRANSFER_ENCODING")
        terminated = environ.get("wsgi.input_terminated")
        if encoding and terminated and "chunked" in parse_set_header(encoding):
            self._buffer(environ)
        return self.wsgi_app(environ, start_response)

    def _buffer(self, environ):
        # One byte past the limit is enough to know it is too long: the rest stays unread.
        size = -1 if self.max_length is None else self.max_length + 1
        body = environ["wsgi.input"].read(size)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        del environ["HTTP_TRANSFER_ENCODING"]


def check_body():
    """Refuse a body that is too long (413), not JSON (415) or unparseable (400)."""
    length = request.content_length
    if not length:
        return
    if request.max_content_length is not None and length > request.max_content_length:
        raise RequestEntityTooLarge()
    if not request.is_json:
        raise UnsupportedMediaType(JSON_ONLY)
    try:
        json.loads(request.get_data(cache=True))
    except RecursionError:
        raise BadRequest("The JSON body is nested too deeply.") from None
    except ValueError as error:
        raise BadRequest(f"Invalid JSON body: {error}") from None


def init_app(app):
    app.wsgi_app = SizedChunkedBodies(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])
    app.before_request(check_body)
