"""The inventory engine under real concurrency, against the real redis-server.

Every test checks the sale invariant from the Redis keys themselves:

    total == available + held (sum of hold:<rid>.quantity) + sold

with stock never below zero and no user over the limit. Held units are read from the
hold hashes themselves, sold from the `sold` key; available stock and per-user counts
come through Inventory.snapshot() and Inventory.user_units(), so the checks hold
whichever way the engine lays out its stock keys. Expected per-user units come from
what the test itself saw succeed.

Threads wait on a barrier so their transactions really collide, and every join has
a timeout so a hang fails the test instead of blocking the suite.
"""

import collections
import itertools
import multiprocessing
import queue
import random
import threading
import time
import uuid

import pytest
from bson import ObjectId

from flashcart.errors import Busy
from flashcart.sales.engine.errors import (
    InsufficientStock,
    LimitExceeded,
    ReservationNotFound,
    SoldOut,
)
from flashcart.sales.engine.inventory import Inventory
from flashcart.sales.engine.keys import LIVE, Keys
from flashcart.sales.engine.records import SalePlan
from flashcart.stores import connect_redis
from tests.support.threads import run_threads

JOIN_TIMEOUT = 30
GENEROUS_ATTEMPTS = 10_000


@pytest.fixture
def real_redis(real_redis_url):
    """A client of a real Redis (one server, then the cluster) whose pool fits 200+ threads.

    redis-py 8 caps a pool at 100 connections and raises MaxConnectionsError past it.
    """
    client = connect_redis(real_redis_url, max_connections=1000)
    yield client
    client.close()


class CountingInventory(Inventory):
    """Inventory that counts transaction calls, body runs and WATCH-conflict retries."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, on_retry=self._count_retry, **kwargs)
        self._lock = threading.Lock()
        self.calls = 0
        self.runs = 0
        self.watch_retries = 0

    def _count_retry(self):
        with self._lock:
            self.watch_retries += 1

    def _transaction(self, body, product_id):
        with self._lock:
            self.calls += 1

        def counted(pipe):
            with self._lock:
                self.runs += 1
            return body(pipe)

        return super()._transaction(counted, product_id)

    @property
    def retries(self):
        """Bodies run again, for a WATCH conflict or to look at other stock."""
        return self.runs - self.calls


def new_product_id():
    return str(ObjectId())


def hold_quantities(client, product_id):
    """{reservation id: (user, quantity)} read from the hold hashes themselves."""
    keys = Keys(product_id)
    holds = {}
    for key in client.scan_iter(match=keys.hold("*"), count=1000):
        data = client.hgetall(key)
        holds[key.rsplit(":", 1)[1]] = (data["user"], int(data["quantity"]))
    return holds


def user_units(client, product_id):
    """{user: units held or bought} as the engine counts them for the limit (no zeros)."""
    return {
        user: units for user, units in Inventory(client).user_units(product_id).items() if units
    }


def assert_invariant(client, inventory, product_id, total, limit, bought=None):
    """Check total == available + held + sold and the per-user accounting; return the snapshot.

    `bought` maps user -> units claimed and not restored (0 if omitted).
    """
    snapshot = inventory.snapshot(product_id)
    holds = hold_quantities(client, product_id)
    held = sum(quantity for _, quantity in holds.values())
    assert snapshot.held == held, "deadlines index and hold hashes disagree"
    assert set(client.zrange(Keys(product_id).deadlines, 0, -1)) == set(holds)
    assert snapshot.available >= 0, f"stock went negative: {snapshot.available}"
    assert snapshot.sold == int(client.get(Keys(product_id).sold) or 0) >= 0
    assert snapshot.available + held + snapshot.sold == total, (
        f"available {snapshot.available} + held {held} + sold {snapshot.sold} != {total}"
    )
    expected = collections.Counter(bought or {})
    for user, quantity in holds.values():
        expected[user] += quantity
    recorded = user_units(client, product_id)
    assert recorded == {user: units for user, units in expected.items() if units}
    assert all(units <= limit for units in recorded.values()), recorded
    return snapshot


def open_sale(inventory, product_id, total, limit):
    plan = SalePlan(status=LIVE, limit=limit, total=total, sold_by_user={})
    assert inventory.open_sale(product_id, plan) is True


def test_200_shoppers_racing_for_50_units_get_exactly_50_holds(real_redis):
    product_id, total = new_product_id(), 50
    inventory = CountingInventory(real_redis, max_attempts=GENEROUS_ATTEMPTS)
    open_sale(inventory, product_id, total, limit=1)
    outcomes, lock = collections.Counter(), threading.Lock()

    def shopper(index, barrier):
        barrier.wait()
        try:
            inventory.reserve(product_id, f"user-{index}", 1)
            outcome = "ok"
        except SoldOut:
            outcome = "sold_out"
        except Busy:
            outcome = "busy"
        with lock:
            outcomes[outcome] += 1

    run_threads(200, shopper, pass_barrier=True)

    assert outcomes == {"ok": 50, "sold_out": 150}, (outcomes, inventory.retries)
    snapshot = assert_invariant(real_redis, inventory, product_id, total, limit=1)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (0, 50, 0)
    assert len(user_units(real_redis, product_id)) == 50
    print(
        f"\n200 threads/50 units: {dict(outcomes)}, reruns {inventory.retries}, "
        f"WATCH retries {inventory.watch_retries}"
    )


def test_many_attempts_by_few_shoppers_never_exceed_the_per_user_limit(real_redis):
    product_id, total, limit = new_product_id(), 1000, 3
    users, attempts_each = 10, 20
    inventory = CountingInventory(real_redis, max_attempts=GENEROUS_ATTEMPTS)
    open_sale(inventory, product_id, total, limit)
    outcomes, per_user, lock = collections.Counter(), collections.Counter(), threading.Lock()

    def shopper(index, barrier):
        user = f"user-{index % users}"
        barrier.wait()
        try:
            inventory.reserve(product_id, user, 1)
            outcome = "ok"
        except LimitExceeded:
            outcome = "limit"
        with lock:
            outcomes[outcome] += 1
            if outcome == "ok":
                per_user[user] += 1

    run_threads(users * attempts_each, shopper, pass_barrier=True)

    assert per_user == {f"user-{u}": limit for u in range(users)}
    assert outcomes == {"ok": users * limit, "limit": users * (attempts_each - limit)}
    snapshot = assert_invariant(real_redis, inventory, product_id, total, limit)
    assert snapshot.held == users * limit
    assert user_units(real_redis, product_id) == {f"user-{u}": limit for u in range(users)}
    print(
        f"\n10 users x 20 attempts, limit 3: {dict(outcomes)}, reruns {inventory.retries}, "
        f"WATCH retries {inventory.watch_retries}"
    )


def _reserve_in_process(url, product_id, process_index, count, start, results):
    """Child process: its own Redis client, `count` reservations for distinct users."""
    client = connect_redis(url)
    inventory = CountingInventory(client, max_attempts=GENEROUS_ATTEMPTS)
    outcomes = collections.Counter()
    start.wait(JOIN_TIMEOUT)
    for i in range(count):
        try:
            inventory.reserve(product_id, f"p{process_index}-user-{i}", 1)
            outcomes["ok"] += 1
        except SoldOut:
            outcomes["sold_out"] += 1
        except Exception as error:
            outcomes[f"error:{type(error).__name__}"] += 1
    outcomes["retries"] = inventory.retries
    outcomes["watch_retries"] = inventory.watch_retries
    results.put(dict(outcomes))


def test_four_processes_with_their_own_clients_sell_exactly_the_stock(real_redis, real_redis_url):
    product_id, total, processes, each = new_product_id(), 150, 4, 60
    inventory = Inventory(real_redis)
    open_sale(inventory, product_id, total, limit=1)
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(
            target=_reserve_in_process,
            args=(real_redis_url, product_id, index, each, start, results),
            daemon=True,
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.set()
    try:
        reports = [results.get(timeout=JOIN_TIMEOUT) for _ in workers]
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.terminate()
    assert all(worker.exitcode == 0 for worker in workers), [w.exitcode for w in workers]

    totals = sum((collections.Counter(report) for report in reports), collections.Counter())
    retries = totals.pop("retries", 0), totals.pop("watch_retries", 0)
    assert totals == {"ok": min(total, processes * each), "sold_out": processes * each - total}
    snapshot = assert_invariant(real_redis, inventory, product_id, total, limit=1)
    assert (snapshot.available, snapshot.held) == (0, total)
    print(f"\n4 processes x 60 vs 150 units: {dict(totals)}, (reruns, WATCH retries) {retries}")


class Storm:
    """Shared state of the mixed storm: what the workers did, to compare with Redis."""

    def __init__(self, client, product_id):
        self.client = client
        self.product_id = product_id
        self.long = Inventory(client, hold_seconds=600, max_attempts=GENEROUS_ATTEMPTS)
        self.short = Inventory(client, hold_seconds=0.02, max_attempts=GENEROUS_ATTEMPTS)
        self.lock = threading.Lock()
        self.bought = collections.Counter()  # user -> units claimed and not restored
        self.outcomes = collections.Counter()
        self.to_restore = (queue.Queue(), queue.Queue())  # each order goes to both queues
        self.contested = (queue.Queue(), queue.Queue())  # holds for claim vs release
        self.restore_wins = collections.Counter()
        self.queued_restores = []
        self.contest_wins = collections.defaultdict(list)
        self.min_stock = None
        self.audits = 0

    def note(self, outcome):
        with self.lock:
            self.outcomes[outcome] += 1

    def reserve(self, inventory, user):
        try:
            return inventory.reserve(self.product_id, user, random.randint(1, 3))
        except (SoldOut, InsufficientStock):
            self.note("no_stock")
            return None

    def claim(self, hold):
        order_id = f"order-{uuid.uuid4().hex}"
        assert self.long.claim(hold.id, hold.user_id, order_id) is True
        with self.lock:
            self.bought[hold.user_id] += hold.quantity
        return order_id


def _keeper(storm, user, rounds):
    for _ in range(rounds):
        if storm.reserve(storm.long, user):
            storm.note("kept")


def _expirer(storm, user, rounds):
    for _ in range(rounds):
        if storm.reserve(storm.short, user):
            storm.note("short_hold")
        storm.short.release_expired(storm.product_id)


def _releaser(storm, user, rounds):
    for _ in range(rounds):
        hold = storm.reserve(storm.long, user)
        if hold:
            assert storm.long.release(hold.id, only_if_expired=False) == hold.quantity
            assert storm.long.release(hold.id, only_if_expired=False) == 0
            storm.note("released")


def _claimer(storm, user, rounds):
    for _ in range(rounds):
        hold = storm.reserve(storm.long, user)
        if hold:
            order_id = storm.claim(hold)
            storm.note("claimed")
            if random.random() < 0.5:
                with storm.lock:
                    storm.queued_restores.append(order_id)
                for pending in storm.to_restore:
                    pending.put((order_id, hold))


def _contender(storm, user, rounds):
    for _ in range(rounds):
        hold = storm.reserve(storm.long, user)
        if hold:
            for pending in storm.contested:
                pending.put(hold)


def _restorer(storm, side):
    while (item := storm.to_restore[side].get(timeout=JOIN_TIMEOUT)) is not None:
        order_id, hold = item
        if storm.long.restore(storm.product_id, order_id, hold.user_id, hold.quantity):
            with storm.lock:
                storm.restore_wins[order_id] += 1
                storm.bought[hold.user_id] -= hold.quantity


def _contest_claim(storm):
    while (hold := storm.contested[0].get(timeout=JOIN_TIMEOUT)) is not None:
        try:
            storm.claim(hold)
            with storm.lock:
                storm.contest_wins[hold.id].append("claim")
        except ReservationNotFound:
            pass


def _contest_release(storm):
    while (hold := storm.contested[1].get(timeout=JOIN_TIMEOUT)) is not None:
        returned = storm.long.release(hold.id, only_if_expired=False)
        if returned:
            assert returned == hold.quantity
            with storm.lock:
                storm.contest_wins[hold.id].append("release")


# A test-only atomic reader: the app itself uses no Lua, but an auditor that must see
# every key at one instant, while writers never stop, needs a server-side script.
AUDIT_SCRIPT = """
local sale, sold, deadlines, prefix = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local stock, lowest = redis.call('HGET', sale, 'stock'), nil
if stock then
  stock = tonumber(stock)
  lowest = stock
else  -- stock striped over stock:<i> keys
  stock = 0
  for i = 0, tonumber(redis.call('HGET', sale, 'stripes') or '0') - 1 do
    local units = tonumber(redis.call('GET', prefix .. 'stock:' .. i) or '0')
    stock = stock + units
    if lowest == nil or units < lowest then lowest = units end
  end
end
local held = 0
for _, rid in ipairs(redis.call('ZRANGE', deadlines, 0, -1)) do
  held = held + tonumber(redis.call('HGET', prefix .. 'hold:' .. rid, 'quantity') or '0')
end
return {stock, held, tonumber(redis.call('GET', sold) or '0'), lowest or 0}
"""


def consistent_read(client, product_id):
    """(available, held, sold, lowest stock key) at one instant."""
    keys = Keys(product_id)
    script = client.register_script(AUDIT_SCRIPT)
    return tuple(script(keys=[keys.sale, keys.sold, keys.deadlines], args=[keys.prefix]))


def _auditor(storm, total, stop):
    while not stop.is_set():
        *figures, lowest = consistent_read(storm.client, storm.product_id)
        assert sum(figures) == total, f"mid-storm: (stock, held, sold)={figures} != {total}"
        storm.min_stock = lowest if storm.min_stock is None else min(storm.min_stock, lowest)
        storm.audits += 1
        time.sleep(0.001)


def test_a_mixed_storm_of_reserve_claim_release_restore_keeps_every_unit(real_redis):
    product_id, total, limit, rounds = new_product_id(), 450, 10_000, 25
    storm = Storm(real_redis, product_id)
    open_sale(storm.long, product_id, total, limit)
    roles = [_keeper, _expirer, _releaser, _claimer, _claimer, _contender] * 3
    producers, stop = len(roles), threading.Event()
    done = threading.Barrier(producers + 1)
    consumers = [
        lambda: _restorer(storm, 0),
        lambda: _restorer(storm, 1),
        lambda: _contest_claim(storm),
        lambda: _contest_release(storm),
        lambda: _auditor(storm, total, stop),
    ]

    def worker(index, barrier):
        barrier.wait()
        if index < producers:
            try:
                roles[index](storm, f"user-{index % 7}", rounds)
            finally:
                done.wait(JOIN_TIMEOUT)
        elif index == producers:
            done.wait(JOIN_TIMEOUT)  # all producers finished: tell the consumers to stop
            for pending in (*storm.to_restore, *storm.contested):
                pending.put(None)
            stop.set()
        else:
            consumers[index - producers - 1]()

    run_threads(producers + 1 + len(consumers), worker, timeout=45, pass_barrier=True)

    # Every restore and every claim/release contest had exactly one winner.
    assert storm.restore_wins == {order_id: 1 for order_id in storm.queued_restores}
    assert all(len(winners) == 1 for winners in storm.contest_wins.values())
    assert storm.min_stock is not None and storm.min_stock >= 0
    assert storm.audits > 10, "the auditor barely ran during the storm"

    # Mid-storm holds are still held; the invariant holds with them...
    assert_invariant(real_redis, storm.long, product_id, total, limit, storm.bought)
    # ...and after every hold expires, held is zero and nothing was lost.
    far_future = Inventory(real_redis, clock=lambda: time.time() + 10**6)
    while far_future.release_expired(product_id):
        pass
    snapshot = assert_invariant(real_redis, far_future, product_id, total, limit, storm.bought)
    sold = sum(storm.bought.values())
    assert (snapshot.available, snapshot.held, snapshot.sold) == (total - sold, 0, sold)
    assert real_redis.scard(Keys(product_id).restored) == len(storm.restore_wins)
    print(
        f"\nstorm: {dict(storm.outcomes)}, restored {len(storm.restore_wins)} orders, "
        f"contests {collections.Counter(w[0] for w in storm.contest_wins.values())}, "
        f"sold {sold}, min stock {storm.min_stock}, consistent audits {storm.audits}"
    )


def test_bounded_retries_give_up_with_busy_and_leave_no_trace(real_redis):
    product_id, total, limit = new_product_id(), 10_000, 10_000
    threads, calls_each, users = 100, 5, 5  # 20 threads per user: they collide on its count
    inventory = CountingInventory(real_redis, max_attempts=1)
    open_sale(Inventory(real_redis), product_id, total, limit)
    succeeded = collections.Counter()
    busy = collections.Counter()
    lock = threading.Lock()

    def shopper(index, barrier):
        user = f"user-{index % users}"
        for _ in range(calls_each):
            barrier.wait()  # line everyone up again before each call
            try:
                inventory.reserve(product_id, user, 1)
                outcome = succeeded
            except Busy:
                outcome = busy
            with lock:
                outcome[user] += 1

    run_threads(threads, shopper, pass_barrier=True)

    ok, gave_up = sum(succeeded.values()), sum(busy.values())
    assert ok + gave_up == threads * calls_each
    assert gave_up > 0, "no call hit Busy: retries are not bounded by max_attempts=1"
    assert inventory.runs == inventory.calls, "max_attempts=1 must never run a body twice"
    snapshot = assert_invariant(real_redis, inventory, product_id, total, limit)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (total - ok, ok, 0)
    # A call that gave up left no hold and no units against its user.
    assert user_units(real_redis, product_id) == +succeeded
    holds_per_user = collections.Counter(
        user for user, _ in hold_quantities(real_redis, product_id).values()
    )
    assert holds_per_user == +succeeded
    print(f"\nmax_attempts=1, {threads}x{calls_each} calls: {ok} ok, {gave_up} busy")


def test_without_contention_max_attempts_1_never_answers_busy(real_redis):
    """Busy means "contended": one shopper alone on a sale must never see it.

    Ten sequential reservations, nobody else touching the product, until it sells out.
    """
    product_id, total = new_product_id(), 10
    inventory = CountingInventory(real_redis, max_attempts=1)
    open_sale(Inventory(real_redis), product_id, total, limit=total)
    outcomes = collections.Counter()
    for i in range(total):
        try:
            inventory.reserve(product_id, f"user-{i}", 1)
            outcomes["ok"] += 1
        except Busy:
            outcomes["busy"] += 1
    assert outcomes == {"ok": total}, (
        f"{outcomes['busy']} of {total} uncontended reservations answered Busy "
        f"(WATCH conflicts: {inventory.watch_retries}, body reruns: {inventory.retries})"
    )
    with pytest.raises(SoldOut):
        inventory.reserve(product_id, "late", 1)


def test_release_expired_with_a_far_future_clock_returns_every_hold(real_redis):
    """A cross-check of the helpers above: they must see units move, not just sums."""
    product_id, total = new_product_id(), 20
    inventory = Inventory(real_redis)
    open_sale(inventory, product_id, total, limit=5)
    for user in itertools.islice(itertools.cycle("abcd"), 8):
        inventory.reserve(product_id, user, 1)
    assert assert_invariant(real_redis, inventory, product_id, total, limit=5).held == 8
    far_future = Inventory(real_redis, clock=lambda: time.time() + 10**6)
    assert far_future.release_expired(product_id) == 8
    snapshot = assert_invariant(real_redis, inventory, product_id, total, limit=5)
    assert (snapshot.available, snapshot.held) == (total, 0)
    assert user_units(real_redis, product_id) == {}


def assert_limit_kept_across_expiries(holds, bought, limit, rounds, hold_seconds):
    """Each round every user got what the limit allows (less what they bought), and
    never held more than `limit` at once: any limit+1 of their consecutive deadlines
    span at least a hold's lifetime."""
    for user, made in holds.items():
        per_round = collections.Counter(round_ for round_, _ in made)
        assert per_round[0] >= limit, (user, per_round)
        later = range(1, rounds)
        assert all(per_round[r] >= limit - bought[user] for r in later), (user, per_round)
        deadlines = sorted(hold.expires_at for _, hold in made)
        for first, last in zip(deadlines, deadlines[limit:], strict=False):
            assert last - first >= hold_seconds, (user, deadlines)


def test_expired_holds_stop_counting_against_the_limit_whoever_sweeps(real_redis):
    """Nobody sweeps and stock never runs short, so only the reservations themselves
    can return their users' expired holds. Four threads per user race each round;
    the holds of one round expire before the next, and each user then gets their full
    limit again (less what they bought), never more than the limit at once."""
    product_id, total, limit, hold_seconds = new_product_id(), 1000, 2, 1.0
    users, threads_per_user, rounds = 8, 4, 3
    inventory = CountingInventory(
        real_redis, hold_seconds=hold_seconds, max_attempts=GENEROUS_ATTEMPTS
    )
    open_sale(inventory, product_id, total, limit)
    holds, bought, lock = collections.defaultdict(list), collections.Counter(), threading.Lock()
    refused = collections.Counter()

    def reserve(user, round_):
        try:
            hold = inventory.reserve(product_id, user, 1)
        except LimitExceeded:
            with lock:
                refused[user] += 1
            return
        with lock:
            holds[user].append((round_, hold))
            # In the first round, user-0 buys one unit: it counts for good.
            buys = user == "user-0" and round_ == 0 and not bought[user]
            bought[user] += buys
        if buys:
            assert inventory.claim(hold.id, user, f"order-{hold.id}") is True

    def shopper(index, barrier):
        for round_ in range(rounds):
            barrier.wait()
            reserve(f"user-{index % users}", round_)
            barrier.wait()
            if index == 0:  # every hold of this round expires before the next
                latest = max(hold.expires_at for made in holds.values() for _, hold in made)
                time.sleep(max(0.0, latest - time.time()) + 0.05)

    run_threads(users * threads_per_user, shopper, timeout=60, pass_barrier=True)

    assert len(holds) == users
    assert sum(refused.values()) > 0, "no reservation met the limit: the test proves nothing"
    assert_limit_kept_across_expiries(holds, bought, limit, rounds, hold_seconds)
    sold = sum(bought.values())
    far_future = Inventory(real_redis, clock=lambda: time.time() + 10**6)
    while far_future.release_expired(product_id):
        pass
    snapshot = assert_invariant(real_redis, far_future, product_id, total, limit, bought)
    assert (snapshot.available, snapshot.held, snapshot.sold) == (total - sold, 0, sold)
