"""Security headers on every answer.

The API answers JSON, so its Content-Security-Policy lets a browser load nothing
from an answer and frame none. The one HTML page, the Swagger UI at /docs
(swagger_ui/), loads its scripts, styles and images from this origin alone and runs
no inline script. Strict-Transport-Security is sent when HSTS_SECONDS is set (it is
in production).

The headers every answer carries are fixed for the app's life, so they are added as
plain pairs when the answer starts (WSGI middleware), as many servers do: setting them
through werkzeug's Headers, which checks each value, was ~13 µs of every request. The
ones that depend on the request (the docs page's policy, `Cache-Control: no-store`)
are set by an after_request hook; a header the app set is never added again.
"""

from flask import request

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_ENDPOINT = "swagger_ui.page"
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    # Swagger UI's stylesheet draws its icons from data: URLs; the page reads the
    # document and sends "try it out" requests to this origin.
    "img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def fixed_headers(hsts_seconds):
    """The (name, value) pairs every answer carries."""
    headers = [
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Content-Security-Policy", API_POLICY),
    ]
    if hsts_seconds:
        headers.append(("Strict-Transport-Security", f"max-age={hsts_seconds}; includeSubDomains"))
    return headers


class FixedHeaders:
    """WSGI middleware: `headers` added to every answer that has not set them."""

    def __init__(self, wsgi_app, headers):
        self.wsgi_app = wsgi_app
        self.headers = headers
        self.names = {name.lower() for name, _ in headers}

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            present = {name.lower() for name, _ in headers} & self.names
            if present:
                headers.extend(pair for pair in self.headers if pair[0].lower() not in present)
            else:
                headers.extend(self.headers)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def init_app(app):
    app.wsgi_app = FixedHeaders(app.wsgi_app, fixed_headers(app.config["HSTS_SECONDS"]))
    app.after_request(add_request_headers)


def add_request_headers(response):
    headers = response.headers
    if request.endpoint == DOCS_ENDPOINT and response.status_code == 200:
        headers["Content-Security-Policy"] = DOCS_POLICY
    if "Cache-Control" not in headers and (
        "Authorization" in request.headers or request.blueprint == "auth"
    ):
        # Tokens and personal data must not be kept by a browser or a proxy.
        headers["Cache-Control"] = "no-store"
    return response
