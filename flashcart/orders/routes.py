from flask_smorest import Blueprint
from marshmallow import RAISE

from flashcart.apidoc import problems
from flashcart.auth.roles import auth_required, current_user_id, current_user_is_admin
from flashcart.checkout import saga
from flashcart.idempotency import idempotent
from flashcart.orders import service
from flashcart.orders.schemas import OrderIn, OrderListQuery, OrderOut, OrderPage
from flashcart.sales.engine.errors import ReservationExpired, ReservationNotFound

blp = Blueprint("orders", __name__, url_prefix="/api/v1/orders", description="Checkout and orders.")


@blp.route("", methods=["POST"])
@auth_required()
@idempotent
@blp.arguments(OrderIn())
@blp.response(201, OrderOut)
@blp.alt_response(200, schema=OrderOut, description="Retry: the order already placed.")
@problems(ReservationNotFound, ReservationExpired)
def place_order(data):
    """Check out a live reservation as an order (once per reservation)."""
    order, created = saga.place_order(user_id=current_user_id(), **data)
    return order, 201 if created else 200


@blp.route("", methods=["GET"])
@auth_required()
@blp.arguments(OrderListQuery(), location="query", unknown=RAISE)
@blp.response(200, OrderPage)
def list_orders(query):
    """The caller's orders, newest first (an admin sees all)."""
    return service.list_orders(user_id=current_user_id(), is_admin=current_user_is_admin(), **query)


@blp.route("/<order_id>", methods=["GET"])
@auth_required()
@blp.response(200, OrderOut)
@problems(service.OrderNotFound)
def get_order(order_id):
    """One of the caller's orders (an admin may read any)."""
    return service.get_order(
        order_id=order_id, user_id=current_user_id(), is_admin=current_user_is_admin()
    )


@blp.route("/<order_id>", methods=["DELETE"])
@auth_required()
@blp.response(200, OrderOut, description="The order, now with status `cancelled`.")
@problems(service.OrderNotFound, service.OrderAlreadyCancelled, service.OrderNotCancellable)
def cancel_order(order_id):
    """Cancel an order and put its units back on sale (owner or admin).

    The order is cancelled, not removed: it remains readable, and `GET` on the same
    path answers 200 with status `cancelled`. Cancelling it again is a 409.
    """
    return saga.cancel_order(
        order_id=order_id, user_id=current_user_id(), is_admin=current_user_is_admin()
    )
