"""Bench time limits nest: an inner limit stops its block and hands the enclosing limit its clock back."""

import signal
import time

import pytest

from newbie.bench.time_limit import time_limit


class Inner(TimeoutError):
    pass


def test_an_inner_limit_stops_its_block_and_the_outer_one_still_fires():
    t = time.perf_counter()
    with pytest.raises(TimeoutError, match="outer"):
        with time_limit(1.0, message="outer"):
            with pytest.raises(Inner):
                with time_limit(0.2, Inner):
                    time.sleep(30)
            assert 0.1 < signal.getitimer(signal.ITIMER_REAL)[0] < 0.9  # what the outer limit had left
            time.sleep(30)
    assert 0.9 < time.perf_counter() - t < 5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_an_inner_limit_longer_than_the_outer_leaves_it_in_charge():
    with pytest.raises(TimeoutError, match="outer"):
        with time_limit(0.2, message="outer"):
            with time_limit(60, Inner):
                time.sleep(30)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_block_that_ends_in_time_raises_nothing():
    with time_limit(5):
        with time_limit(2):
            pass
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 4
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
