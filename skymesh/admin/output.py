"""What the admin CLI prints for people: aligned tables and fields, relative times, sizes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

__all__ = ["dash", "format_fields", "format_table", "human_bytes", "human_duration", "parse_api_time",
           "relative_time"]


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], gap: int = 3) -> str:
    """Left-aligned columns as wide as their widest cell, ``gap`` spaces apart; no trailing blanks."""
    cells = [list(headers)] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [(" " * gap).join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    return "\n".join(lines)


def format_fields(pairs: Sequence[tuple[str, object]]) -> str:
    """``Label:  value`` lines with the values aligned."""
    width = max(len(k) for k, _ in pairs) + 1
    return "\n".join(f"{(k + ':').ljust(width)}  {'' if v is None else v}".rstrip() for k, v in pairs)


def human_duration(seconds: float) -> str:
    """``45s``, ``12m``, ``5h``, ``3d``: the largest unit that fits, rounded down."""
    s = int(abs(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def parse_api_time(value: str | None) -> dt.datetime | None:
    """A timestamp from the API (RFC 3339, ``Z`` or offset) or ``None``."""
    if not value:
        return None
    when = dt.datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def relative_time(value: str | dt.datetime | None, now: dt.datetime, *, never: str = "never") -> str:
    """``2m ago``, ``in 6d``, ``just now``, or ``never`` for ``None``."""
    when = parse_api_time(value) if isinstance(value, str) or value is None else value
    if when is None:
        return never
    delta = (now - when).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"{human_duration(delta)} ago" if delta > 0 else f"in {human_duration(delta)}"


def human_bytes(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def dash(values: Iterable[str]) -> str:
    """The values comma-separated, ``-`` when there are none."""
    joined = ",".join(values)
    return joined or "-"
