"""The agent's timers: each periodic or deferred job is a :class:`Task` on one :class:`Timers` list.

The run loop waits for the next event or the earliest due task, whichever comes first,
then runs every task that is due, in the order they were added. A job that retries
after a failure carries its :class:`Backoff`; a new periodic job (a probe) is one more
``timers.add(...)``. Times are ``time.monotonic()`` seconds passed in by the caller, so
the schedule itself reads no clock.

>>> import random
>>> timers = Timers()
>>> ran = []
>>> tick = timers.add(Task("tick", lambda: ran.append("tick"), due=0.0))
>>> timers.run_due(now=1.0); ran
['tick']
>>> timers.wait(now=1.0, most=1.0)  # the task is still due: it reschedules itself when it runs
0.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

__all__ = ["Backoff", "Task", "Timers"]


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential backoff: waits ``uniform(d/2, d)``, ``d`` doubling from ``first`` to ``most``."""

    first: float
    most: float


class Task:
    """One job of the loop: its name, when it is next due (``None``: not scheduled) and how it retries.

    ``wall`` is the same due time in unix time when the caller wants to show it (set by
    :meth:`retry` given ``wall_now``), ``None`` otherwise.
    """

    def __init__(self, name: str, run: Callable[[], object], *, due: float | None = None,
                 backoff: Backoff | None = None) -> None:
        self.name = name
        self.run = run
        self.due = due
        self.wall: float | None = None
        self.backoff = backoff
        self._step = backoff.first if backoff is not None else 0.0  # the next retry's d

    def __repr__(self) -> str:
        return f"Task({self.name!r}, due={self.due!r})"

    @property
    def pending(self) -> bool:
        return self.due is not None

    def is_due(self, now: float) -> bool:
        return self.due is not None and now >= self.due

    def at(self, when: float) -> None:
        """Run at ``when`` (replacing any earlier schedule)."""
        self.due, self.wall = when, None

    def no_later_than(self, when: float) -> None:
        """Run at ``when`` unless already due sooner."""
        if self.due is None or when < self.due:
            self.at(when)

    def cancel(self) -> None:
        self.due, self.wall = None, None

    def reset_backoff(self) -> None:
        """The next :meth:`retry` waits the shortest again."""
        if self.backoff is not None:
            self._step = self.backoff.first

    def succeeded(self) -> None:
        """Done: nothing scheduled, and the backoff starts afresh."""
        self.cancel()
        self.reset_backoff()

    def retry(self, now: float, rng: random.Random, *, slow: bool = False, wall_now: float | None = None,
              ) -> float:
        """Schedule the next try after a failure; return its bound ``d`` (the wait is ``uniform(d/2, d)``).

        Each failure doubles ``d`` up to ``backoff.most``; ``slow`` waits the longest at once
        (the answer will not change soon) and still doubles the next step.
        """
        if self.backoff is None:
            raise ValueError(f"task {self.name!r} has no backoff to retry with")
        delay = self.backoff.most if slow else self._step
        self._step = min(self._step * 2, self.backoff.most)
        wait = rng.uniform(delay / 2, delay)
        self.due = now + wait
        self.wall = None if wall_now is None else wall_now + wait
        return delay


class Timers:
    """The loop's tasks, run in the order they were added."""

    def __init__(self) -> None:
        self._tasks: list[Task] = []

    def add(self, task: Task) -> Task:
        if any(t.name == task.name for t in self._tasks):
            raise ValueError(f"a task named {task.name!r} is already on the list")
        self._tasks.append(task)
        return task

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __getitem__(self, name: str) -> Task:
        for t in self._tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def run_due(self, now: float) -> None:
        """Run each task due at ``now``, checked when its turn comes (an earlier one may have moved it)."""
        for task in self._tasks:
            if task.is_due(now):
                task.run()

    def wait(self, now: float, most: float) -> float:
        """How long the loop may wait for an event before a task is due: between 0 and ``most``."""
        due = [t.due for t in self._tasks if t.due is not None]
        return min(most, max(0.0, min(due) - now)) if due else most
