"""Schemas shared by every blueprint: the error shape and pagination."""

from marshmallow import Schema, fields, validate

MAX_PAGE_SIZE = 100


class ProblemSchema(Schema):
    """RFC 9457 problem details, the shape of every error response."""

    type = fields.String(metadata={"example": "urn:flashcart:problem:sold_out"})
    title = fields.String(metadata={"example": "Conflict"})
    status = fields.Integer(metadata={"example": 409})
    code = fields.String(metadata={"description": "Stable machine-readable error code."})
    detail = fields.String()
    errors = fields.Dict(metadata={"description": "Validation errors by field (422 only)."})


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
