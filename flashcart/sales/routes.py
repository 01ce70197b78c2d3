from functools import wraps

from flask import request
from flask_smorest import Blueprint

from flashcart import idempotency, rate_limits
from flashcart.apidoc import problems
from flashcart.auth.roles import auth_required, current_user_id
from flashcart.checkout import recovery
from flashcart.deadlines import DeadlinePassed
from flashcart.errors import Busy, DomainError, handle_domain_error
from flashcart.idempotency import idempotent
from flashcart.products.service import ProductNotFound
from flashcart.sales import service
from flashcart.sales.engine.errors import (
    InsufficientStock,
    LimitExceeded,
    NotReplicated,
    SaleEnded,
    SaleNotOpen,
    SaleNotStarted,
    SoldOut,
)
from flashcart.sales.schemas import (
    AuditOut,
    ReservationOut,
    ReserveIn,
    RestockIn,
    RestockOut,
    SaleOut,
    StockOut,
)

blp = Blueprint(
    "sales", __name__, url_prefix="/api/v1/sales", description="Drops and reservations."
)


@blp.route("/start/<product_id>", methods=["POST"])
@auth_required("admin")
@blp.response(200, SaleOut)
@problems(ProductNotFound, service.SaleAlreadyStarted, SaleEnded)
def start_sale(product_id):
    """Start the sale: push the product's unsold stock live (admin)."""
    return service.start_sale(product_id)


@blp.route("/stock/<product_id>", methods=["GET"])
@blp.response(200, StockOut)
@problems(ProductNotFound, SaleNotStarted, SaleEnded, service.SaleRecovering)
def stock(product_id):
    """Live stock of a product on sale."""
    return service.stock(product_id)


def sold_out_first(view):
    """Answer a product this process just saw sold out before anything else.

    After a sell-out the flood of late clicks is most of a drop's traffic; a 409
    from memory costs a fraction of authenticating and rate-limiting each one. With
    an Idempotency-Key the request goes the whole way: a retry gets its first answer.
    """

    @wraps(view)
    def wrapper(*args, product_id, **kwargs):
        if idempotency.HEADER not in request.headers:
            try:
                service.refuse_if_sold_out(product_id)
            except DomainError as refusal:
                # Answered here, not through Flask's error dispatch: it is most of a
                # drop's traffic. The same problem as the registered handler's.
                return handle_domain_error(refusal)
        return view(*args, product_id=product_id, **kwargs)

    return wrapper


@blp.route("/reserve/<product_id>", methods=["POST"])
@sold_out_first
@auth_required(along=rate_limits.reservations_per_user)
@rate_limits.refusals_documented
@idempotent
@blp.arguments(ReserveIn(), required=False)
@blp.response(201, ReservationOut)
@problems(
    ProductNotFound,
    SaleNotStarted,
    SaleNotOpen,
    SaleEnded,
    SoldOut,
    InsufficientStock,
    LimitExceeded,
    Busy,
    DeadlinePassed,
    service.SaleRecovering,
    NotReplicated,
)
def reserve(data, product_id):
    """Reserve units atomically; check out before `expires_at`."""
    return service.reserve(product_id, current_user_id(), data.get("quantity", 1))


@blp.route("/end/<product_id>", methods=["POST"])
@auth_required("admin")
@blp.response(200, SaleOut)
@problems(ProductNotFound, SaleNotStarted)
def end_sale(product_id):
    """End the sale: no new reservations; live holds may still check out (admin)."""
    return service.end_sale(product_id)


@blp.route("/restock/<product_id>", methods=["POST"])
@auth_required("admin")
@blp.arguments(RestockIn())
@blp.response(200, RestockOut)
@problems(ProductNotFound, SaleEnded)
def restock(data, product_id):
    """Add units to the drop, even while it is live (admin)."""
    return service.restock(product_id, data["quantity"])


@blp.route("/audit/<product_id>", methods=["GET"])
@auth_required("admin")
@blp.response(200, AuditOut)
@problems(ProductNotFound)
def audit(product_id):
    """Compare MongoDB and Redis for one product's sale (admin)."""
    return recovery.audit(product_id=product_id)[0]
