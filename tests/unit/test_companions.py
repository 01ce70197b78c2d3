"""The loop `flask sweep --every`, `flask deliver --every` and the embedded threads
share: a failed pass is logged and the next one tried; a single pass raises."""

import logging
import threading

import pymongo.errors
import pytest

from flashcart import companions


def passes(*outcomes):
    """A pass that answers (or raises) each of `outcomes` in turn."""
    queue = list(outcomes)

    def one_pass():
        outcome = queue.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return one_pass


def test_a_loop_outlives_failed_passes_and_logs_them(caplog):
    stop, reports = threading.Event(), []

    def report(done):
        reports.append(done)
        if len(reports) == 2:
            stop.set()

    one_pass = passes(
        {"units_returned": 1},
        pymongo.errors.ConnectionFailure("mongo away"),
        RuntimeError("a bug in one step"),
        {},
    )
    with caplog.at_level(logging.ERROR, logger="flashcart.companions"):
        companions.run(
            "sweep",
            one_pass,
            every=0.01,
            errors=companions.SWEEP_ERRORS,
            report=report,
            stop=stop,
        )

    assert reports == [{"units_returned": 1}, {}]
    store, bug = caplog.records
    assert store.getMessage() == "sweep failed, retrying: mongo away" and not store.exc_info
    assert bug.getMessage() == "sweep failed, retrying" and bug.exc_info[0] is RuntimeError


@pytest.mark.parametrize(
    "error", [pymongo.errors.ConnectionFailure("mongo away"), RuntimeError("a bug")]
)
def test_a_single_pass_raises_its_error(error):
    with pytest.raises(type(error)):
        companions.run(
            "sweep", passes(error), every=None, errors=companions.SWEEP_ERRORS, report=print
        )


def test_the_summary_is_the_commands_line():
    assert companions.summary("deliver", {}) == "deliver: idle"
    assert companions.summary("sweep", {"b": 2, "a": 1}) == "sweep: a=1, b=2"
