"""What every part of :class:`~.store.DynamoStore` shares: the table's item classes, one
connection for transactions, and reads that turn database failures into
:class:`~chalicelib.errors.UnavailableError`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pynamodb.connection import Connection

from ...domain.changes import PendingChange
from ...service.ports import Page
from . import cursor as cursors
from . import layout, mapping
from .items import Items, bind
from .tx import Tx, guard, stale, transact

__all__ = ["StoreBase"]

T = TypeVar("T")


class StoreBase:
    """The table ``table`` at ``endpoint_url`` (``None``: the AWS endpoint of ``region``)."""

    def __init__(self, table: str, *, endpoint_url: str | None, region: str) -> None:
        self._items: Items = bind(table, endpoint_url, region)
        self._connection = Connection(
            region=region,
            host=endpoint_url,
            max_pool_connections=64,
            connect_timeout_seconds=5,
            read_timeout_seconds=10,
        )

    def warm(self) -> None:
        """Make every database client now, in this thread (no request is sent).

        PynamoDB makes a client per item class on first use, in a botocore session per
        thread, without a lock. A server whose first requests come all at once (100
        agents retrying when the local API restarts) had every thread build its own
        clients: minutes of CPU, and the agents' calls timed out meanwhile. One Lambda
        execution serves one request at a time and does not need this.
        """
        for f in dataclasses.fields(self._items):
            cls = getattr(self._items, f.name)
            _ = cls._get_connection().connection.client
        _ = self._connection.client

    def _transact(self, build: Callable[[Tx], None]) -> None:
        transact(self._connection, build)

    def _record_change(self, tx: Tx, change: PendingChange) -> None:
        """Put the write's pending change (its outbox entry) in the write's transaction."""
        pending = self._items.pending
        tx.put(mapping.pending_item(self._items, change), condition=pending.sk.does_not_exist(),
               on_fail=stale("change id collision; retry"))

    @staticmethod
    def _put_new(item: Any) -> None:
        """Store a new record; one already at its key is refused, never overwritten."""
        guard(lambda: item.save(type(item).pk.does_not_exist()))

    def _get(self, cls: Any, pk: str, sk: str) -> Any | None:
        def run() -> Any | None:
            try:
                return cls.get(pk, sk, consistent_read=True)
            except cls.DoesNotExist:
                return None

        return guard(run)

    def _query(self, cls: Any, pk: str, prefix: str, limit: int | None = None) -> list[Any]:
        return guard(lambda: list(cls.query(pk, cls.sk.startswith(prefix), consistent_read=True,
                                            limit=limit)))

    def _by_kind(self, cls: Any, kind: str) -> list[Any]:
        return guard(lambda: list(cls.by_kind.query(kind)))

    @staticmethod
    def _page_by_kind(cls: Any, kind: str, prefix: str, limit: int, cursor: str | None,
                      record: Callable[[Any], T]) -> Page[T]:
        """At most ``limit`` items of ``kind`` after ``cursor``, in ``pk`` order, as records, and
        the next cursor.

        The items' ``pk`` is ``prefix`` + an id of the same kind (``ids.ID_PREFIXES``).

        One item more than asked is read, so the cursor is ``None`` exactly when nothing
        follows (DynamoDB's own LastEvaluatedKey is set whenever a page is full).
        """
        start = None if cursor is None else cursors.decode(cursor, kind, prefix, layout.META)
        items = guard(lambda: list(cls.by_kind.query(kind, limit=limit + 1, last_evaluated_key=start)))
        after = cursors.encode(kind, items[limit - 1].pk, items[limit - 1].sk) if len(items) > limit else None
        return Page(tuple(record(i) for i in items[:limit]), after)

    def _delete_raw(self, keys: Iterable[tuple[str, str]]) -> None:
        """Delete these items, whatever they are (a batch; no conditions)."""
        claim = self._items.claim

        def run() -> None:
            with claim.batch_write() as batch:
                for pk, sk in keys:
                    batch.delete(claim(pk, sk))

        guard(run)
