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
    status = fields.String(metadata={"enum": ["live", "ended", "closed"]})


class RestockIn(Schema):
    quantity = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1, max=1_000_000)
    )


class RestockOut(Schema):
    product_id = fields.String()
    stock = fields.Integer(metadata={"description": "The drop's new total."})
    available = fields.Integer()


class AuditOut(Schema):
    product_id = fields.String()
    name = fields.String()
    sale_status = fields.String()
    in_redis = fields.Boolean()
    total = fields.Integer(metadata={"description": "Units in the drop (MongoDB)."})
    sold = fields.Integer(metadata={"description": "Units sold, by MongoDB's orders."})
    redis_sold = fields.Integer()
    held = fields.Integer(metadata={"description": "Units in live holds (Redis)."})
    holds_sold = fields.Integer(
        metadata={
            "description": "Units in holds whose orders MongoDB already placed (a claim "
            "Redis lost); repair drops them."
        }
    )
    available = fields.Integer(metadata={"description": "Available units in Redis."})
    redis_total = fields.Integer(
        allow_none=True,
        metadata={
            "description": "The stock level Redis's units count (null when Redis has no "
            "sale); below `total` while a restock is on its way to Redis."
        },
    )
    expected_available = fields.Integer(
        metadata={
            "description": "total - sold - held; 0 for a sale that should not be in Redis "
            "(draft or closed)"
        }
    )
    drift = fields.Integer(metadata={"description": "available - expected_available"})
    oversold = fields.Integer()
    users_over_limit = fields.Integer()
    limit_counts_off = fields.Integer()
    ok = fields.Boolean()
