"""HTTP caching for public pages: Cache-Control, an ETag over the body, 304 on a match.

Browsers and CDNs may keep a product page for PRODUCT_HTTP_MAX_AGE seconds, then
revalidate it with `If-None-Match`; an unchanged page costs a 304 without a body.
"""

from functools import wraps

from flask import current_app, request

from flashcart.apidoc import conditional_get

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

    # Documents If-None-Match, the ETag and Cache-Control headers and the 304.
    return conditional_get(headers={"Cache-Control": CACHE_CONTROL})(wrapper)
