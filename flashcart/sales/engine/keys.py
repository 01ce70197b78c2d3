"""The Redis keys of a product's sale (the layout is in the package docstring)."""

import functools
import secrets

# The sale hash's `status`.
LIVE = "live"
ENDED = "ended"
CLOSED = "closed"
DEFAULT_STRIPES = 128
MAX_STRIPES = 256


def product_prefix(product_id):
    return f"fc:{{p:{product_id}}}:"


class Keys:
    """The Redis keys of one product's sale."""

    __slots__ = ("prefix", "sale", "sold", "deadlines", "claimed", "restored", "buyers", "acked")

    def __init__(self, product_id):
        self.prefix = product_prefix(product_id)
        self.sale = self.prefix + "sale"
        self.sold = self.prefix + "sold"
        self.deadlines = self.prefix + "deadlines"
        self.claimed = self.prefix + "claimed"
        self.restored = self.prefix + "restored"
        self.buyers = self.prefix + "buyers"
        self.acked = self.prefix + "acked"

    def hold(self, reservation_id):
        return f"{self.prefix}hold:{reservation_id}"

    def expired(self, reservation_id):
        return f"{self.prefix}expired:{reservation_id}"

    def stripe(self, index):
        return f"{self.prefix}stock:{index}"

    def stripes(self, count):
        return list(stripe_keys(self.prefix, count))

    def user(self, user_id):
        return f"{self.prefix}user:{user_id}"


@functools.lru_cache(maxsize=4096)
def stripe_keys(prefix, count):
    """The stock keys of a sale: hot reads (stock, sold out) name every stripe, so
    they are built once per sale."""
    return tuple(f"{prefix}stock:{i}" for i in range(count))


def new_reservation_id(product_id):
    # The product id travels inside the reservation id so that checkout can find
    # the product's keys without a cross-slot index.
    return f"{product_id}.{secrets.token_urlsafe(12)}"


def product_of(reservation_id):
    return reservation_id.split(".", 1)[0]
