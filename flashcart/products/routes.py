from flask_smorest import Blueprint
from marshmallow import RAISE

from flashcart.apidoc import problems
from flashcart.auth.roles import auth_required, current_user_id
from flashcart.http_caching import cacheable, rendered
from flashcart.products import service
from flashcart.products.schemas import (
    ProductIn,
    ProductListQuery,
    ProductOut,
    ProductPage,
    TrendingOut,
)

PRODUCT_PAGE = ProductOut()

blp = Blueprint("products", __name__, url_prefix="/api/v1/products", description="The catalogue.")


@blp.route("", methods=["GET"])
@cacheable
@blp.arguments(ProductListQuery(), location="query", unknown=RAISE)
@blp.response(200, ProductPage)
def list_products(query):
    """List products, newest first, a page at a time."""
    return service.list_products(**query)


@blp.route("", methods=["POST"])
@auth_required("admin")
@blp.arguments(ProductIn())
@blp.response(201, ProductOut)
def create_product(data):
    """Create a product for a drop (admin)."""
    return service.create_product(**data, created_by=current_user_id())


@blp.route("/trending", methods=["GET"])
@blp.response(200, TrendingOut(many=True))
def trending():
    """The three most viewed products."""
    return service.trending()


@blp.route("/<product_id>", methods=["GET"])
@cacheable
@blp.response(200, ProductOut)
@problems(service.ProductNotFound)
def get_product(product_id):
    """One product, from the cache when it is warm; the view counts toward trending."""
    return rendered(PRODUCT_PAGE, service.view_product(product_id))
