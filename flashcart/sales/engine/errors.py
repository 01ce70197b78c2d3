"""What the engine answers when it refuses: the API's problem codes for a sale."""

from flashcart.errors import Conflict, DomainError, NotFound, ServiceUnavailable


class SaleNotStarted(Conflict):
    """The sale for this product has not started."""

    code = "sale_not_started"


class SaleEnded(Conflict):
    """The sale for this product has ended."""

    code = "sale_ended"


class SaleNotOpen(Conflict):
    """The sale for this product has not opened yet."""

    code = "sale_not_open"


class SoldOut(Conflict):
    """Sold out: no units are available (held units may return if their reservations expire)."""

    code = "sold_out"


class InsufficientStock(Conflict):
    """Fewer units are available than requested."""

    code = "insufficient_stock"


class LimitExceeded(Conflict):
    """This would take you over the per-user limit for this product."""

    code = "limit_exceeded"


class ReservationNotFound(NotFound):
    """No live reservation with this id (it may have expired)."""

    code = "reservation_not_found"


class ReservationExpired(DomainError):
    """The reservation expired before checkout; its units went back on sale."""

    status = 410
    code = "reservation_expired"


class NotReplicated(ServiceUnavailable):
    """Redis replicas did not confirm the reservation in time, so it was not made; retry shortly."""
