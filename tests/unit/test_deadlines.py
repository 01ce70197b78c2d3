"""A request's time bound (flashcart/deadlines.py)."""

import time

import pytest

from flashcart import deadlines


def test_there_is_no_bound_outside_a_request():
    deadlines.check()  # the sweeper, the CLI: no bound


def test_the_bound_holds_inside_and_ends_with_the_block():
    with deadlines.within(0.05):
        deadlines.check()
        time.sleep(0.06)
        with pytest.raises(deadlines.DeadlinePassed):
            deadlines.check()
    deadlines.check()


def test_an_inner_bound_never_outlasts_the_outer_one():
    with deadlines.within(0.05), deadlines.within(10):
        time.sleep(0.06)
        with pytest.raises(deadlines.DeadlinePassed):
            deadlines.check()
