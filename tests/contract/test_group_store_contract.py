"""The ``Store`` port's contract for HA gateway groups (issue 11), on DynamoDB Local and in memory.

A group, its key record and the control plane's voter promise: every write conditional on what
the caller read (the group's revision, the key record and the promise as a whole), all or nothing,
and every change of the group recorded for one broadcast.
"""

from __future__ import annotations

import base64
import os
from dataclasses import replace

import pytest

from chalicelib import wgkeys
from chalicelib.domain.changes import PendingChange
from chalicelib.domain.election import Promise
from chalicelib.domain.groupkey import SEALED_SIZE, SUITE, GroupKeyRecord, SealedEntry
from chalicelib.domain.ids import GroupId, HostId, NetworkId
from chalicelib.domain.models import GatewayGroup, Network
from chalicelib.service.ports import KeyWrite, NetworkGoneError, PromiseWrite, StaleWriteError, Store

from .conftest import Backend
from .test_store_contract import NET, _change_id, _settle

GID = GroupId("grp_edge0001")
A, B = HostId("host_a0001"), HostId("host_b0001")


@pytest.fixture
def store(backend: Backend) -> Store:
    store = backend.store
    store.create_network(Network(NET, "n", "100.64.0.0/24", "fd00:64::/64"), store.network_registry().version)
    return store


def _group(**kw: object) -> GatewayGroup:
    return replace(GatewayGroup(GID, NET, "edge", (A, B), "198.18.9.1:51900", created_at=5), **kw)


def _change(group: GatewayGroup) -> PendingChange:
    return PendingChange(_change_id(), group.network_id, group_ids=(group.id,))


def _record(version: int, *recipients: HostId) -> GroupKeyRecord:
    sender = wgkeys.new_key_pair().public_key
    entries = tuple(SealedEntry(r, wgkeys.new_key_pair().public_key, A, sender,
                                base64.b64encode(bytes([SUITE]) + os.urandom(SEALED_SIZE - 1)).decode())
                    for r in recipients)
    return GroupKeyRecord(NET, GID, wgkeys.new_key_pair().public_key, version, entries)


def test_a_group_is_stored_read_listed_and_its_change_recorded(store: Store) -> None:
    _settle(store)
    second = _group(id=GroupId("grp_abc00001"), members=(B,), public_key="K" * 43 + "=", key_version=1,
                    active=B, epoch=3, key_rotation=2, revision=4)
    for g in (_group(), second):
        store.create_group(g, change=_change(g))
    assert store.get_group(NET, GID) == _group()
    assert store.get_group(NET, "grp_none0001") is None and store.get_group("net_missing", GID) is None
    assert store.network_groups(NET) == [second, _group()]
    assert store.groups(NET, [GID, "grp_none0001", GID]) == {GID: _group()}
    assert store.groups(NET, []) == {}
    assert [p.group_ids for p in store.pending_changes(NET)] == [(GID,), (second.id,)]


def test_a_group_is_not_created_twice_nor_in_a_network_being_deleted(backend: Backend,
                                                                    store: Store) -> None:
    store.create_group(_group(), change=_change(_group()))
    before = backend.contents()
    with pytest.raises(StaleWriteError):
        store.create_group(_group(name="other"), change=_change(_group()))
    assert backend.contents() == before
    store.mark_network_deleting(NET)
    other = _group(id=GroupId("grp_other001"))
    with pytest.raises(NetworkGoneError):
        store.create_group(other, change=_change(other))
    with pytest.raises(NetworkGoneError):
        missing = replace(other, network_id=NetworkId("net_missing"))
        store.create_group(missing, change=_change(missing))


def test_an_update_holds_only_on_the_revision_read_and_writes_the_key_with_it(
        backend: Backend, store: Store) -> None:
    store.create_group(_group(), change=_change(_group()))
    key = _record(1, A, B)
    keyed = _group(public_key=key.public_key, key_version=1)
    store.update_group(_group(), keyed, change=_change(keyed), key=KeyWrite(None, key))
    assert store.get_group(NET, GID) == replace(keyed, revision=1)
    assert store.get_group_key(NET, GID) == key
    before = backend.contents()
    with pytest.raises(StaleWriteError):  # an update from the revision before
        store.update_group(_group(), _group(name="late"), change=_change(keyed))
    with pytest.raises(StaleWriteError):  # the group is current, but the key record is not what was read
        store.update_group(replace(keyed, revision=1), keyed, change=_change(keyed),
                           key=KeyWrite(None, _record(1, A)))
    assert backend.contents() == before, "a refused write changes nothing"
    won = replace(keyed, active=B, epoch=2)
    store.update_group(replace(keyed, revision=1), won, change=_change(won))
    assert store.get_group(NET, GID) == replace(won, revision=2)


def test_a_key_record_is_replaced_only_from_the_record_read(backend: Backend, store: Store) -> None:
    store.create_group(_group(), change=_change(_group()))
    first = _record(1, A)
    store.put_group_key(KeyWrite(None, first))
    before = backend.contents()
    for stale in (None, _record(1, A), replace(first, entries=first.entries[:0])):
        with pytest.raises(StaleWriteError):
            store.put_group_key(KeyWrite(stale, _record(1, A, B)))
    assert backend.contents() == before
    more = replace(first, entries=first.entries + _record(1, B).entries)
    store.put_group_key(KeyWrite(first, more))
    assert store.get_group_key(NET, GID) == more
    with pytest.raises(StaleWriteError):  # a second writer that read ``first`` too loses
        store.put_group_key(KeyWrite(first, replace(first, entries=first.entries + _record(1, B).entries)))
    rotated = _record(2, A, B)
    store.put_group_key(KeyWrite(more, rotated))
    assert store.get_group_key(NET, GID) == rotated


def test_a_promise_is_replaced_only_from_the_promise_read(backend: Backend, store: Store) -> None:
    store.create_group(_group(), change=_change(_group()))
    assert store.get_group_promise(NET, GID) is None
    first = Promise(A, 1, 1_700_000_000.25)
    store.put_group_promise(NET, GID, PromiseWrite(None, first))
    before = backend.contents()
    with pytest.raises(StaleWriteError):  # two voters that both read "no promise": one wins
        store.put_group_promise(NET, GID, PromiseWrite(None, Promise(B, 1, 1_700_000_000.5)))
    with pytest.raises(StaleWriteError):
        store.put_group_promise(NET, GID, PromiseWrite(replace(first, until=1.0), Promise(B, 2, 2.0)))
    assert backend.contents() == before
    store.put_group_promise(NET, GID, PromiseWrite(first, Promise(A, 1, 1_700_000_001.75)))
    assert store.get_group_promise(NET, GID) == Promise(A, 1, 1_700_000_001.75)


def test_deleting_a_group_takes_its_key_record_and_promise_and_a_deleted_network_leaves_nothing(
        backend: Backend, store: Store) -> None:
    store.create_group(_group(), change=_change(_group()))
    store.put_group_key(KeyWrite(None, _record(1, A)))
    store.put_group_promise(NET, GID, PromiseWrite(None, Promise(A, 1, 5.0)))
    with pytest.raises(StaleWriteError):
        store.delete_group(_group(revision=7), change=_change(_group()))
    store.delete_group(_group(), change=_change(_group()))
    assert store.get_group(NET, GID) is None and store.get_group_key(NET, GID) is None
    assert store.get_group_promise(NET, GID) is None and store.network_groups(NET) == []
    assert store.pending_changes(NET)[-1].group_ids == (GID,)
    store.create_group(_group(), change=_change(_group()))
    store.put_group_key(KeyWrite(None, _record(1, A)))
    _settle(store)
    store.delete_network(NET, store.network_registry().version)
    assert store.get_group(NET, GID) is None and store.get_group_key(NET, GID) is None
    assert backend.leftovers(NET) == []
