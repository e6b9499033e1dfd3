"""Option values of the admin CLI (``type=`` functions for argparse): durations, times, counts.

Each raises ``argparse.ArgumentTypeError`` with a message saying what a good value looks
like; argparse prints it as a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re

__all__ = ["count", "parse_duration", "parse_time"]

_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """Seconds in ``90s``, ``30m``, ``1h``, ``7d``, ``2w`` or a sum such as ``1h30m`` (> 0).

    Raises ``argparse.ArgumentTypeError`` (a ``ValueError``'s sibling argparse reports) otherwise.
    """
    s = text.strip().lower()
    parts = _DURATION_PART.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number and a unit s, m, h, d or w, e.g. 1h, 7d, 1h30m")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be longer than zero")
    return seconds


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time with its offset (``2030-01-01T00:00:00Z``) as an aware datetime."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time such as 2030-01-01T00:00:00Z") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add Z or an offset like +02:00")
    return when


def count(text: str) -> int:
    """A whole number >= 0 (the API checks the range that makes sense for each field)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value
