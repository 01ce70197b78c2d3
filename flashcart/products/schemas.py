from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from flashcart.schemas import (
    MONEY_OUT,
    MULTI_LINE,
    Instant,
    Name,
    PageQuery,
    Price,
    Text,
    page_schema,
)

MAX_STOCK = 1_000_000


class ProductIn(Schema):
    name = Name(required=True, max_length=200)
    description = Text(
        load_default="",
        validate=[
            validate.Length(max=5000),
            validate.Regexp(MULTI_LINE, error="No control characters but tabs and line breaks."),
        ],
    )
    price = Price(required=True, metadata={"description": 'Unit price, e.g. "19.99".'})
    stock = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=1, max=MAX_STOCK),
        metadata={"description": "Units for the drop."},
    )
    per_user_limit = fields.Integer(
        load_default=1,
        strict=True,
        validate=validate.Range(min=1, max=1000),
        metadata={"description": "Most units one customer may hold or buy."},
    )
    starts_at = Instant(
        load_default=None, metadata={"description": "Optional: reservations open at (ISO 8601)."}
    )
    ends_at = Instant(
        load_default=None, metadata={"description": "Optional: reservations close at (ISO 8601)."}
    )

    @validates_schema
    def window_in_order(self, data, **kwargs):
        if data.get("starts_at") and data.get("ends_at") and data["ends_at"] <= data["starts_at"]:
            raise ValidationError("Must be after starts_at.", "ends_at")


class ProductOut(Schema):
    id = fields.String()
    name = fields.String()
    description = fields.String()
    price = fields.Decimal(as_string=True, metadata=MONEY_OUT)
    stock = fields.Integer(metadata={"description": "Units for the drop."})
    per_user_limit = fields.Integer()
    sale_status = fields.String(metadata={"enum": ["draft", "live", "ended", "closed"]})
    starts_at = fields.DateTime(allow_none=True)
    ends_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


ProductPage = page_schema(ProductOut, "ProductPage")


class ProductListQuery(PageQuery):
    pass


class TrendingOut(Schema):
    product = fields.Nested(ProductOut)
    views = fields.Integer()
