"""The system clock the service is given (tests give their own)."""

from __future__ import annotations

import threading
import time

__all__ = ["SystemClock", "process_ns"]

_lock = threading.Lock()
_last_ns = 0


def process_ns() -> int:
    """Nanoseconds since the epoch that never repeat nor go backwards within this process.

    The wall clock, except that each call returns more than the one before: a wall clock
    stepped back (NTP) cannot put a change made later before one made earlier, and two
    changes of one process never share a time. Across processes (Lambdas on other
    machines) it is as close as their wall clocks are, which is all pending changes
    need: they are broadcast oldest first, and a caller's cut-off always includes its
    own change (see :mod:`chalicelib.service.stream`).
    """
    global _last_ns
    with _lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return _last_ns


class SystemClock:
    def now(self) -> int:
        return int(time.time())

    def now_ns(self) -> int:
        return process_ns()
