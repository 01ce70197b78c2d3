"""A query parameter the operation does not document is refused (422), on every route
under /api.

Listings validate their query with a schema that refuses unknown names; every other
route would ignore one silently. The API document says which names each operation
takes, so the refusal cannot drift from what the document promises. The probes at
the root take anything: a load balancer may add a query string of its own.
"""

from flask import current_app, request
from flask_smorest import abort
from flask_smorest.spec.plugins import FlaskPlugin

from flashcart.extensions import api

_EXTENSION = "flashcart.query_params"
API_PREFIX = "/api/"


def documented_query_params(spec):
    """{(OpenAPI path, method): the query parameter names it documents}, for the API's
    operations under /api."""
    documented = {}
    for path, item in spec["paths"].items():
        if not path.startswith(API_PREFIX):
            continue
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method == "parameters":
                continue
            parameters = [_resolved(spec, p) for p in (*shared, *operation.get("parameters", []))]
            names = {p["name"] for p in parameters if p["in"] == "query"}
            documented[path, method] = frozenset(names)
    return documented


def _resolved(spec, parameter):
    if "$ref" in parameter:
        return spec["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
    return parameter


def refuse_undocumented_query_params():
    if not request.args or request.url_rule is None:
        return
    documented = current_app.extensions.get(_EXTENSION)
    if documented is None:
        documented = documented_query_params(api.spec.to_dict())
        current_app.extensions[_EXTENSION] = documented
    method = "get" if request.method == "HEAD" else request.method.lower()
    allowed = documented.get((FlaskPlugin.flaskpath2openapi(request.url_rule.rule), method))
    if allowed is None:
        return  # not an API operation: a probe, the document itself, a CORS preflight
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        abort(422, errors={"query": {name: ["Unknown field."] for name in unknown}})


def init_app(app):
    app.before_request(refuse_undocumented_query_params)
