"""Security headers on every answer.

The API answers JSON, so its Content-Security-Policy lets a browser load nothing
from an answer and frame none. The one HTML page, the Swagger UI at /docs, may load
the UI from OPENAPI_SWAGGER_UI_URL and run its own inline start-up script, allowed
by that script's hash rather than by 'unsafe-inline'. Strict-Transport-Security is
sent when HSTS_SECONDS is set (it is in production).
"""

import base64
import hashlib
import re

from flask import current_app, request

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_ENDPOINT = "api-docs.openapi_swagger_ui"
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def init_app(app):
    app.after_request(add_security_headers)


def add_security_headers(response):
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    docs = request.endpoint == DOCS_ENDPOINT and response.status_code == 200
    headers["Content-Security-Policy"] = _docs_policy(response) if docs else API_POLICY
    hsts = current_app.config["HSTS_SECONDS"]
    if hsts:
        headers["Strict-Transport-Security"] = f"max-age={hsts}; includeSubDomains"
    if "Cache-Control" not in headers and (
        "Authorization" in request.headers or request.blueprint == "auth"
    ):
        # Tokens and personal data must not be kept by a browser or a proxy.
        headers["Cache-Control"] = "no-store"
    return response


def _docs_policy(response):
    ui = current_app.config["OPENAPI_SWAGGER_UI_URL"]
    source = ui if ui.startswith("https://") else "'self'"
    scripts = " ".join(
        f"'sha256-{_sha256(body)}'" for body in INLINE_SCRIPT.findall(response.get_data(True))
    )
    return (
        f"default-src 'none'; script-src {source} {scripts}; "
        # Swagger UI sets inline styles; it loads the spec and sends "try it out"
        # requests to this origin.
        f"style-src {source} 'unsafe-inline'; img-src 'self' data: {source}; "
        f"font-src {source} data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _sha256(text):
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
