"""Demo data, so a new user can try a drop at once (`flask seed-demo`)."""

import contextlib
import logging
from decimal import Decimal

from flashcart.extensions import stores
from flashcart.products import service as products
from flashcart.sales import service as sales
from flashcart.sales.engine.errors import SaleEnded
from flashcart.sales.service import SaleAlreadyStarted

log = logging.getLogger(__name__)

DEMO_ADMIN_EMAIL = "admin@flashcart.local"
DEMO_ADMIN_PASSWORD = "flashcart-demo-admin"  # noqa: S105  # nosec B105 # embedded demo only

DEMO_PRODUCTS = [
    {
        "name": "Aurora Sneaker - Limited Run",
        "description": "Hand-numbered sneaker drop, 200 pairs worldwide.",
        "price": Decimal("189.00"),
        "stock": 200,
        "per_user_limit": 2,
    },
    {
        "name": "Nebula Vinyl - Signed Edition",
        "description": "Signed first pressing, 500 copies.",
        "price": Decimal("39.99"),
        "stock": 500,
        "per_user_limit": 1,
    },
    {
        "name": "Comet Hoodie - Drop 01",
        "description": "Heavyweight hoodie, one colourway, never restocked.",
        "price": Decimal("79.50"),
        "stock": 300,
        "per_user_limit": 3,
    },
]


def seed_demo():
    """Create the demo products (once) and put them on sale. Returns their ids."""
    ids = []
    for spec in DEMO_PRODUCTS:
        existing = stores.db.products.find_one({"name": spec["name"]})
        product_id = str(existing["_id"]) if existing else products.create_product(**spec)["id"]
        with contextlib.suppress(SaleAlreadyStarted, SaleEnded):
            sales.start_sale(product_id)
        ids.append(product_id)
    return ids
