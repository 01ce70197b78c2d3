from flask_smorest import Blueprint

from flashcart.auth.roles import auth_required, current_user_id
from flashcart.idempotency import idempotent
from flashcart.sales import recovery, service
from flashcart.sales.schemas import (
    AuditOut,
    ReservationOut,
    ReserveIn,
    RestockIn,
    RestockOut,
    SaleOut,
    StockOut,
)
from flashcart.schemas import ProblemSchema

blp = Blueprint(
    "sales", __name__, url_prefix="/api/v1/sales", description="Drops and reservations."
)


@blp.route("/start/<product_id>", methods=["POST"])
@auth_required("admin")
@blp.response(200, SaleOut)
@blp.alt_response(404, schema=ProblemSchema, description="Unknown product.")
@blp.alt_response(409, schema=ProblemSchema, description="Already started.")
def start_sale(product_id):
    """Start the sale: push the product's unsold stock live (admin)."""
    return service.start_sale(product_id)


@blp.route("/stock/<product_id>", methods=["GET"])
@blp.response(200, StockOut)
@blp.alt_response(404, schema=ProblemSchema, description="Unknown product.")
@blp.alt_response(409, schema=ProblemSchema, description="Sale not started.")
def stock(product_id):
    """Live stock of a product on sale."""
    return service.stock(product_id)


@blp.route("/reserve/<product_id>", methods=["POST"])
@auth_required()
@idempotent
@blp.arguments(ReserveIn, required=False)
@blp.response(201, ReservationOut)
@blp.alt_response(404, schema=ProblemSchema, description="Unknown product.")
@blp.alt_response(
    409,
    schema=ProblemSchema,
    description="sale_not_started, sale_ended, sold_out, insufficient_stock or limit_exceeded.",
)
@blp.alt_response(503, schema=ProblemSchema, description="Busy: retry after `Retry-After`.")
def reserve(data, product_id):
    """Reserve units atomically; check out before `expires_at`."""
    return service.reserve(product_id, current_user_id(), data.get("quantity", 1))


@blp.route("/end/<product_id>", methods=["POST"])
@auth_required("admin")
@blp.response(200, SaleOut)
@blp.alt_response(404, schema=ProblemSchema, description="Unknown product.")
@blp.alt_response(409, schema=ProblemSchema, description="Sale not started.")
def end_sale(product_id):
    """End the sale: no new reservations; live holds may still check out (admin)."""
    return service.end_sale(product_id)


@blp.route("/restock/<product_id>", methods=["POST"])
@auth_required("admin")
@blp.arguments(RestockIn)
@blp.response(200, RestockOut)
@blp.alt_response(404, schema=ProblemSchema, description="Unknown product.")
@blp.alt_response(409, schema=ProblemSchema, description="The sale has ended.")
def restock(data, product_id):
    """Add units to the drop, atomically, even while it is live (admin)."""
    return service.restock(product_id, data["quantity"])


@blp.route("/audit/<product_id>", methods=["GET"])
@auth_required("admin")
@blp.response(200, AuditOut)
@blp.alt_response(404, schema=ProblemSchema, description="Unknown product.")
def audit(product_id):
    """Compare MongoDB and Redis for one product's sale (admin)."""
    return recovery.audit(product_id=product_id)[0]
