from flask_smorest import Blueprint
from marshmallow import RAISE

from flashcart.apidoc import problems
from flashcart.auth.roles import auth_required
from flashcart.webhooks import service
from flashcart.webhooks.schemas import (
    DeliveryListQuery,
    DeliveryPage,
    EndpointIn,
    EndpointList,
    EndpointOut,
    EndpointWithSecretOut,
    ReplayIn,
    ReplayOut,
)

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/api/v1/webhooks",
    description="Webhook endpoints that receive order and sale events (admin).",
)


@blp.route("", methods=["POST"])
@auth_required("admin")
@blp.arguments(EndpointIn())
@blp.response(201, EndpointWithSecretOut)
@problems(service.DestinationRefused)
def create_endpoint(data):
    """Register an endpoint; the answer holds its signing secret, this once (admin)."""
    return service.create_endpoint(**data)


@blp.route("", methods=["GET"])
@auth_required("admin")
@blp.response(200, EndpointList)
def list_endpoints():
    """Every registered endpoint, without secrets (admin)."""
    return {"items": service.list_endpoints()}


@blp.route("/<endpoint_id>", methods=["GET"])
@auth_required("admin")
@blp.response(200, EndpointOut)
@problems(service.EndpointNotFound)
def get_endpoint(endpoint_id):
    """One endpoint, without its secret (admin)."""
    return service.get_endpoint(endpoint_id)


@blp.route("/<endpoint_id>", methods=["DELETE"])
@auth_required("admin")
@blp.response(204)
@problems(service.EndpointNotFound)
def delete_endpoint(endpoint_id):
    """Stop sending to an endpoint and forget its secret (admin)."""
    service.delete_endpoint(endpoint_id)


@blp.route("/<endpoint_id>/rotate-secret", methods=["POST"])
@auth_required("admin")
@blp.response(200, EndpointWithSecretOut)
@problems(service.EndpointNotFound)
def rotate_secret(endpoint_id):
    """A new signing secret, returned this once; the old one signs too for a grace
    period (admin)."""
    return service.rotate_secret(endpoint_id)


@blp.route("/<endpoint_id>/deliveries", methods=["GET"])
@auth_required("admin")
@blp.arguments(DeliveryListQuery(), location="query", unknown=RAISE)
@blp.response(200, DeliveryPage)
@problems(service.EndpointNotFound)
def list_deliveries(query, endpoint_id):
    """The endpoint's delivery log, newest event first, with each one's attempts (admin)."""
    return service.list_deliveries(endpoint_id, **query)


@blp.route("/<endpoint_id>/replay", methods=["POST"])
@auth_required("admin")
@blp.arguments(ReplayIn(), required=False)
@blp.response(202, ReplayOut)
@problems(service.EndpointNotFound, service.DeliveryNotFound)
def replay(data, endpoint_id):
    """Send again the endpoint's failed deliveries, or one event's (admin)."""
    return service.replay(endpoint_id, event_id=data.get("event_id"))
