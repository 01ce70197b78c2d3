"""Domain errors and their one JSON shape (RFC 9457 problem details).

Every error response, whatever raised it, looks like:

    {"type": "urn:flashcart:problem:sold_out", "title": "Conflict", "status": 409,
     "code": "sold_out", "detail": "...", "errors": {...}}

`code` is the stable machine-readable name; `errors` (validation only) maps fields to
messages. Services raise the classes below and never know about HTTP.
"""

import logging

import pymongo.errors
from flask import Response, json
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from flashcart.redis_cluster import UNAVAILABLE as REDIS_UNAVAILABLE

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class DomainError(Exception):
    """A rule of the domain said no. Subclasses set `status` and `code`."""

    status = 400
    code = "bad_request"
    retry_after = None

    def __init__(self, detail=None, **extra):
        super().__init__(detail or self.__doc__)
        self.detail = detail or (self.__doc__ or "").strip()
        self.extra = extra


class NotFound(DomainError):
    """The resource does not exist."""

    status = 404
    code = "not_found"


class Conflict(DomainError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"


class Forbidden(DomainError):
    """You may not do this."""

    status = 403
    code = "forbidden"


class Unauthorized(DomainError):
    """Authentication is required or has failed."""

    status = 401
    code = "unauthorized"


class Busy(DomainError):
    """The product is under heavy contention; retry shortly."""

    status = 503
    code = "busy"
    retry_after = 1


class ServiceUnavailable(DomainError):
    """A backing service is unavailable; retry shortly."""

    status = 503
    code = "service_unavailable"
    retry_after = 2


def problem(status, code, detail, errors=None, headers=None):
    """Build the problem-details response."""
    body = {
        "type": f"urn:flashcart:problem:{code}",
        "title": HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _retry_headers(seconds):
    return {"Retry-After": str(seconds)} if seconds else {}


def handle_domain_error(error):
    return problem(
        error.status,
        error.code,
        error.detail,
        errors=error.extra.get("errors"),
        headers=_retry_headers(error.retry_after),
    )


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
}


def handle_http_exception(error):
    """Werkzeug/webargs errors (bad JSON, validation, 404 routes, 405...)."""
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    if isinstance(errors, dict) and set(errors) <= {"json", "query", "path", "headers"}:
        # webargs nests messages by location; the field names say enough.
        flat = {}
        for messages in errors.values():
            flat.update(messages if isinstance(messages, dict) else {"_": messages})
        errors = flat
    status = error.code or 500
    detail = data.get("message") or error.description
    if isinstance(errors, dict) and list(errors) == ["_"]:
        # A body-level problem such as malformed JSON: say it plainly.
        detail, errors = " ".join(map(str, errors["_"])), None
    if status == 422:
        detail = "The request did not validate; see `errors`."
    headers = dict(data.get("headers") or {})
    if getattr(error, "valid_methods", None):
        # RFC 9110: a 405 lists the methods the resource supports.
        headers["Allow"] = ", ".join(error.valid_methods)
    return problem(
        status,
        HTTP_CODES.get(status, "error"),
        detail,
        errors=errors,
        headers=headers,
    )


def handle_redis_error(error):
    log.error("redis unavailable: %s", error)
    return problem(
        503,
        "redis_unavailable",
        "The live inventory store is unavailable; retry shortly.",
        headers=_retry_headers(2),
    )


def handle_mongo_error(error):
    log.error("mongodb unavailable: %s", error)
    return problem(
        503,
        "database_unavailable",
        "The database is unavailable; retry shortly.",
        headers=_retry_headers(2),
    )


def handle_unexpected(error):
    log.exception("unhandled error")
    return problem(500, "internal_error", "An unexpected error occurred.")


def register_error_handlers(app):
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    # Down, slow, or (Redis Cluster) mid-failover or moving a slot: all retry later.
    for error in REDIS_UNAVAILABLE:
        app.register_error_handler(error, handle_redis_error)
    app.register_error_handler(pymongo.errors.ConnectionFailure, handle_mongo_error)
    app.register_error_handler(Exception, handle_unexpected)
