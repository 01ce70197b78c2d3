"""Product views for "trending": counted per worker, added to Redis in batches.

In a drop the crowd reloads one product page; one ZINCRBY per view on the single
trending key was a Redis write per page. Each worker now counts views in memory and
adds them at most every VIEW_FLUSH_SECONDS, with its next view or trending read:
one write per product per interval. Views a worker counted but had not yet added
are lost when it stops; a Redis error while adding keeps them for the next try (if
Redis did add them before the error, they count twice: trending is a ranking).
"""

import logging
import threading
import time
import weakref
from collections import Counter

import redis
from flask import current_app

from flashcart.extensions import stores

log = logging.getLogger(__name__)

TRENDING_KEY = "fc:trending"


class _Pending:
    def __init__(self):
        self.views = Counter()
        self.added_at = time.monotonic()
        self.lock = threading.Lock()


# Per worker and Redis client (apps in one process, as in tests, keep their own).
_PENDING = weakref.WeakKeyDictionary()


def _pending():
    client = stores.redis
    pending = _PENDING.get(client)
    if pending is None:
        pending = _PENDING.setdefault(client, _Pending())
    return pending


def count(product_id):
    """Count one view; add this worker's views to Redis when the interval is up."""
    pending = _pending()
    with pending.lock:
        pending.views[product_id] += 1
        due = time.monotonic() - pending.added_at >= current_app.config["VIEW_FLUSH_SECONDS"]
    if due:
        flush()


def flush():
    """Add this worker's pending views to the trending set now."""
    pending = _pending()
    with pending.lock:
        views, pending.views = pending.views, Counter()
        pending.added_at = time.monotonic()
    if not views:
        return
    try:
        with stores.redis.pipeline(transaction=False) as pipe:
            for product_id, n in views.items():
                pipe.zincrby(TRENDING_KEY, n, product_id)
            pipe.execute()
    except redis.RedisError as error:
        log.warning("views not added to trending yet (%s): kept for the next try", error)
        with pending.lock:
            pending.views.update(views)


def forget(product_id):
    """Drop a product from trending (and this worker's pending views of it)."""
    pending = _pending()
    with pending.lock:
        pending.views.pop(product_id, None)
    stores.redis.zrem(TRENDING_KEY, product_id)
