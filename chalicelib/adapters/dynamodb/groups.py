"""HA gateway groups (issue 11): the group, its key record and the control plane's voter promise.

Three items in the network's partition (``GROUP#<id>``, ``GKEY#<id>``, ``GVOTE#<id>``), so that
a vote (the promise, written several times a second in a two-member group) never conflicts with
an admin's change of the group, and the key record (sealed copies only) is written on its own
when nothing hosts see changes. Every write is conditional on what the caller read: the group on
its ``revision``, the key record and the promise on their whole stored value (a key record on its
``version`` alone would let two members adding copies at one version both win, losing one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ...domain.changes import PendingChange
from ...domain.election import Promise
from ...domain.groupkey import GroupKeyRecord
from ...domain.models import GatewayGroup
from ...service.ports import KeyWrite, PromiseWrite, check_group_outbox
from . import layout, mapping
from .base import StoreBase
from .hosts import network_gone
from .tx import Tx, guard, stale, transact

__all__ = ["GroupRecords", "check_same_group"]


def check_same_group(old: GatewayGroup, new: GatewayGroup) -> None:
    """Raise :class:`ValueError` unless ``new`` is ``old`` changed (same id and network)."""
    if (old.id, old.network_id) != (new.id, new.network_id):
        raise ValueError(f"an update of group {old.id} keeps its id and network")


class GroupRecords(StoreBase):
    def create_group(self, group: GatewayGroup, *, change: PendingChange) -> None:
        net, g = self._items.network, self._items.group
        check_group_outbox(change, group)
        pk = layout.network_pk(group.network_id)

        def build(tx: Tx) -> None:
            tx.check(net, pk, layout.META, condition=net.pk.exists() & net.deleting.does_not_exist(),
                     on_fail=network_gone(group.network_id))
            tx.put(mapping.group_item(self._items, group), condition=g.pk.does_not_exist(),
                   on_fail=stale("group id collision; retry"))
            self._record_change(tx, change)

        self._transact(build)

    def get_group(self, network_id: str, group_id: str) -> GatewayGroup | None:
        item = self._get(self._items.group, layout.network_pk(network_id), layout.group_sk(group_id))
        return None if item is None else mapping.group(network_id, item)

    def network_groups(self, network_id: str) -> list[GatewayGroup]:
        items = self._query(self._items.group, layout.network_pk(network_id), layout.GROUP_PREFIX)
        return [mapping.group(network_id, i) for i in items]

    def groups(self, network_id: str, group_ids: Sequence[str]) -> dict[str, GatewayGroup]:
        g, pk = self._items.group, layout.network_pk(network_id)
        keys = [(pk, layout.group_sk(i)) for i in dict.fromkeys(group_ids)]
        if not keys:
            return {}
        items = guard(lambda: list(g.batch_get(keys, consistent_read=True)))
        return {i.id: mapping.group(network_id, i) for i in items}

    def update_group(self, old: GatewayGroup, new: GatewayGroup, *, change: PendingChange,
                     key: KeyWrite | None = None) -> None:
        g = self._items.group
        check_same_group(old, new)
        check_group_outbox(change, old)
        stored = new.with_changes(revision=old.revision + 1)

        def build(tx: Tx) -> None:
            tx.put(mapping.group_item(self._items, stored), condition=g.revision == old.revision,
                   on_fail=stale("the group changed meanwhile; retry"))
            if key is not None:
                self._put_key(tx, key)
            self._record_change(tx, change)

        self._transact(build)

    def delete_group(self, group: GatewayGroup, *, change: PendingChange) -> None:
        g, k, v = self._items.group, self._items.group_key, self._items.group_vote
        check_group_outbox(change, group)
        pk = layout.network_pk(group.network_id)

        def build(tx: Tx) -> None:
            tx.delete(g(pk, layout.group_sk(group.id)), condition=g.revision == group.revision,
                      on_fail=stale("the group changed meanwhile; retry"))
            tx.delete(k(pk, layout.group_key_sk(group.id)), on_fail=stale("key record changed; retry"))
            tx.delete(v(pk, layout.group_vote_sk(group.id)), on_fail=stale("promise changed; retry"))
            self._record_change(tx, change)

        self._transact(build)

    # ------------------------------------------------------------------ the key record
    def get_group_key(self, network_id: str, group_id: str) -> GroupKeyRecord | None:
        item = self._get(self._items.group_key, layout.network_pk(network_id), layout.group_key_sk(group_id))
        return None if item is None else GroupKeyRecord.from_item(json.loads(item.record))

    def put_group_key(self, write: KeyWrite) -> None:
        transact(self._connection, lambda tx: self._put_key(tx, write))

    def _put_key(self, tx: Tx, write: KeyWrite) -> None:
        k = self._items.group_key
        if write.old is None:
            condition = k.pk.does_not_exist()
        else:  # docs/ha-groups.md: the version is the condition, and the record as read with it
            condition = (k.version == write.old.version) & (k.record == mapping.group_key_json(write.old))
        tx.put(mapping.group_key_item(self._items, write.new), condition=condition,
               on_fail=stale("the group's key record changed meanwhile; fetch it again"))

    # ------------------------------------------------------------------ the voter promise
    def get_group_promise(self, network_id: str, group_id: str) -> Promise | None:
        pk, sk = layout.network_pk(network_id), layout.group_vote_sk(group_id)
        item = self._get(self._items.group_vote, pk, sk)
        return None if item is None else mapping.promise(item.promise)

    def put_group_promise(self, network_id: str, group_id: str, write: PromiseWrite) -> None:
        transact(self._connection, lambda tx: self._put_promise(tx, network_id, group_id, write))

    def _put_promise(self, tx: Tx, network_id: str, group_id: str, write: PromiseWrite) -> None:
        v = self._items.group_vote
        condition = (v.pk.does_not_exist() if write.old is None
                     else v.promise == mapping.promise_json(write.old))
        tx.put(v(layout.network_pk(network_id), layout.group_vote_sk(group_id),
                 promise=mapping.promise_json(write.new)),
               condition=condition, on_fail=stale("a concurrent vote changed the promise; vote again"))
