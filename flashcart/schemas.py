"""Schemas shared by every blueprint: the error shape, text, moments, prices, pagination."""

import math
import re
from datetime import UTC
from decimal import Decimal

from marshmallow import Schema, fields, validate

MAX_PAGE_SIZE = 100
MIN_PRICE, MAX_PRICE = Decimal("0.01"), Decimal("1000000")
# 0.01 to 1000000 with at most two decimals, no sign, exponent or leading zero. The
# spec publishes this pattern, so it must accept exactly what Price accepts.
PRICE_PATTERN = r"^([1-9][0-9]{0,5}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?)|1000000(\.00?)?)$"
# How prices are sent back: always a string with two decimals, never a float.
MONEY_OUT = {"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$", "example": "19.99"}


# No control characters (C0, DEL, C1) and not whitespace alone: names are one line.
ONE_LINE = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*\Z"
# Free text may break lines and hold tabs, but no other control character.
MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*\Z"


class Text(fields.String):
    """A string MongoDB and Redis can store: one UTF-8 can encode.

    JSON may spell a lone surrogate ("\\ud800"), which no store can encode.
    """

    default_error_messages = {"unicode": "Not valid Unicode text (a lone surrogate)."}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            text.encode()
        except UnicodeEncodeError:
            raise self.make_error("unicode") from None
        return text


class Name(Text):
    """A one-line name of 1 to `max_length` characters, not whitespace alone."""

    def __init__(self, *, max_length, **kwargs):
        rules = [
            validate.Length(min=1, max=max_length),
            validate.Regexp(ONE_LINE, error="Must be one line of text, not only spaces."),
        ]
        super().__init__(validate=rules, **kwargs)


class Instant(fields.AwareDateTime):
    """An ISO 8601 moment with its offset, kept in UTC to the millisecond (what a
    BSON date holds); one whose UTC instant falls outside the years 1-9999 is refused."""

    default_error_messages = {
        "out_of_range": "Out of range: in UTC the moment must fall in the years 1 to 9999."
    }

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            raise self.make_error("out_of_range") from None
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class Price(fields.Field):
    """A price in: "19.99" (preferred) or 19.99, from 0.01 to 1000000, two decimals at most."""

    default_error_messages = {
        "invalid": 'Not a valid price: e.g. "19.99", from 0.01 to 1000000, two decimals at most.'
    }

    def __init__(self, **kwargs):
        metadata = {
            "anyOf": [
                {"type": "string", "pattern": PRICE_PATTERN},
                {"type": "number", "minimum": 0.01, "maximum": 1000000, "multipleOf": 0.01},
            ],
            "example": "19.99",
            **kwargs.pop("metadata", {}),
        }
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and re.fullmatch(PRICE_PATTERN, value):
            return Decimal(value).quantize(MIN_PRICE)
        if isinstance(value, int) and not isinstance(value, bool):
            # Exact however long; compared before any float arithmetic could overflow.
            if MIN_PRICE <= value <= MAX_PRICE:
                return Decimal(value).quantize(MIN_PRICE)
        elif isinstance(value, float):
            # A JSON 19.99 arrives as the nearest float: round to cents, refuse 19.999.
            cents = value * 100
            if math.isfinite(cents) and abs(cents - round(cents)) < 1e-6:
                price = Decimal(round(cents)) / 100
                if MIN_PRICE <= price <= MAX_PRICE:
                    return price.quantize(MIN_PRICE)
        raise self.make_error("invalid")


class ProblemSchema(Schema):
    """RFC 9457 problem details, the shape of every error response."""

    type = fields.String(required=True, metadata={"example": "urn:flashcart:problem:sold_out"})
    title = fields.String(required=True, metadata={"example": "Conflict"})
    status = fields.Integer(required=True, metadata={"example": 409})
    code = fields.String(
        required=True,
        metadata={"description": "Stable machine-readable error code.", "example": "sold_out"},
    )
    detail = fields.String(required=True, metadata={"description": "Human-readable explanation."})
    errors = fields.Dict(
        metadata={"description": "Validation errors: field -> messages (422 only)."}
    )


class PageQuery(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10_000))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))


def page_schema(item_schema, name):
    """A `{items, page, per_page, total}` envelope schema around `item_schema`."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item_schema)),
            "page": fields.Integer(),
            "per_page": fields.Integer(),
            "total": fields.Integer(),
        },
        name=name,
    )
