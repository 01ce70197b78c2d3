from marshmallow import Schema, fields, validate

from flashcart.schemas import MONEY_OUT, PageQuery, page_schema

RESERVATION_ID = r"^[0-9a-f]{24}\.[A-Za-z0-9_-]{16}\Z"
STATUSES = ["pending", "placed", "cancelling", "cancelled", "failed"]


class OrderIn(Schema):
    reservation_id = fields.String(
        required=True,
        validate=validate.Regexp(RESERVATION_ID, error="Not a reservation id."),
        metadata={"description": "The `id` returned by POST /api/v1/sales/reserve/{id}."},
    )


class OrderOut(Schema):
    id = fields.String()
    reservation_id = fields.String()
    user_id = fields.String()
    product_id = fields.String()
    product_name = fields.String()
    quantity = fields.Integer()
    unit_price = fields.Decimal(as_string=True, metadata=MONEY_OUT)
    total = fields.Decimal(as_string=True, metadata=MONEY_OUT)
    status = fields.String(metadata={"enum": STATUSES})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


OrderPage = page_schema(OrderOut, "OrderPage")


class OrderListQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(STATUSES))
