"""The update stream's records: the publish lease, pending changes, ``seq`` and the delta log.

Writers of :mod:`.hosts` and :mod:`.networks` put the pending change they are
given (``PEND#<created ns>-<nonce>`` under the network) in the transaction of the
change itself; what follows here is used by :mod:`chalicelib.service.stream` to turn
them into broadcasts: one holder of a network's lease (on the network item, with an
expiry) advances ``seq`` (only while it holds the lease), reads the members the
changes name, logs the delta (``DELTA#<seq>``, the last few per network, for agents
that catch up) and clears what it sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from pynamodb.exceptions import UpdateError

from ...domain.changes import ChangeId, PendingChange
from ...domain.ids import HostId, NetworkId
from ...domain.models import Member, Network
from ...service.ports import StaleWriteError
from . import layout, mapping
from .base import StoreBase
from .tx import condition_failed, guard, guard_update

__all__ = ["StreamRecords"]


class StreamRecords(StoreBase):
    # ------------------------------------------------------------- publish lease
    def acquire_publish_lease(self, network_id: str, owner: str, now: int, ttl: int) -> bool:
        net = self._items.network
        return guard_update(
            net(layout.network_pk(network_id), layout.META),
            [net.lease_owner.set(owner), net.lease_until.set(now + ttl)],
            net.pk.exists() & (net.lease_until.does_not_exist() | (net.lease_until < now)),
            None,
        )

    def release_publish_lease(self, network_id: str, owner: str) -> None:
        net = self._items.network
        guard_update(
            net(layout.network_pk(network_id), layout.META),
            [net.lease_owner.remove(), net.lease_until.remove()],
            net.lease_owner == owner,
            None,
        )

    # ----------------------------------------------------------- pending changes
    def pending_changes(self, network_id: str, limit: int | None = None) -> list[PendingChange]:
        items = self._query(self._items.pending, layout.network_pk(network_id), layout.PENDING_PREFIX,
                            limit=limit)
        return [mapping.pending_change(network_id, i) for i in items]

    def clear_pending(self, network_id: str, change_ids: Sequence[ChangeId]) -> None:
        self._delete_raw((layout.network_pk(network_id), layout.change_sk(cid)) for cid in change_ids)

    def networks_with_pending(self) -> list[NetworkId]:
        return sorted({NetworkId(i.network_id) for i in self._by_kind(self._items.pending, "pending")})

    def network_head(self, network_id: str) -> tuple[Network, bool] | None:
        net = self._items.network
        # One read: ``META`` and the pending changes (``PEND#…``) sort next to each other in the
        # network's partition (no sort key starts with N or O), so the first two items from
        # ``META`` on are the record and, if there is one, the oldest pending change.
        items = guard(lambda: list(net.query(layout.network_pk(network_id), net.sk >= layout.META,
                                             consistent_read=True, limit=2)))
        if not items or items[0].sk != layout.META:
            return None
        return mapping.network(items[0]), any(i.sk.startswith(layout.PENDING_PREFIX) for i in items[1:])

    # ------------------------------------------------------- what is broadcast
    def advance_seq(self, network_id: str, owner: str, now: int, ttl: int) -> Network:
        net = self._items.network
        item = net(layout.network_pk(network_id), layout.META)

        def run() -> Network:
            try:
                item.update(actions=[net.seq.add(1), net.lease_until.set(now + ttl)],
                            condition=net.lease_owner == owner)
            except UpdateError as e:
                if condition_failed(e):
                    raise StaleWriteError("the publish lease was lost") from None
                raise
            return mapping.network(item)

        return guard(run)

    def members(self, network_id: str, host_ids: Sequence[str]) -> dict[HostId, Member]:
        m = self._items.member
        pk = layout.network_pk(network_id)
        keys = [(pk, layout.member_sk(h)) for h in dict.fromkeys(host_ids)]
        items = guard(lambda: list(m.batch_get(keys, consistent_read=True)))
        return {HostId(i.host_id): mapping.member(network_id, i) for i in items}

    # --------------------------------------------------------------- delta log
    def log_delta(self, network_id: str, seq: int, payload: bytes, *, expires_at: int, keep: int) -> None:
        d, pk = self._items.delta, layout.network_pk(network_id)

        def run() -> None:
            with d.batch_write() as batch:
                batch.save(d(pk, layout.delta_sk(seq), payload=payload.decode(), expires_at=expires_at))
                if seq - keep > 0:
                    batch.delete(d(pk, layout.delta_sk(seq - keep)))

        guard(run)

    def deltas_since(self, network_id: str, seq: int, limit: int) -> list[tuple[int, bytes]]:
        d = self._items.delta
        after = d.sk.between(layout.delta_sk(seq + 1), layout.delta_sk(10**12 - 1))
        items = guard(lambda: list(d.query(layout.network_pk(network_id), after,
                                           consistent_read=True, limit=limit)))
        return [(int(i.sk.removeprefix(layout.DELTA_PREFIX)), i.payload.encode()) for i in items]
