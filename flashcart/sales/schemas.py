from marshmallow import Schema, fields, validate

MAX_QUANTITY = 100


class ReserveIn(Schema):
    quantity = fields.Integer(
        load_default=1,
        strict=True,
        validate=validate.Range(min=1, max=MAX_QUANTITY),
        metadata={"description": "Units to hold (default 1)."},
    )


class ReservationOut(Schema):
    id = fields.String(metadata={"description": "Pass this to POST /api/v1/orders."})
    product_id = fields.String()
    quantity = fields.Integer()
    expires_at = fields.DateTime(metadata={"description": "Checkout deadline (UTC)."})
    expires_in = fields.Integer(metadata={"description": "Seconds left to check out."})


class StockOut(Schema):
    product_id = fields.String()
    status = fields.String(metadata={"enum": ["live", "ended"]})
    available = fields.Integer()


class SaleOut(StockOut):
    pass
