from decimal import Decimal

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from flashcart.schemas import PageQuery, page_schema

MAX_PRICE = Decimal("1000000")
MAX_STOCK = 1_000_000


def _whole_cents(value):
    if value != value.quantize(Decimal("0.01")):
        raise ValidationError("Use at most two decimal places.")


class ProductIn(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=5000))
    price = fields.Decimal(
        required=True,
        validate=[validate.Range(min=Decimal("0.01"), max=MAX_PRICE), _whole_cents],
        metadata={"description": "Unit price, e.g. 19.99 (at most two decimals)."},
    )
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
    starts_at = fields.AwareDateTime(
        load_default=None, metadata={"description": "Optional: reservations open at (ISO 8601)."}
    )
    ends_at = fields.AwareDateTime(
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
    price = fields.Decimal(as_string=True, metadata={"example": "19.99"})
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
