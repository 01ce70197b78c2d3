from marshmallow import Schema, fields, validate

from flashcart.events.feed import TYPES

MAX_LIMIT = 500


class Cursor(fields.String):
    """A feed cursor: the `cursor` of the last event a consumer has, "0" for the start."""

    default_error_messages = {
        "cursor": 'Not a cursor: the "cursor" or "next" of an earlier answer, or "0".'
    }

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        # Decimal digits only, within what MongoDB stores as an integer (int64).
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise self.make_error("cursor")
        return int(text)


class EventQuery(Schema):
    after = Cursor(
        load_default=0,
        metadata={
            "description": "Events after this cursor: the `next` of the previous answer "
            '("0", the default, is the start of the feed).',
            "pattern": r"^[0-9]{1,18}$",
            "example": "0",
        },
    )
    limit = fields.Integer(
        load_default=100,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Events per answer, at most {MAX_LIMIT}."},
    )
    type = fields.List(
        fields.String(validate=validate.OneOf(TYPES)),
        metadata={"description": "Only events of these types (repeat the parameter)."},
    )


class ResourceOut(Schema):
    type = fields.String(metadata={"enum": ["order", "sale"]})
    id = fields.String(metadata={"description": "The order's id, or the product's for a sale."})


class EventOut(Schema):
    id = fields.String(metadata={"description": "Stable: deduplicate on it.", "example": "evt_"})
    type = fields.String(metadata={"enum": list(TYPES)})
    created_at = fields.DateTime(metadata={"description": "When the change happened (UTC)."})
    resource = fields.Nested(ResourceOut)
    data = fields.Dict(
        metadata={"description": "The resource as the API showed it after the change."}
    )
    cursor = fields.String(metadata={"description": "This event's place in the feed."})


class EventPage(Schema):
    items = fields.List(fields.Nested(EventOut), metadata={"description": "Oldest first."})
    next = fields.String(
        metadata={"description": "The `after` for the next request (the same when none is new)."}
    )
