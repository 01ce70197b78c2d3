"""HTTP caching for public pages: Cache-Control, an ETag over the body, 304 on a match.

Browsers and CDNs may keep a product page for PRODUCT_HTTP_MAX_AGE seconds, then
revalidate it with `If-None-Match`; an unchanged page costs a 304 without a body.
A worker renders a page once per object its service hands out (`rendered`).
"""

from functools import wraps

from flask import current_app, request
from werkzeug.http import generate_etag

from flashcart.apidoc import conditional_get
from flashcart.local_cache import LocalCache

RENDERED_PAGES = "flashcart.rendered_pages"
# Pages of objects a service keeps for a moment (products.service, PRODUCT_READ_MAX_AGE):
# a working set of hot products, a few kilobytes each.
RENDERED_PAGES_MAX = 1024

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
            # The header as werkzeug's CacheControl writes it, set in one step.
            max_age = current_app.config["PRODUCT_HTTP_MAX_AGE"]
            response.headers["Cache-Control"] = f"public, max-age={max_age}"
            response.add_etag()  # unless `rendered` set it
            response.make_conditional(request)
        return response

    # Documents If-None-Match, the ETag and Cache-Control headers and the 304.
    return conditional_get(headers={"Cache-Control": CACHE_CONTROL})(wrapper)


def init_app(app):
    app.extensions[RENDERED_PAGES] = LocalCache(max_entries=RENDERED_PAGES_MAX)


def rendered(schema, obj):
    """`obj` dumped by `schema`, as the JSON answer flask-smorest would give, with its
    ETag: worked out once per object in this worker. A service handing out the same
    object again (read-only: products.service keeps a product PRODUCT_READ_MAX_AGE)
    gets the same bytes without dumping, encoding and hashing them again; a changed
    product is another object. Kept with the object, so its id names no other."""
    pages = current_app.extensions[RENDERED_PAGES]
    page = pages.get(id(obj))
    if page is None or page[0] is not obj:
        body = current_app.json.response(schema.dump(obj)).get_data()
        page = (obj, body, generate_etag(body))
        pages.put(id(obj), page)
    _obj, body, etag = page
    response = current_app.response_class(body, mimetype=current_app.json.mimetype)
    response.set_etag(etag)
    return response
