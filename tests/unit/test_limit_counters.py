"""Rate-limit counters through a Redis outage: counted in memory, then in Redis again."""

import threading
import time
from types import SimpleNamespace

import pytest
import redis
from limits import parse

from flashcart import limit_counters
from flashcart.limit_counters import Counters
from tests.support.redis_server import RedisServer

THREE_A_MINUTE = parse("3 per minute")


@pytest.fixture
def server():
    with RedisServer() as running:
        yield running


def counted_in_redis(server):
    client = redis.Redis.from_url(server.url, decode_responses=True)
    return {key: int(client.get(key)) for key in client.keys("LIMITS:*")}


def test_counts_are_kept_in_redis_under_the_prefix_and_identifiers(server):
    counters = Counters(server.url, timeout=1)

    assert [counters.hit(THREE_A_MINUTE, "user-1", "reserve") for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert counters.test(THREE_A_MINUTE, "user-2", "reserve")
    assert counted_in_redis(server) == {"LIMITS:LIMITER/fc:rl/user-1/reserve/3/1/minute": 4}
    assert 1 <= counters.seconds_to_reset(THREE_A_MINUTE, "user-1", "reserve") <= 60


def test_while_redis_is_down_limits_still_hold_in_memory(server):
    counters = Counters(server.url, timeout=0.2)
    server.stop()

    answers = [counters.hit(THREE_A_MINUTE, "user-1", "reserve") for _ in range(4)]

    assert answers == [True, True, True, False]
    assert 1 <= counters.seconds_to_reset(THREE_A_MINUTE, "user-1", "reserve") <= 60


def test_redis_is_tried_again_after_a_second_then_counts_again(server):
    counters = Counters(server.url, timeout=0.2)
    server.stop()
    assert counters.hit(THREE_A_MINUTE, "user-1", "reserve")  # in memory
    server.start()

    assert counters.hit(THREE_A_MINUTE, "user-1", "reserve")  # memory still: too soon
    assert counted_in_redis(server) == {}
    time.sleep(1.1)
    assert counters.hit(THREE_A_MINUTE, "user-1", "reserve")

    assert counted_in_redis(server) == {"LIMITS:LIMITER/fc:rl/user-1/reserve/3/1/minute": 1}


def test_each_failed_retry_doubles_the_wait(server, monkeypatch):
    clock = SimpleNamespace(monotonic=lambda: now, time=time.time)
    monkeypatch.setattr(limit_counters, "time", clock)
    counters = Counters(server.url, timeout=0.2)
    server.stop()
    now = 1000.0
    for wait in (1, 2, 4, 8):  # each try fails: the next one after `wait`
        counters.hit(THREE_A_MINUTE, "user-1", "reserve")
        now += wait
    server.start()

    now -= 0.1
    counters.hit(THREE_A_MINUTE, "user-1", "reserve")
    assert counted_in_redis(server) == {}
    now += 0.1
    counters.hit(THREE_A_MINUTE, "user-1", "reserve")
    assert counted_in_redis(server) == {"LIMITS:LIMITER/fc:rl/user-1/reserve/3/1/minute": 1}


def test_requests_in_flight_when_redis_goes_away_wait_one_second_not_one_each(server):
    counters = Counters(server.url, timeout=0.2)
    server.stop()
    threads = 8
    together = threading.Barrier(threads)

    def hit():
        together.wait()
        counters.hit(THREE_A_MINUTE, "user-1", "reserve")

    workers = [threading.Thread(target=hit) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    server.start()
    time.sleep(1.1)

    counters.hit(THREE_A_MINUTE, "user-2", "reserve")
    assert counted_in_redis(server) == {"LIMITS:LIMITER/fc:rl/user-2/reserve/3/1/minute": 1}
