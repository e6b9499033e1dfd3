"""Issue 8 §5: the agent's periodic and deferred jobs are one list of tasks the loop runs.

A new job (the routing issue's probes) is one more task on ``Agent.timers``: the loop
wakes for it and runs it when due, after the agent's own jobs of that step.
"""

from __future__ import annotations

import random
import time

import pytest

from agent.timers import Backoff, Task, Timers

from .test_agent_runner import ScriptedApi, make_agent, member, snapshot


def test_a_task_added_to_the_agent_runs_when_due_and_the_loop_wakes_for_it(tmp_path):
    agent, _, _ = make_agent(tmp_path, ScriptedApi([snapshot(7, [member(1), member(2)])]))
    agent.boot()
    agent.step(timeout=0)  # the agent's own first status check
    ran: list[str] = []
    probe = agent.timers.add(Task("probe", lambda: (ran.append("probe"), probe.at(time.monotonic() + 30))))
    probe.at(time.monotonic() + 0.2)
    assert agent._next_timer() <= 0.2  # the loop waits no longer than the probe allows
    agent.step(timeout=0)
    assert ran == []  # not yet due
    agent.step(timeout=agent._next_timer() + 0.05)
    assert ran == ["probe"]
    agent.step(timeout=0)
    assert ran == ["probe"]  # rescheduled by itself, 30 s on


def test_a_retry_doubles_its_jittered_wait_up_to_the_cap_and_starts_afresh_after_success():
    task = Task("resync", lambda: None, backoff=Backoff(first=1.0, most=8.0))
    rng = random.Random(7)
    bounds, waits = [], []
    for _ in range(6):
        bounds.append(task.retry(100.0, rng))
        assert task.due is not None
        waits.append(task.due - 100.0)
    assert bounds == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert all(d / 2 <= w <= d for d, w in zip(bounds, waits, strict=True))
    assert task.retry(100.0, rng, slow=True) == 8.0  # the longest wait at once
    task.succeeded()
    assert task.due is None and task.retry(100.0, rng) == 1.0


def test_the_wall_clock_time_of_a_retry_is_kept_for_status_and_cleared_with_it():
    task = Task("subscribe", lambda: None, backoff=Backoff(first=2.0, most=60.0))
    task.retry(50.0, random.Random(1), wall_now=1_700_000_000.0)
    assert task.wall is not None and task.due is not None
    assert task.wall - 1_700_000_000.0 == pytest.approx(task.due - 50.0)
    task.cancel()
    assert task.wall is None and task.due is None


def test_tasks_run_in_the_order_they_were_added_and_one_may_move_a_later_one():
    timers, ran = Timers(), []
    second = Task("second", lambda: ran.append("second"), due=5.0)
    timers.add(Task("first", lambda: (ran.append("first"), second.at(99.0)), due=1.0))
    timers.add(second)
    timers.run_due(now=10.0)
    assert ran == ["first"]  # "second" was moved before its turn came
    assert timers.wait(now=10.0, most=1.0) == 0.0  # "first" is still due (it did not reschedule)
    assert Timers().wait(now=10.0, most=1.0) == 1.0
