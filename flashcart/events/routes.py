from flask_smorest import Blueprint
from marshmallow import RAISE

from flashcart.auth.roles import auth_required
from flashcart.events import feed
from flashcart.events.schemas import EventPage, EventQuery

blp = Blueprint(
    "events",
    __name__,
    url_prefix="/api/v1/events",
    description="Order and sale events, in the order they were published.",
)


@blp.route("", methods=["GET"])
@auth_required("admin")
@blp.arguments(EventQuery(), location="query", unknown=RAISE)
@blp.response(200, EventPage)
def list_events(query):
    """Events after a cursor, oldest first: a pull feed for other systems (admin).

    Ask again with `next` as `after` to read on; an answer with no items means the
    consumer is up to date (ask again later with the same `next`).
    """
    return feed.page(after=query["after"], limit=query["limit"], types=query.get("type"))
