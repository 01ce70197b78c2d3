"""The API contract: every error answer documented in the one problem shape.

`problems(ProductNotFound, SoldOut, ...)` documents the domain errors an endpoint may
answer, grouped by status, with an example per code; `problem(status, codes)` does
the same for errors that are not domain classes (token failures, rate limits). The
spec is committed as `openapi.json` (`make openapi`) and a test keeps the file current.
"""

import http
import re
from collections import defaultdict

from apispec import BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from flask_smorest import Api as _Api
from flask_smorest import Blueprint
from werkzeug.http import HTTP_STATUS_CODES

from flashcart.errors import PROBLEM_JSON, handle_http_exception
from flashcart.json_bodies import JSON_ONLY
from flashcart.schemas import ProblemSchema

DESCRIPTION = (
    "The backend for limited-edition product drops. Authenticate with "
    "`Authorization: Bearer <access_token>` from `POST /api/v1/auth/login`. Every error "
    "is an RFC 9457 problem (`application/problem+json`) with a stable `code`; 422s "
    "add `errors` by field. Rate-limited answers are 429 with `Retry-After`. Unknown "
    "body fields and query parameters are refused. Ids are spelled as returned (24 "
    "lower-case hex digits); any other spelling names nothing (404)."
)
OTHER_ERRORS = (
    "Any other error, in the problem shape: 400 malformed JSON, 405 method not allowed, "
    "413 body over 64 KiB, 415 unsupported media type, 422 a query parameter the "
    "operation does not take, 429 rate limited (with `Retry-After`), 503 a backing "
    "store is unavailable (with `Retry-After`)."
)
RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 0},
}
PYTHON_STATUS_NAMES = {status.name: status.value for status in http.HTTPStatus}
VALIDATION_EXAMPLE = {
    "type": "urn:flashcart:problem:validation_error",
    "title": "Unprocessable Entity",
    "status": 422,
    "code": "validation_error",
    "detail": "The request did not validate; see `errors`.",
    "errors": {"quantity": ["Must be greater than or equal to 1 and less than or equal to 100."]},
}


def response_name(status):
    """The name of the shared response for `status`, e.g. 422 -> UNPROCESSABLE_ENTITY.

    Taken from werkzeug's status phrases (those of the problem titles), not from
    Python's `http.HTTPStatus`: Python 3.13 renamed several of its members (422 is
    UNPROCESSABLE_CONTENT there), and the document must not depend on the interpreter.
    """
    return re.sub(r"\W+", "_", HTTP_STATUS_CODES[status]).upper()


def example(status, code, detail):
    return {
        "type": f"urn:flashcart:problem:{code}",
        "title": HTTP_STATUS_CODES[status],
        "status": status,
        "code": code,
        "detail": detail,
    }


def problem_response(status, description, examples=None):
    """An OpenAPI response object: the problem shape as `application/problem+json`."""
    media = {"schema": ProblemSchema}
    if examples:
        media["examples"] = {
            code: {"summary": detail, "value": example(status, code, detail)}
            for code, detail in examples.items()
        }
        if status == 422:
            # Replaces the shared 422 of @arguments, so it keeps its example.
            media["examples"]["validation_error"] = {
                "summary": VALIDATION_EXAMPLE["detail"],
                "value": VALIDATION_EXAMPLE,
            }
    return {"description": description, "content": {PROBLEM_JSON: media}}


def problem(status, codes, headers=None):
    """Document that the endpoint may answer `status`; `codes` maps code -> detail."""
    response = problem_response(status, HTTP_STATUS_CODES[status], codes)
    if headers:
        response["headers"] = headers
    return Blueprint.doc(responses={status: response})


def problems(*errors):
    """Document the domain errors (DomainError classes) an endpoint may raise."""
    by_status = defaultdict(dict)
    for error in errors:
        by_status[error.status][error.code] = error.__doc__.strip()
    docs = {}
    for status, codes in by_status.items():
        docs[status] = problem_response(status, HTTP_STATUS_CODES[status], codes)
        retry_after = [e.retry_after for e in errors if e.status == status and e.retry_after]
        if retry_after:
            docs[status]["headers"] = {"Retry-After": RETRY_AFTER}
    return Blueprint.doc(responses=docs)


# What any request body may be refused for, before its fields are read.
BODY_ERRORS = {
    400: {
        "bad_request": "The body is not valid JSON (or nested too deeply, or a number is too long)."
    },
    413: {"payload_too_large": "The body is over 64 KiB."},
    415: {"unsupported_media_type": JSON_ONLY},
}


class BodyErrors(BasePlugin):
    """Document the body errors on every operation that takes a body, so none is missed."""

    def init_spec(self, spec):
        self.marshmallow = next(p for p in spec.plugins if isinstance(p, MarshmallowPlugin))

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in (operations or {}).values():
            if "requestBody" not in operation:
                continue
            responses = operation.setdefault("responses", {})
            for status, codes in BODY_ERRORS.items():
                response = problem_response(status, HTTP_STATUS_CODES[status], codes)
                self.marshmallow.resolver.resolve_response(response)
                documented = responses.get(str(status), responses.get(status))
                if isinstance(documented, dict) and PROBLEM_JSON in documented.get("content", {}):
                    media = documented["content"][PROBLEM_JSON]
                    media.setdefault("examples", {}).update(
                        response["content"][PROBLEM_JSON]["examples"]
                    )
                else:
                    responses[str(status)] = response


class ProblemCodes(BasePlugin):
    """Describe each documented error answer by the codes it may carry.

    Several decorators may document the same status (a route's domain errors, the
    Idempotency-Key errors, the token errors), so the list is made once they are merged.
    """

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in (operations or {}).values():
            for response in operation.get("responses", {}).values():
                examples = (
                    response.get("content", {}).get(PROBLEM_JSON, {}).get("examples")
                    if isinstance(response, dict)
                    else None
                )
                if examples:
                    response["description"] = ", ".join(f"`{code}`" for code in sorted(examples))


class SharedResponseNames(BasePlugin):
    """Refer to the shared responses by `response_name`.

    flask-smorest refers to them by `http.HTTPStatus(status).name` (the 422 of every
    @arguments, the 304 of ETags), which differs between Python versions.
    """

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in (operations or {}).values():
            responses = operation.get("responses", {})
            for code, response in responses.items():
                if isinstance(response, str) and response in PYTHON_STATUS_NAMES:
                    responses[code] = response_name(PYTHON_STATUS_NAMES[response])


# Marks an operation for ConditionalGets; the plugin removes it, so it never reaches the spec.
CONDITIONAL_GET = "x-flashcart-conditional-get"


def conditional_get(headers=None):
    """Document a GET whose 200 carries an ETag (and `headers`) and that answers 304
    without a body when `If-None-Match` names the current ETag."""
    doc = {CONDITIONAL_GET: True}
    if headers:
        doc["responses"] = {200: {"headers": headers}}
    return Blueprint.doc(**doc)


class ConditionalGets(BasePlugin):
    """Document the operations marked by `conditional_get` as flask-smorest documents
    its own ETags: the If-None-Match parameter, an ETag header on the 200 (first among
    its headers) and the 304, right after the generated responses and before the
    hand-written ones. The parameter and header are flask-smorest's shared components
    (IF_NONE_MATCH, ETAG), which its Api registers for every spec. (The places keep
    openapi.json as flask-smorest's `etag` flag wrote it.)
    """

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in (operations or {}).values():
            if not operation.pop(CONDITIONAL_GET, False):
                continue
            responses = operation["responses"]
            ok = responses.get(200, responses.get("200"))
            ok["headers"] = {"ETag": "ETAG", **ok.get("headers", {})}
            insert_after(responses, "default", 304, response_name(304))
            if "parameters" in operation:
                operation["parameters"].append("IF_NONE_MATCH")
            else:
                insert_after(operation, "responses", "parameters", ["IF_NONE_MATCH"])


def insert_after(mapping, after, key, value):
    """Set mapping[key] = value, placed right after `after` (at the end without it)."""
    items = list(mapping.items())
    at = next((i + 1 for i, (k, _) in enumerate(items) if k == after), len(items))
    items.insert(at, (key, value))
    mapping.clear()
    mapping.update(items)


class Api(_Api):
    """flask-smorest's Api, answering and documenting errors as problem details."""

    ERROR_SCHEMA = ProblemSchema

    def __init__(self, app=None, *, spec_kwargs=None, **kwargs):
        spec_kwargs = {
            "extra_plugins": [
                SharedResponseNames(),
                ConditionalGets(),
                BodyErrors(),
                ProblemCodes(),
            ],
            "info": {"description": DESCRIPTION},
            **(spec_kwargs or {}),
        }
        super().__init__(app, spec_kwargs=spec_kwargs, **kwargs)

    def handle_http_exception(self, error):
        return handle_http_exception(error)

    def init_app(self, app, *, spec_kwargs=None):
        super().init_app(app, spec_kwargs=spec_kwargs)
        self.register_problem_responses()

    def register_problem_responses(self):
        """Register the shared responses (the 422 of every @arguments, the `default`)
        in the problem shape, in place of flask-smorest's application/json ones."""
        for status, phrase in HTTP_STATUS_CODES.items():
            if status < 400:
                response = {"description": phrase}
            elif status == 422:
                response = problem_response(
                    422, "`validation_error`: `errors` maps each field to its messages."
                )
                response["content"][PROBLEM_JSON]["example"] = VALIDATION_EXAMPLE
            else:
                response = problem_response(status, phrase)
            self.spec.components.response(response_name(status), response, lazy=True)
        self.spec.components.response(
            self.DEFAULT_ERROR_RESPONSE_NAME, problem_response("default", OTHER_ERRORS), lazy=True
        )
