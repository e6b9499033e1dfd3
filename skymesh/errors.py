"""The base error of skymesh's command-line tools and of the API client they share.

A :class:`CliError` is an expected failure: a command prints ``error: <message>`` (and
``hint: <hint>`` when there is one) on stderr, no traceback, and exits with ``exit_code``.
The client's :class:`~skymesh.client.ApiError` (the API said no) and
:class:`~skymesh.client.Unreachable` (no answer) are kinds of it, so every caller that
shows errors to a person handles them in one place.
"""

from __future__ import annotations

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_UNREACHABLE", "CliError"]

EXIT_OK, EXIT_ERROR, EXIT_UNREACHABLE = 0, 1, 2


class CliError(Exception):
    """An expected failure: printed as ``error: <message>`` (plus an optional hint), no traceback."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint
