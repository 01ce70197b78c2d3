"""The API's answers are encoded by orjson (flashcart/json_provider.py) and read as
Flask's own encoder would have written them."""

import dataclasses
import datetime
import decimal
import json
import uuid

import pytest
from flask import Flask

from flashcart.json_provider import FlashCartFlask, OrjsonProvider


@dataclasses.dataclass
class Hold:
    id: str
    quantity: int


VALUES = {
    "nested, keys out of order": {"b": [1, 2.5, None, True], "a": {"z": "é ☃", "y": {}}},
    "a datetime": {"at": datetime.datetime(2026, 11, 30, 16, 0, tzinfo=datetime.UTC)},
    "a date": {"on": datetime.date(2026, 11, 30)},
    "a decimal": {"price": decimal.Decimal("99.00")},
    "a uuid": {"id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
    "a dataclass": Hold("h1", 2),
    "integer keys": {1: "one", 2: "two"},
    "an integer past 64 bits": {"n": 2**70},
    "control characters": {"path": "/a\nb\u2028c\x1b"},
}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_an_answer_reads_as_flasks_own_encoder_wrote_it(value):
    ours, flasks = FlashCartFlask(__name__), Flask(__name__)
    with ours.app_context():
        body = ours.json.response(value).get_data()
    with flasks.app_context():
        expected = flasks.json.response(value).get_data()

    assert json.loads(body) == json.loads(expected)
    assert list(json.loads(body)) == list(json.loads(expected))  # keys in the same order


def test_the_app_is_served_by_the_orjson_provider(app):
    assert isinstance(app.json, OrjsonProvider)


def test_what_no_encoder_can_write_is_still_a_type_error():
    with FlashCartFlask(__name__).app_context() as context, pytest.raises(TypeError):
        context.app.json.dumps({"x": object()})


def test_pretty_printing_and_a_callers_own_options_go_to_the_standard_library():
    app = FlashCartFlask(__name__)

    assert app.json.dumps({"b": 1, "a": 2}, indent=2) == '{\n  "a": 2,\n  "b": 1\n}'
    assert app.json.dumps({"a": "é"}) == '{"a":"é"}'
    assert app.json.dumps({"a": "é"}, ensure_ascii=True) == '{"a": "\\u00e9"}'
