"""Writes that hold under concurrency, and what their failures mean.

A transaction (:class:`Tx`) names, for each of its operations, the error that the
operation's failed condition stands for: a cancelled transaction raises exactly that
error, never a database code. Anything else the database says becomes
:class:`~chalicelib.errors.UnavailableError` (the caller may retry) or, for a conflict
with a concurrent transaction, :class:`~chalicelib.service.ports.StaleWriteError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError
from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from ...errors import UnavailableError
from ...service.ports import StaleWriteError

__all__ = ["ErrorFactory", "Tx", "transact", "guard", "guard_update", "stale", "condition_failed"]

T = TypeVar("T")
ErrorFactory = Callable[[], Exception]


class Tx:
    """A TransactWrite that remembers, for each operation, the error its failed condition means.

    PynamoDB sends condition checks, then deletes, puts and updates; DynamoDB's
    cancellation reasons come back in that wire order.
    """

    _ORDER = ("check", "delete", "put", "update")

    def __init__(self, tw: TransactWrite) -> None:
        self._tw = tw
        self._errors: dict[str, list[ErrorFactory]] = {k: [] for k in self._ORDER}

    def check(self, cls: Any, pk: str, sk: str, *, condition: Any, on_fail: ErrorFactory) -> None:
        self._tw.condition_check(cls, pk, sk, condition=condition)
        self._errors["check"].append(on_fail)

    def delete(self, item: Any, condition: Any = None, *, on_fail: ErrorFactory) -> None:
        self._tw.delete(item, condition=condition)
        self._errors["delete"].append(on_fail)

    def put(self, item: Any, condition: Any = None, *, on_fail: ErrorFactory) -> None:
        self._tw.save(item, condition=condition)
        self._errors["put"].append(on_fail)

    def update(self, item: Any, actions: list, condition: Any = None, *, on_fail: ErrorFactory) -> None:
        self._tw.update(item, actions=actions, condition=condition)
        self._errors["update"].append(on_fail)

    def commit(self) -> None:
        self._tw._commit()

    def errors_in_wire_order(self) -> list[ErrorFactory]:
        return [e for k in self._ORDER for e in self._errors[k]]


def stale(message: str) -> ErrorFactory:
    """The error of a condition that only a concurrent writer can make fail: retry."""
    return lambda: StaleWriteError(message)


def _error_code(e: PynamoDBException) -> str | None:
    """The DynamoDB error code, None when there was no answer (a timeout, a reset).

    PynamoDB's own ``cause_response_code`` raises AttributeError in that case.
    """
    response = getattr(e.cause, "response", None) or {}
    return response.get("Error", {}).get("Code")


def _error_message(e: PynamoDBException) -> str | None:
    response = getattr(e.cause, "response", None) or {}
    return response.get("Error", {}).get("Message")


def condition_failed(e: PynamoDBException) -> bool:
    """Whether a single-item write failed its condition (and not the database)."""
    return _error_code(e) == "ConditionalCheckFailedException"


def transact(connection: Connection, build: Callable[[Tx], None]) -> None:
    """Run one transaction; a failed condition raises the error its operation names."""
    tx = Tx(TransactWrite(connection=connection))
    try:
        build(tx)
        tx.commit()
    except TransactWriteError as e:
        reasons = e.cancellation_reasons or []
        for reason, make_error in zip(reasons, tx.errors_in_wire_order(), strict=False):
            if reason is not None and reason.code == "ConditionalCheckFailed":
                raise make_error() from None
        codes = {r.code for r in reasons if r is not None}
        if "TransactionConflict" in codes or _error_code(e) in (
            "TransactionConflictException",
            "TransactionInProgressException",
        ):
            raise StaleWriteError("a concurrent change touched the same records; retry") from None
        raise UnavailableError(f"the database refused the write: {_error_message(e) or e}") from None
    except BotoCoreError as e:
        raise UnavailableError(f"the database did not answer: {e}") from None


def guard(fn: Callable[[], T]) -> T:
    """``fn()``, with any database failure turned into :class:`UnavailableError`."""
    try:
        return fn()
    except (PynamoDBException, BotoCoreError) as e:
        raise UnavailableError(f"the database did not answer: {e}") from None


def guard_update(item: Any, actions: list, condition: Any, on_condition: Exception | None) -> bool:
    """Update one item under ``condition``; ``False`` when the condition fails, unless
    ``on_condition`` is given: then that error is raised."""
    try:
        item.update(actions=actions, condition=condition)
        return True
    except UpdateError as e:
        if condition_failed(e):
            if on_condition is not None:
                raise on_condition from None
            return False
        raise UnavailableError(f"the database refused the write: {e}") from None
    except BotoCoreError as e:
        raise UnavailableError(f"the database did not answer: {e}") from None
