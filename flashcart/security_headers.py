"""Security headers on every answer.

The API answers JSON, so its Content-Security-Policy lets a browser load nothing
from an answer and frame none. The one HTML page, the Swagger UI at /docs
(swagger_ui/), loads its scripts, styles and images from this origin alone and runs
no inline script. Strict-Transport-Security is sent when HSTS_SECONDS is set (it is
in production).
"""

from flask import current_app, request

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_ENDPOINT = "swagger_ui.page"
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    # Swagger UI's stylesheet draws its icons from data: URLs; the page reads the
    # document and sends "try it out" requests to this origin.
    "img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def init_app(app):
    app.after_request(add_security_headers)


def add_security_headers(response):
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    docs = request.endpoint == DOCS_ENDPOINT and response.status_code == 200
    headers["Content-Security-Policy"] = DOCS_POLICY if docs else API_POLICY
    hsts = current_app.config["HSTS_SECONDS"]
    if hsts:
        headers["Strict-Transport-Security"] = f"max-age={hsts}; includeSubDomains"
    if "Cache-Control" not in headers and (
        "Authorization" in request.headers or request.blueprint == "auth"
    ):
        # Tokens and personal data must not be kept by a browser or a proxy.
        headers["Cache-Control"] = "no-store"
    return response
