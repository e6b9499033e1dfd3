"""``python -m skymesh.local.scheduler``: run the app's ``@app.schedule`` functions at their rate.

The stand-in for EventBridge: reads ``app.event_sources`` (``ScheduledEventConfig``),
and calls each handler with a CloudWatch-like scheduled event and context
``None``, first one period after start (as a new rule does), then every period.
Each schedule has its own thread, so a slow one delays no other; a run that
overruns its period is followed at once by the next (no pile-up). Only
``rate(...)`` expressions are supported; ``cron(...)`` ones are reported and skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalice.app import ScheduledEventConfig

from .appload import handler_for, load_app

__all__ = ["Schedule", "parse_rate", "scheduled_event", "schedules_of", "Scheduler", "main"]

log = logging.getLogger("local-scheduler")  # not under "skymesh": the app's logger

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}


def parse_rate(expression: str) -> float:
    """Seconds between runs of an EventBridge ``rate(N unit)``; ``ValueError`` otherwise."""
    m = _RATE.match(expression.strip())
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"not a rate expression: {expression!r}")
    return int(m.group(1)) * _UNIT[m.group(2).rstrip("s")]


def scheduled_event(rule: str, region: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """The event EventBridge sends a Lambda for a scheduled rule."""
    t = now or dt.datetime.now(dt.UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:000000000000:rule/{rule}"],
        "detail": {},
    }


@dataclass(frozen=True)
class Schedule:
    name: str
    period: float
    handler: Callable[[dict[str, Any], Any], Any]


def schedules_of(module: Any, app: Any, every: float | None = None) -> list[Schedule]:
    """The app's rate schedules (``every`` overrides every period, e.g. for demos)."""
    out = []
    for source in app.event_sources:
        if not isinstance(source, ScheduledEventConfig):
            continue
        expr = source.schedule_expression
        text = expr if isinstance(expr, str) else expr.to_string()
        try:
            period = parse_rate(text)
        except ValueError:
            log.warning("schedule %s: %s is not supported locally (only rate(...)); skipped",
                        source.name, text)
            continue
        out.append(Schedule(source.name, every or period, handler_for(module, source.handler_string)))
    return out


class Scheduler:
    """Runs schedules on their own threads until :meth:`stop`."""

    def __init__(self, schedules: list[Schedule], region: str, run_now: bool = False) -> None:
        self._schedules = schedules
        self._region = region
        self._run_now = run_now
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for s in self._schedules:
            t = threading.Thread(target=self._loop, args=(s,), name=f"schedule-{s.name}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop scheduling; wait up to ``timeout`` s in all for runs in progress."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def run_once(self, s: Schedule) -> None:
        started = time.monotonic()
        try:
            result = s.handler(scheduled_event(s.name, self._region), None)
        except Exception:
            log.exception("schedule %s failed", s.name)
            return
        log.info("schedule %s ran in %.0f ms: %.200s", s.name,
                 (time.monotonic() - started) * 1000, result)

    def _loop(self, s: Schedule) -> None:
        next_run = time.monotonic() + (0.0 if self._run_now else s.period)
        while not self._stop.wait(max(0.0, next_run - time.monotonic())):
            self.run_once(s)
            next_run = max(next_run + s.period, time.monotonic())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m skymesh.local.scheduler")
    p.add_argument("--every", type=float, default=None,
                   help="run every schedule at this period (seconds) instead of its rate")
    p.add_argument("--run-now", action="store_true", help="first runs at start")
    p.add_argument("--app-module", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("botocore", "pynamodb", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    module, app = load_app(args.app_module)
    schedules = schedules_of(module, app, args.every)
    scheduler = Scheduler(schedules, os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                          run_now=args.run_now)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    scheduler.start()
    log.info("ready: %s", ", ".join(f"{s.name} every {s.period:g}s" for s in schedules) or "none")
    while not done.wait(3600):
        pass
    scheduler.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
