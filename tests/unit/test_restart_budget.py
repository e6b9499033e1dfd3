"""The supervisor's restart policy (skymesh.local.proc.RestartBudget): backoff, then a limit."""

from __future__ import annotations

from skymesh.local.proc import RestartBudget


def test_restarts_back_off_and_stop_after_the_limit_within_the_window() -> None:
    b = RestartBudget(limit=5, window=300, first_delay=0.5, max_delay=4)
    delays = [b.after_death(t) for t in (0, 1, 2, 3, 4)]
    assert delays == [0.5, 1, 2, 4, 4]  # doubling, capped
    assert b.after_death(5) is None  # the sixth death within 300 s: give up


def test_a_child_that_ran_well_for_a_window_starts_over() -> None:
    b = RestartBudget(limit=2, window=60, first_delay=1, max_delay=30)
    assert [b.after_death(0), b.after_death(10)] == [1, 2]
    assert b.after_death(69) == 2  # the death at 0 left the window, the one at 10 did not
    assert b.after_death(200) == 1
