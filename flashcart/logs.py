"""Structured logs: one line per request, request ids, and the logging set-up.

Each request gets an id: the caller's `X-Request-ID` when it is usable (unsafe
characters dropped, at most 128 kept), else a new one; it is returned in the same
header and stamped on every log record written while the request runs. After the
response one `flashcart.access` record says what happened. Only the method, path,
status, timing, user id and request id are logged: never bodies, passwords, tokens
or the Authorization header. In either format a record is one line: control
characters a client sent (a `%0A` in a path, a header) are escaped, never written.
"""

import logging
import re
import secrets
import sys
import time

from flask import g, has_request_context, request
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonEncoder

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9._:=+/-]")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# What would end or rewrite a line: C0 and C1 controls, DEL, the Unicode separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
TRACE_INDENT = "    "
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
# A JSON line's names for these record attributes.
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
# The attributes a record has (or a formatter gives it); the others are `extra` fields.
_RECORD_ATTRIBUTES = frozenset(RESERVED_ATTRS)

access_log = logging.getLogger("flashcart.access")


class RequestIdFilter(logging.Filter):
    """Stamp records with the id of the request they were written in."""

    def filter(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def escape_controls(text):
    """`text` with each control character written as its escape (`\\n`, `\\x1b`)."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


class TextFormatter(logging.Formatter):
    """The `text` format, for people: the record on one line, escaped; a stack trace
    follows on lines of its own, each indented, so none can pass for a record."""

    def formatMessage(self, record):
        return escape_controls(super().formatMessage(record))

    def format(self, record):
        line, *trace = super().format(record).split("\n")
        return "\n".join([line, *(TRACE_INDENT + escape_controls(text) for text in trace)])


class JsonFormatter(logging.Formatter):
    """The `json` format: one JSON object per record, on one line. Time, level, logger
    and message, then an exception's or a stack's text, then the record's `extra`
    fields: byte for byte what python-json-logger's JsonFormatter wrote, as flashcart
    configured it (tests/unit/test_logs.py), for less, as every request pays it: the
    fields are gathered in one pass, the encoder is built once, the time formatted
    once a second."""

    def __init__(self):
        super().__init__(datefmt=TIME_FORMAT)
        # Non-ASCII escaped too: U+2028 and NEL end a line for many log readers. The
        # library's encoder writes any other value (bytes, dates...) as it did.
        self._encoder = JsonEncoder(ensure_ascii=True)
        self._last_time = (None, "")  # (a second, its formatted time)

    def format(self, record):
        message_fields = self._message_fields(record)
        record.asctime = self._time(record)
        fields = {
            "time": record.asctime,
            "level": record.levelname,
            "logger": record.name,
            "message": record.message,
        }
        for key, value in message_fields.items():
            fields[RENAMED.get(key, key)] = value
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not (isinstance(key, str) and key[:1] == "_"):
                fields[key] = value
        return self._encoder.encode(fields)

    def _time(self, record):
        """formatTime's text, which shows whole seconds: worked out once a second."""
        second = int(record.created)
        last_second, text = self._last_time
        if second != last_second:
            text = self.formatTime(record, self.datefmt)
            self._last_time = (second, text)
        return text

    def _message_fields(self, record):
        """Sets `record.message`; returns the fields written after it: a dict message's
        own, and the text of an exception or a stack."""
        if isinstance(record.msg, dict):
            fields = dict(record.msg)
            record.message = ""
        else:
            fields = {}
            record.message = record.getMessage()
        if record.exc_info and not fields.get("exc_info"):
            fields["exc_info"] = self.formatException(record.exc_info)
        if not fields.get("exc_info") and record.exc_text:
            fields["exc_info"] = record.exc_text
        if record.stack_info and not fields.get("stack_info"):
            fields["stack_info"] = self.formatStack(record.stack_info)
        return fields


def json_formatter():
    return JsonFormatter()


def formatter(fmt):
    """The formatter of LOG_FORMAT `json` or `text`."""
    return json_formatter() if fmt == "json" else TextFormatter(TEXT_FORMAT)


class StderrHandler(logging.StreamHandler):
    """The handler `configure` installs, so that calling it again replaces it."""

    def __init__(self):
        super().__init__(sys.stderr)


def configure(level="INFO", fmt="json"):
    """Send every log record to stderr, one line each. Safe to call again."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StderrHandler):
            root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(level)


def init_app(app):
    # Under pytest the test runner owns logging; records still reach caplog.
    if not app.testing:
        configure(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    app.before_request(_begin)
    app.after_request(_finish)


def request_id_from(raw):
    """The usable part of a caller's request id, or a new id."""
    cleaned = _UNSAFE.sub("", raw or "")[:MAX_REQUEST_ID]
    # As random as uuid4().hex, without building a UUID: an eighth of its cost.
    return cleaned or secrets.token_hex(16)


def _begin():
    g.request_started = time.perf_counter()
    g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))


def _user_id():
    """The caller's user id: `g.user_id`, which auth_required sets once it has verified
    the token (flashcart/auth/roles.py, USER_ID_ATTRIBUTE); a leaf cannot ask auth."""
    return g.get("user_id")


def _finish(response):
    # Each read of `g` or `request` goes through a context-local proxy: once apiece.
    request_id = g.get("request_id")
    if request_id is None:  # a before_request hook ahead of ours answered
        _begin()
        request_id = g.request_id
    response.headers[REQUEST_ID_HEADER] = request_id
    if not access_log.isEnabledFor(logging.INFO):
        return response
    duration_ms = round((time.perf_counter() - g.request_started) * 1000, 2)
    method, path, rule = request.method, request.path, request.url_rule
    status = response.status_code
    fields = {
        "method": method,
        "path": path,
        "endpoint": rule.rule if rule else None,
        "status": status,
        "duration_ms": duration_ms,
        "user_id": _user_id(),
        "request_id": request_id,
        "remote_addr": request.remote_addr,
    }
    # What `access_log.info` does, less its walk up the stack for the caller, which is
    # always this function: made and handled through the logger, so its level, filters
    # and handlers apply as configured.
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        __file__,
        _FINISH_LINE,
        ACCESS_MESSAGE,
        (method, path, status, duration_ms),
        None,
        func="_finish",
        extra=fields,
    )
    access_log.handle(record)
    return response


ACCESS_MESSAGE = "%s %s %s %.2fms"
# The access record's origin (the stack walk gave the line of the call within it).
_FINISH_LINE = _finish.__code__.co_firstlineno
