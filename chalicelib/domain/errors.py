"""Errors the control plane raises on purpose (domain, service, adapters); the API turns each into a 4xx.

Every error carries a stable machine ``code`` and a ``message`` a person can act
on. Nothing here knows about HTTP except the status each class maps to.
"""

from __future__ import annotations

__all__ = [
    "SkymeshError",
    "InvalidInputError",
    "UnauthorizedError",
    "ForbiddenError",
    "NotFoundError",
    "ConflictError",
    "UnavailableError",
]


class SkymeshError(Exception):
    """Base of every error the control plane raises on purpose."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInputError(SkymeshError):
    status = 400
    code = "invalid_input"


class UnauthorizedError(SkymeshError):
    status = 401
    code = "unauthorized"


class ForbiddenError(SkymeshError):
    status = 403
    code = "forbidden"


class NotFoundError(SkymeshError):
    status = 404
    code = "not_found"


class ConflictError(SkymeshError):
    status = 409
    code = "conflict"


class UnavailableError(SkymeshError):
    """A dependency (database, broker, AWS) did not answer; the caller may retry."""

    status = 503
    code = "unavailable"
