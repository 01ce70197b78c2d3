"""`Idempotency-Key` support for unsafe POSTs (reserve, checkout), like Stripe's.

The first request with a key runs and its answer is stored (per user, for
IDEMPOTENCY_TTL_SECONDS). A retry with the same key and body gets that answer again
(with `Idempotent-Replayed: true`); the same key with another body is a 422; a
duplicate arriving while the first still runs gets a 409; if the first request died
with its process, the key is free again once the request timeout has passed (no
reservation is made past it, flashcart/deadlines.py). Server
errors (5xx) are not stored, so the client may retry them with the same key.
"""

import contextlib
import hashlib
import json
import re
from functools import wraps

from flask import Response, current_app, request
from flask_smorest import Blueprint
from werkzeug.exceptions import HTTPException

from flashcart.apidoc import problems
from flashcart.auth.roles import current_user_id
from flashcart.errors import Conflict, DomainError, handle_domain_error, handle_http_exception
from flashcart.extensions import stores

HEADER = "Idempotency-Key"
# A running key stays locked REQUEST_TIMEOUT_SECONDS, plus the time a Redis command
# sent just before the request's deadline may take (REDIS_TIMEOUT_SECONDS: nothing
# else is sent past it, flashcart/deadlines.py), plus this, for clocks and for
# gunicorn, which kills a sync worker (WEB_THREADS=1) past its timeout within about a
# second.
LOCK_MARGIN_SECONDS = 1
MAX_KEY_LENGTH = 255
# Printable ASCII, as the spec publishes it (the fuzz test holds them to it).
KEY_PATTERN = rf"^[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}$"


class KeyInvalid(DomainError):
    """The Idempotency-Key header must be 1 to 255 printable ASCII characters."""

    code = "idempotency_key_invalid"


class KeyReused(DomainError):
    """This Idempotency-Key was used with a different request."""

    status = 422
    code = "idempotency_key_reused"


class KeyInProgress(Conflict):
    """A request with this Idempotency-Key is still being processed; retry shortly."""

    code = "idempotency_key_in_progress"
    retry_after = 1


def lock_milliseconds(config):
    """How long a running key stays locked (see LOCK_MARGIN_SECONDS)."""
    seconds = (
        config["REQUEST_TIMEOUT_SECONDS"] + config["REDIS_TIMEOUT_SECONDS"] + LOCK_MARGIN_SECONDS
    )
    return int(seconds * 1000)


def _fingerprint():
    body = request.get_data()
    with contextlib.suppress(ValueError):
        body = json.dumps(json.loads(body), sort_keys=True).encode()
    return hashlib.sha256(
        request.method.encode() + request.path.encode() + b"\0" + body
    ).hexdigest()


def _record_key(user_id, key):
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"fc:idem:{{u:{user_id}}}:{digest}"


def _replay(record):
    response = Response(record["body"], status=record["status"], mimetype=record["mimetype"])
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _answer(view, args, kwargs):
    """Run the view and render client errors as responses, so they can be stored."""
    try:
        return current_app.make_response(view(*args, **kwargs))
    except DomainError as error:
        if error.status >= 500:
            raise
        return handle_domain_error(error)
    except HTTPException as error:
        if (error.code or 500) >= 500:
            raise
        return handle_http_exception(error)


def idempotent(view):
    """Make a view honour the Idempotency-Key header. Apply after authentication."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not re.fullmatch(KEY_PATTERN, key):
            raise KeyInvalid()
        redis = stores.redis
        record_key = _record_key(current_user_id(), key)
        fingerprint = _fingerprint()
        claim = json.dumps({"state": "running", "fingerprint": fingerprint})
        # Locked no longer than a request may run: a retry takes over from one that died.
        if not redis.set(record_key, claim, nx=True, px=lock_milliseconds(current_app.config)):
            record = json.loads(redis.get(record_key) or "null")
            if record is None:
                raise KeyInProgress()
            if record["fingerprint"] != fingerprint:
                raise KeyReused()
            if record["state"] == "running":
                raise KeyInProgress()
            return _replay(record)
        try:
            response = _answer(view, args, kwargs)
        except BaseException:
            redis.delete(record_key)
            raise
        if response.status_code >= 500:
            redis.delete(record_key)
            return response
        record = {
            "state": "done",
            "fingerprint": fingerprint,
            "status": response.status_code,
            "mimetype": response.mimetype,
            "body": response.get_data(as_text=True),
        }
        redis.set(record_key, json.dumps(record), ex=current_app.config["IDEMPOTENCY_TTL_SECONDS"])
        return response

    wrapper = problems(KeyInvalid, KeyReused, KeyInProgress)(wrapper)
    return Blueprint.doc(
        parameters=[
            {
                "in": "header",
                "name": HEADER,
                "required": False,
                "schema": {"type": "string", "pattern": KEY_PATTERN},
                "description": "Makes retries safe: the same key and body replay the first "
                "answer (per user, for 24 h by default).",
            }
        ]
    )(wrapper)
