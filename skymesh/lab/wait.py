"""The lab's one way to wait: poll a condition until it holds, bounded, saying what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .errors import LabTimeout

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    details: Callable[[], str] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    Raises :class:`LabTimeout` after ``timeout`` seconds with a message naming ``what``
    was awaited, plus ``details()`` (e.g. logs, status) when given. Exceptions of the
    types in ``ignore`` count as "not yet" (the last one is quoted on timeout); any
    other exception propagates at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as e:
            value, last_error = None, e  # type: ignore[assignment]
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            msg = f"timed out after {timeout:g}s waiting for {what}"
            if last_error is not None:
                msg += f" (last error: {type(last_error).__name__}: {last_error})"
            if details is not None:
                try:
                    msg += "\n" + details()
                except Exception as e:  # diagnostics must not hide the timeout
                    msg += f"\n(collecting details failed: {e!r})"
            raise LabTimeout(msg)
        time.sleep(min(interval, remaining))
