"""Every request's time bound: REQUEST_TIMEOUT_SECONDS from its start.

A sync worker past gunicorn's timeout is killed; a thread of a gthread worker is
not, so the app bounds its own requests: the sale engine checks the deadline before
each EXEC. No reservation is made past it but by the EXEC already on its way, which
an Idempotency-Key's lock allows for (flashcart/idempotency.py). MongoDB operations
keep their own bounds (MONGO_TIMEOUT_MS; pymongo's client-side timeout would
replace the short server selection with the whole request's time), and checkout
needs no more: it places one order per reservation however often it runs.
"""

import contextlib
import contextvars
import time

from flashcart.errors import ServiceUnavailable

_deadline = contextvars.ContextVar("flashcart_deadline", default=None)


class DeadlinePassed(ServiceUnavailable):
    """The request ran out of time and stopped before its next change; retry shortly."""

    code = "deadline_passed"
    retry_after = 1


@contextlib.contextmanager
def within(seconds):
    """Bound what runs inside to `seconds` (or to an enclosing bound, if sooner)."""
    deadline = time.monotonic() + seconds
    enclosing = _deadline.get()
    token = _deadline.set(deadline if enclosing is None else min(deadline, enclosing))
    try:
        yield
    finally:
        _deadline.reset(token)


def check():
    """Raise DeadlinePassed if the current bound has passed (no bound: never)."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlinePassed()


class BoundedRequests:
    """WSGI middleware: each request runs `within(seconds)`."""

    def __init__(self, wsgi_app, seconds):
        self.wsgi_app = wsgi_app
        self.seconds = seconds

    def __call__(self, environ, start_response):
        with within(self.seconds):
            return self.wsgi_app(environ, start_response)


def init_app(app):
    app.wsgi_app = BoundedRequests(app.wsgi_app, app.config["REQUEST_TIMEOUT_SECONDS"])
