"""HTTP caching for public pages: Cache-Control, an ETag over the body, 304 on a match.

Browsers and CDNs may keep a product page for PRODUCT_HTTP_MAX_AGE seconds, then
revalidate it with `If-None-Match`; an unchanged page costs a 304 without a body.
"""

from functools import wraps

from flask import current_app, request
from flask_smorest import Blueprint

CACHE_CONTROL = {
    "description": "`public, max-age=N` (N = PRODUCT_HTTP_MAX_AGE).",
    "schema": {"type": "string"},
}


def cacheable(view):
    """Make a GET view's 200 answers cacheable and conditional. Apply above @response."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        response = current_app.make_response(view(*args, **kwargs))
        if response.status_code == 200:
            response.cache_control.public = True
            response.cache_control.max_age = current_app.config["PRODUCT_HTTP_MAX_AGE"]
            response.add_etag()
            response.make_conditional(request)
        return response

    # flask-smorest then documents If-None-Match, the ETag header and the 304.
    wrapper._apidoc = {**getattr(wrapper, "_apidoc", {}), "etag": True}
    return Blueprint.doc(responses={200: {"headers": {"Cache-Control": CACHE_CONTROL}}})(wrapper)
