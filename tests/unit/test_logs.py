"""The JSON log format, record by record.

flashcart's records were first written by python-json-logger's JsonFormatter, set up as
`library_formatter` below. What they are written as is what log readers parse, so it
holds byte for byte: the same keys in the same order, the same values, one line each,
everything outside printable ASCII escaped.
"""

import dataclasses
import datetime
import enum
import json
import logging
import re

import pytest
from pythonjsonlogger.json import JsonFormatter

from flashcart import logs
from tests.support.access_log import ACCESS_LINE_FIELDS

# What would end or rewrite a line for some reader, and text that is not ASCII.
AWKWARD = "\u2028\u2029\x85\r\n\x0b\x0c\x1c\x1b[2K\x00\x7f\t é€😀"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}")


def library_formatter():
    """python-json-logger's formatter, as flashcart configured it."""
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
        json_ensure_ascii=True,
    )


class Kept(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def logged():
    """A logger of its own, and the records it made, as a handler receives them."""
    logger = logging.Logger("tests.logs", logging.DEBUG)
    kept = Kept()
    logger.addHandler(kept)
    return logger, kept.records


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def log_every_kind_of_record(logger):
    logger.info(
        "%s %s %s %.2fms",
        "GET",
        f"/api/v1/products/{AWKWARD}",
        200,
        1.5,
        extra={
            "method": "GET",
            "path": f"/api/v1/products/{AWKWARD}",
            "endpoint": "/api/v1/products/<product_id>",
            "status": 200,
            "duration_ms": 1.5,
            "user_id": None,
            "request_id": "0123abcd",
            "remote_addr": f"198.51.100.7{AWKWARD}",
        },
    )
    try:
        raise RuntimeError(f"boom{AWKWARD}")
    except RuntimeError:
        logger.exception("failed on %r", AWKWARD, extra={"request_id": "trace-1"})
        logger.error("handled", exc_info=True, stack_info=True, extra={"attempt": 2})
    logger.warning("a stack", stack_info=True)
    logger.debug("plain %d%%", 100)
    logger.info(AWKWARD)
    logger.info(ValueError("not a string"))
    logger.info(
        "odd values",
        extra={
            "when": datetime.datetime(2026, 11, 30, 12, 0, 1, 5, tzinfo=datetime.UTC),
            "day": datetime.date(2026, 11, 30),
            "raw": b"\xff\x00",
            "error": KeyError("k"),
            "kind": ValueError,
            "colour": Colour.RED,
            "point": Point(1, 2),
            "tags": {"b", "a"} - {"b"},
            "nested": {"list": [1, 2.5, None, True], AWKWARD: AWKWARD},
            "big": 2**70,
            "nan": float("nan"),
            "_private": "not written",
            1: "a key that is not a string",
        },
    )
    logger.info({"event": "a dict message", "asctime": "renamed", "path": "first"})
    logger.info({"exc_info": "given"}, exc_info=(ValueError, ValueError("x"), None))


def test_every_kind_of_record_is_written_as_python_json_logger_wrote_it(logged):
    logger, records = logged
    log_every_kind_of_record(logger)
    ours, library = logs.json_formatter(), library_formatter()
    assert len(records) == 10
    for record in records:
        assert ours.format(record) == library.format(record)


def test_a_record_already_formatted_elsewhere_is_written_the_same(logged):
    """Another handler's formatter may have cached the exception's text on the record."""
    logger, records = logged
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    (record,) = records
    logging.Formatter().format(record)
    assert record.exc_text
    assert logs.json_formatter().format(record) == library_formatter().format(record)


def test_the_time_is_right_for_records_out_of_order_and_across_seconds(logged):
    logger, records = logged
    for _ in range(6):
        logger.info("tick")
    ours, library = logs.json_formatter(), library_formatter()
    base = 1_790_000_000
    times = [base + 0.1, base + 0.9, base + 1.0, base - 3.5, base + 86_400, base + 0.2]
    for record, created in zip(records, times, strict=True):
        record.created = created
        written = json.loads(ours.format(record))["time"]
        assert TIME.fullmatch(written)
        assert written == json.loads(library.format(record))["time"]


def test_a_path_with_line_breaks_and_non_ascii_is_one_line_of_escapes(logged):
    logger, records = logged
    log_every_kind_of_record(logger)

    line = logs.json_formatter().format(records[0])

    assert len(line.splitlines()) == 1
    assert line.isascii() and line.isprintable()
    assert "\\u2028\\u2029\\u0085\\r\\n\\u000b\\f\\u001c\\u001b[2K\\u0000\\u007f\\t" in line
    assert "\\u00e9\\u20ac\\ud83d\\ude00" in line
    written = json.loads(line)
    assert list(written) == ACCESS_LINE_FIELDS
    assert written["path"] == f"/api/v1/products/{AWKWARD}"
    assert written["message"] == f"GET /api/v1/products/{AWKWARD} 200 1.50ms"
    assert written["status"] == 200 and written["duration_ms"] == 1.5
    assert written["user_id"] is None
    assert written["level"] == "INFO" and written["logger"] == "tests.logs"
    assert TIME.fullmatch(written["time"])


def test_an_exception_is_one_line_with_its_trace_as_a_field(logged):
    logger, records = logged
    log_every_kind_of_record(logger)

    line = logs.json_formatter().format(records[1])

    assert len(line.splitlines()) == 1 and line.isascii() and line.isprintable()
    written = json.loads(line)
    assert list(written) == ["time", "level", "logger", "message", "exc_info", "request_id"]
    assert written["level"] == "ERROR"
    assert written["exc_info"].startswith("Traceback (most recent call last):\n")
    assert written["exc_info"].endswith(f"RuntimeError: boom{AWKWARD}")
    assert written["request_id"] == "trace-1"


def test_another_loggers_extra_fields_are_written_after_the_message(logged):
    logger, records = logged
    log_every_kind_of_record(logger)

    written = json.loads(logs.json_formatter().format(records[7]))

    assert written["message"] == "odd values"
    assert written["when"] == "2026-11-30T12:00:01.000005+00:00"
    assert written["raw"] == "_wA="  # URL-safe base64
    assert written["error"] == "KeyError: 'k'"
    assert written["kind"] == "ValueError"
    assert written["colour"] == "red"
    assert written["point"] == {"x": 1, "y": 2}
    assert written["nested"] == {"list": [1, 2.5, None, True], AWKWARD: AWKWARD}
    assert written["1"] == "a key that is not a string"
    assert "_private" not in written


def test_logging_still_configures_the_json_format(capsys):
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        logs.configure("WARNING", "json")
        logging.getLogger("tests.logs.configured").info("below the level")
        logging.getLogger("tests.logs.configured").warning("kept", extra={"field": AWKWARD})
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
    (line,) = capsys.readouterr().err.splitlines()
    written = json.loads(line)
    assert written["message"] == "kept" and written["field"] == AWKWARD
    assert written["request_id"] == "-"
