"""`make bench` judges issue 16's goals from what it measured."""

from bench.run import goals


def _http(scenario, connections, ratio, p99_ms):
    return {
        "scenario": scenario,
        "connections": connections,
        "ratio": ratio,
        "result": {"p99_ms": p99_ms},
    }


def _verdicts(report):
    return {goal["goal"]: goal["met"] for goal in goals(report)}


def test_each_scenario_is_judged_against_the_floor_and_its_p99_at_64_connections():
    report = {
        "http": [
            _http("reserve", 64, 0.61, 79.0),
            _http("/healthz", 64, 0.99, 12.0),
            _http("reserve", 256, 0.59, 400.0),
        ]
    }

    assert _verdicts(report) == {
        "reserve at 64 conns >= 0.6x the floor": True,
        "reserve p99 at 64 conns <= 80 ms": True,
        "/healthz at 64 conns >= 1.0x the floor": False,
        "/healthz p99 at 64 conns <= 50 ms": True,
        "reserve at 256 conns >= 0.6x the floor": False,
    }


def test_the_drop_meets_its_goals_only_selling_exactly_the_stock_in_time():
    drop = {
        "units": 1000,
        "users": 20000,
        "reservations": 1000,
        "held_in_redis": 1000,
        "oversold": 0,
        "sold_out_after_s": 0.79,
        "all_answered_after_s": None,
        "seconds": 10,
    }

    assert _verdicts({"drop": drop}) == {
        "drop: sold out in <= 0.8 s": True,
        "drop: all 20,000 answered in <= 7 s": False,
        "drop: exactly the stock sold": True,
    }
    assert goals({"drop": {**drop, "held_in_redis": 1001}})[2]["met"] is False
