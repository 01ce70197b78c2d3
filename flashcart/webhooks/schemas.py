from marshmallow import Schema, fields, validate

from flashcart.schemas import PageQuery, Text, page_schema
from flashcart.webhooks.records import DELIVERED, FAILED, PENDING
from flashcart.webhooks.service import EVENT_TYPES

# RFC 3986's authority characters, then a path, query or fragment of printable ASCII
# (an international name is written in punycode). Explicit ranges, not \s: the
# OpenAPI document's clients read the pattern as ECMAScript does.
URL_PATTERN = r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:@\[\]-]+(?:[/?#][!-~]*)?\Z"
EVENT_ID = r"^evt_[A-Za-z0-9_-]{1,64}\Z"
STATUSES = [PENDING, DELIVERED, FAILED]


class EndpointIn(Schema):
    url = Text(
        required=True,
        validate=[
            validate.Length(min=1, max=2048),
            validate.Regexp(URL_PATTERN, error="Must be an http(s) URL."),
        ],
        metadata={
            "description": "Where to POST the events: https (http only where the "
            "deployment allows it); never a loopback, private or metadata address.",
            "example": "https://receiver.example.com/flashcart",
        },
    )
    types = fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)),
        required=True,
        validate=validate.Length(min=1, max=len(EVENT_TYPES)),
        metadata={"description": "The event types to send."},
    )
    description = Text(load_default="", validate=validate.Length(max=200))


class EndpointOut(Schema):
    id = fields.String()
    url = fields.String()
    types = fields.List(fields.String(metadata={"enum": list(EVENT_TYPES)}))
    description = fields.String()
    active = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class EndpointWithSecretOut(EndpointOut):
    secret = fields.String(
        metadata={
            "description": "The signing secret: shown on creation and rotation only. "
            "Keep it; verify each delivery's FlashCart-Signature with it."
        }
    )


class EndpointList(Schema):
    items = fields.List(fields.Nested(EndpointOut))


class AttemptOut(Schema):
    at = fields.DateTime()
    status_code = fields.Integer(allow_none=True, metadata={"description": "None: no answer."})
    error = fields.String(allow_none=True)
    duration_ms = fields.Integer()
    response = fields.String(metadata={"description": "The answer's first characters."})


class DeliveryOut(Schema):
    id = fields.String()
    event_id = fields.String()
    event_type = fields.String()
    resource = fields.String(metadata={"example": "order:65f0c3a1e4b0a1b2c3d4e5f6"})
    status = fields.String(metadata={"enum": STATUSES})
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    delivered_at = fields.DateTime(allow_none=True)
    log = fields.List(fields.Nested(AttemptOut), metadata={"description": "Newest first."})


DeliveryPage = page_schema(DeliveryOut, "DeliveryPage")


class DeliveryListQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(STATUSES))


class ReplayIn(Schema):
    event_id = fields.String(
        validate=validate.Regexp(EVENT_ID, error="Not an event id."),
        metadata={
            "description": "Replay this event only (whatever its state); "
            "without it, every failed delivery."
        },
    )


class ReplayOut(Schema):
    replayed = fields.Integer(metadata={"description": "Deliveries queued again."})
