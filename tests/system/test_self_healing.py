"""Self-healing: a sale whose Redis state is lost or out of step is rebuilt from
MongoDB without an operator, and the rebuild is safe against the changes racing it.

Every check is the sale's invariant at a quiet moment, from MongoDB and Redis:

    initial stock + units restocked == products.stock == available + held + sold
"""

import random
import shutil
import time

import pytest

from flashcart.checkout import recovery
from flashcart.products import service as product_service
from flashcart.sales import service as sale_service
from flashcart.sales.engine.keys import Keys
from tests.support.threads import run_threads

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="no redis-server binary: the races need a real Redis",
)

ROUNDS = 120


@pytest.fixture
def app_config(app_config):
    return {**app_config, "SWEEP_GRACE_SECONDS": 0}


def lose_the_sale(redis_client, pid):
    """Redis forgets the sale, as after a restart without persistence."""
    redis_client.delete(*redis_client.keys(Keys(pid).prefix + "*"))


def counted(app, pid):
    """(MongoDB's stock, available + held + sold in Redis)."""
    with app.app_context():
        snapshot = sale_service.inventory().snapshot(pid)
        stock = product_service.find(pid)["stock"]
    return stock, snapshot.available + snapshot.held + snapshot.sold


def test_a_restock_racing_a_repair_counts_its_units_once(app, make_product, redis_client):
    """A restock writes MongoDB's stock, then Redis's; a repair reads MongoDB between
    the two (its plan already counts the units) and the restock must not add them again.
    Every other round Redis has lost the sale first, so the restock finds none."""
    initial = 20
    pid = make_product(live=True, stock=initial, per_user_limit=5)["id"]
    with app.app_context():
        for user in ("holder-1", "holder-2"):
            sale_service.reserve(pid, user, 2)  # held units the rebuilds must keep
    rng = random.Random(20)
    restocked = 0
    doubled = []

    for round_ in range(ROUNDS):
        if round_ % 2:
            lose_the_sale(redis_client, pid)
        quantity = rng.randint(1, 3)
        pauses = [rng.uniform(0, 0.004) for _ in range(2)]

        def act(index, quantity=quantity, pauses=pauses):
            with app.app_context():
                if index == 0:
                    time.sleep(pauses[0])
                    sale_service.restock(pid, quantity)
                else:
                    time.sleep(pauses[1])
                    recovery.audit(repair=True, product_id=pid)

        run_threads(2, act)
        restocked += quantity
        stock, in_redis = counted(app, pid)
        assert stock == initial + restocked
        if in_redis != stock:
            doubled.append((round_, quantity, in_redis - stock))
            # Put it right, so each round starts from a sound sale.
            with app.app_context():
                recovery.audit(repair=True, product_id=pid)

    assert not doubled, f"(round, restocked, units counted twice) in {ROUNDS} rounds: {doubled}"
