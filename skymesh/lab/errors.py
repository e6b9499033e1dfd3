"""The lab's errors: :class:`LabError` says what could not be done and why; :class:`LabTimeout`
names what a bounded wait was waiting for."""

from __future__ import annotations

__all__ = ["LabError", "LabTimeout"]


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says what and why."""


class LabTimeout(LabError):
    """A bounded wait ran out; the message names what was awaited."""

