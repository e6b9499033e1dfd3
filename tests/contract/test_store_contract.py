"""The ``Store`` port's contract: what every store promises, run against each of them.

Each test runs on the DynamoDB store (DynamoDB Local) and on the in-memory store
(see ``conftest.py``). Conditions are raced deterministically: the competing state is
written first, then the write that must be refused; a refused write must say which
condition failed and leave everything as it was.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest

from chalicelib.domain.changes import ChangeId, PendingChange, new_changes
from chalicelib.domain.ids import ClientId, EnrollmentKeyId, HostId, NetworkId, new_id
from chalicelib.domain.models import (
    AdminKey,
    Client,
    EnrollmentKey,
    Gateway,
    Host,
    HostStatus,
    MemberRole,
    Network,
    PeerStatus,
)
from chalicelib.errors import ConflictError, NotFoundError, UnavailableError
from chalicelib.service.ports import (
    PAGE_LIMIT_MAX,
    AddressTakenError,
    IdentityWithdrawnError,
    InvalidCursorError,
    KeyRefusedError,
    NetworkGoneError,
    Page,
    PendingIdentity,
    PublicKeyTakenError,
    RegistryEntry,
    StaleWriteError,
    Store,
    every_item,
)

from .conftest import Backend

NET = NetworkId("net_a")
NOW = 1_000_000

_RNG = random.SystemRandom()


@pytest.fixture
def store(backend: Backend) -> Store:
    """The backend's store, with one network."""
    store = backend.store
    store.create_network(Network(NET, "n", "100.64.0.0/24", "fd00:64::/64"), store.network_registry().version)
    return store


def _key(store: Store, uses: int | None = 5, expires_at: int | None = None,
         networks: tuple[NetworkId, ...] = (NET,)) -> EnrollmentKey:
    key = EnrollmentKey(EnrollmentKeyId(f"ek_{uuid.uuid4().hex[:8]}"), networks, "hash", uses_total=uses,
                        uses_left=uses, expires_at=expires_at, unlimited=uses is None and expires_at is None)
    store.put_enrollment_key(key)
    return key


def _host(n: int, public_key: str | None = None, address: tuple[str, str] | None = None) -> Host:
    return Host(id=HostId(f"host_{n}"), name=f"h{n}", public_key=public_key or f"{n:043d}=",
                listen_port=51820, endpoints=(),
                addresses={NET: address or (f"100.64.0.{n}", f"fd00:64::{n}")}, revision=1)


_created_ns = itertools.count(1_700_000_000_000_000_000)


def _change_id() -> ChangeId:
    """A new change id, later than every one made before (as the service's clock makes them)."""
    return ChangeId(next(_created_ns), uuid.uuid4().hex[:8])


def _outbox(host: Host) -> tuple[PendingChange, ...]:
    """The pending changes of a write of ``host``: one in each of its networks, naming it."""
    return new_changes(host.network_ids, _change_id(), host_ids=(host.id,))


def _change(network_id: str, host_id: str | None = None, *, settings: bool = False) -> PendingChange:
    return PendingChange(_change_id(), NetworkId(network_id), () if host_id is None else (HostId(host_id),),
                         settings)


def _register(store: Store, host: Host, key: EnrollmentKey, now: int = NOW) -> None:
    """As the service registers: the pending identity first, then the transaction that commits it."""
    store.begin_identity(PendingIdentity(host.id, now))
    store.register_host(host, key, now, changes=_outbox(host))


def _registered(store: Store) -> tuple[Host, EnrollmentKey]:
    key = _key(store)
    first = _host(1)
    _register(store, first, key, NOW)
    return first, replace(key, uses_left=4)


def _second_network(store: Store) -> tuple[NetworkId, EnrollmentKey, Host]:
    """A second network, a key to both, and a host (not registered) with addresses in both."""
    other = NetworkId("net_bbbb")
    store.create_network(Network(other, "b", "100.65.0.0/24", "fd00:65::/64"),
                         store.network_registry().version)
    key = _key(store, networks=(NET, other))
    host = replace(_host(1), addresses={NET: ("100.64.0.1", "fd00:64::1"),
                                        other: ("100.65.0.1", "fd00:65::1")})
    return other, key, host


def _settle(store: Store, network_id: str = NET) -> None:
    """Clear the pending changes so a test sees only those of its own writes."""
    store.clear_pending(network_id, [p.id for p in store.pending_changes(network_id)])


# --- status reports and the offline sweep ----------------------------------------------------


def test_a_status_report_for_a_missing_host_is_dropped_and_creates_nothing(store: Store) -> None:
    assert store.record_host_status("host_gone", HostStatus(online=True, last_seen=1)) is False
    assert store.get_host("host_gone") is None
    assert store.list_hosts(PAGE_LIMIT_MAX, None).items == ()


def test_a_status_report_is_stored_as_sent_and_a_host_goes_offline_only_when_not_seen_since(
        store: Store) -> None:
    first, _ = _registered(store)
    assert store.get_host(first.id).status == HostStatus()  # nothing reported yet
    status = HostStatus(online=True, last_seen=NOW, agent_version="1.2", reported_endpoints=("198.18.0.1:1",),
                        peers=(PeerStatus("p" * 43 + "=", 5, 10, 20), PeerStatus("q" * 43 + "=", None)))
    assert store.record_host_status(first.id, status) is True
    assert store.get_host(first.id).status == status
    assert store.get_host(first.id).revision == first.revision  # a report is no change of the host

    assert store.mark_offline(first.id, seen_before=NOW) is False  # seen at NOW: not before it
    assert store.mark_offline(first.id, seen_before=NOW + 1) is True
    assert store.get_host(first.id).status == replace(status, online=False)
    assert store.mark_offline(first.id, seen_before=NOW + 1) is False  # once
    assert store.mark_offline("host_gone", seen_before=NOW + 1) is False
    assert store.get_host("host_gone") is None


# --- the update stream -------------------------------------------------------------------------


def test_a_publish_lease_is_held_by_one_owner_until_it_expires(store: Store) -> None:
    assert store.acquire_publish_lease(NET, "other", now=NOW, ttl=30) is True
    assert store.acquire_publish_lease(NET, "me", now=NOW + 29, ttl=30) is False
    store.release_publish_lease(NET, "me")  # not mine: changes nothing
    assert store.acquire_publish_lease(NET, "me", now=NOW + 29, ttl=30) is False
    with pytest.raises(StaleWriteError, match="lease was lost"):
        store.advance_seq(NET, "me", NOW, 30)
    assert store.acquire_publish_lease(NET, "me", now=NOW + 30, ttl=30) is False  # its last second
    assert store.acquire_publish_lease(NET, "me", now=NOW + 31, ttl=30) is True  # a dead holder's
    assert store.advance_seq(NET, "me", NOW + 31, 30).seq == 1
    store.release_publish_lease(NET, "me")
    assert store.acquire_publish_lease(NET, "other", now=NOW + 32, ttl=30) is True
    assert store.acquire_publish_lease("net_missing", "me", now=NOW, ttl=30) is False


def test_seq_advances_by_one_per_call_under_the_lease_only(store: Store) -> None:
    with pytest.raises(StaleWriteError, match="lease was lost"):
        store.advance_seq(NET, "me", NOW, 30)  # never held
    assert store.acquire_publish_lease(NET, "me", now=NOW, ttl=30)
    assert [store.advance_seq(NET, "me", NOW, 30).seq for _ in range(3)] == [1, 2, 3]
    assert store.advance_seq(NET, "me", NOW, 30) == replace(store.get_network(NET), seq=4)
    assert store.get_network(NET).seq == 4
    store.release_publish_lease(NET, "me")
    with pytest.raises(StaleWriteError, match="lease was lost"):
        store.advance_seq(NET, "me", NOW, 30)
    assert store.get_network(NET).seq == 4
    with pytest.raises(StaleWriteError, match="lease was lost"):
        store.advance_seq("net_missing", "me", NOW, 30)


def test_each_seq_renews_the_holders_lease(store: Store) -> None:
    # A holder publishing a long burst keeps its lease: nobody else can take it between
    # two of its seqs and publish seq + 1 before the holder's seq is out.
    assert store.acquire_publish_lease(NET, "me", now=NOW, ttl=30)
    assert store.advance_seq(NET, "me", NOW + 25, 30).seq == 1
    assert store.acquire_publish_lease(NET, "other", now=NOW + 40, ttl=30) is False  # renewed to +55
    assert store.advance_seq(NET, "me", NOW + 50, 30).seq == 2
    assert store.acquire_publish_lease(NET, "other", now=NOW + 80, ttl=30) is False  # its last second
    assert store.acquire_publish_lease(NET, "other", now=NOW + 81, ttl=30) is True
    with pytest.raises(StaleWriteError, match="lease was lost"):
        store.advance_seq(NET, "me", NOW + 81, 30)  # taken over: the old holder cannot publish
    assert store.get_network(NET).seq == 2


def test_pending_changes_come_oldest_first_until_cleared(store: Store) -> None:
    assert store.pending_changes(NET) == [] and store.networks_with_pending() == []
    key = _key(store)
    hosts = [_host(n) for n in (3, 1, 2)]
    for h in hosts:
        _register(store, h, key)
    store.update_network(replace(store.get_network(NET), mtu=1380), store.network_registry().version,
                         change=_change(NET, settings=True))

    pending = store.pending_changes(NET)
    assert [p.host_ids for p in pending] == [(h.id,) for h in hosts] + [()]
    assert [p.settings for p in pending] == [False, False, False, True]
    assert {p.network_id for p in pending} == {NET}
    assert len({p.id for p in pending}) == 4 and [p.id for p in pending] == sorted(p.id for p in pending)
    assert store.pending_changes(NET, limit=2) == pending[:2]
    assert store.networks_with_pending() == [NET]

    store.clear_pending(NET, [pending[0].id, pending[2].id])
    assert store.pending_changes(NET) == [pending[1], pending[3]]
    store.clear_pending(NET, [pending[0].id])  # already gone: nothing happens
    store.clear_pending(NET, [pending[1].id, pending[3].id])
    assert store.pending_changes(NET) == [] and store.networks_with_pending() == []


def test_the_network_head_is_its_record_and_whether_a_change_waits(store: Store) -> None:
    assert store.network_head(NET) == (store.get_network(NET), False)
    key = _key(store)
    _register(store, _host(1), key)  # a member, with its change pending
    network, waiting = store.network_head(NET)
    assert network == store.get_network(NET) and waiting
    store.clear_pending(NET, [p.id for p in store.pending_changes(NET)])
    store.log_delta(NET, 1, b"{}", expires_at=NOW + 60, keep=4)  # other records of the network
    assert store.network_head(NET) == (store.get_network(NET), False)
    assert store.network_head("net_missing") is None


def test_pending_changes_are_kept_as_written_and_read_in_the_order_of_their_ids(store: Store) -> None:
    """A write records the pending changes it is given, not ones of its own: they come back
    equal, ordered by creation time, then nonce, whatever order they were written in."""
    key = _key(store)
    late, early, tie = _host(1), _host(2), _host(3)
    outboxes = {
        late.id: new_changes([NET], ChangeId(2_000_000_000_000_000_000, "00000000"), host_ids=(late.id,)),
        early.id: new_changes([NET], ChangeId(999_999_999, "ffffffff"), host_ids=(early.id,)),
        tie.id: new_changes([NET], ChangeId(2_000_000_000_000_000_000, "0000000a"), host_ids=(tie.id,)),
    }
    for host in (late, early, tie):
        store.begin_identity(PendingIdentity(host.id, NOW))
        store.register_host(host, key, NOW, changes=outboxes[host.id])
    settings = _change(NET, settings=True)
    store.update_network(replace(store.get_network(NET), mtu=1380), store.network_registry().version,
                         change=settings)

    assert store.pending_changes(NET) == [*outboxes[early.id], settings, *outboxes[late.id],
                                          *outboxes[tie.id]]
    assert store.pending_changes(NET, limit=1) == list(outboxes[early.id])


def test_a_write_refuses_pending_changes_that_do_not_match_it_and_writes_nothing(
        backend: Backend, store: Store) -> None:
    """Every network a write touches gets exactly one change naming the host, and no other
    network one: anything else would broadcast a change never made, or never broadcast one."""
    other, key, host = _second_network(store)
    store.begin_identity(PendingIdentity(host.id, NOW))
    first, second = _outbox(host)
    stranger = _change(NET, "host_2")
    before = backend.contents()

    for changes in ([first], [first, second, _change(NetworkId("net_cccc"), host.id)],
                    [first, _change(other, host.id), second], [first, replace(second, host_ids=())],
                    [stranger, second]):
        with pytest.raises(ValueError, match="pending change"):
            store.register_host(host, key, NOW, changes=changes)
    with pytest.raises(ValueError, match="pending change"):
        store.update_network(replace(store.get_network(NET), mtu=1300), store.network_registry().version,
                             change=_change(other, settings=True))
    assert backend.contents() == before, "a refused write writes nothing"

    store.register_host(host, key, NOW, changes=(first, second))
    _settle(store)
    _settle(store, other)
    current = store.get_host(host.id)
    before = backend.contents()
    with pytest.raises(ValueError, match="pending change"):
        store.update_host(current, replace(current, name="x"), changes=[first])
    with pytest.raises(ValueError, match="pending change"):
        store.delete_host(current, changes=[stranger, second])
    with pytest.raises(ValueError, match="pending change"):
        store.remove_host_from_network(current, NET, change=_change(other, host.id))
    assert backend.contents() == before


def test_a_change_id_already_pending_in_the_network_refuses_the_write(backend: Backend, store: Store) -> None:
    """Two writes never share a pending change (the second's would be lost): a clash is a
    retryable conflict, and nothing of the write is stored."""
    first, key = _registered(store)
    (pending,) = store.pending_changes(NET)
    current = store.get_host(first.id)
    before = backend.contents()
    with pytest.raises(StaleWriteError, match="change id collision"):
        store.update_host(current, replace(current, name="renamed"), changes=[pending])
    assert backend.contents() == before


def test_the_delta_log_keeps_the_last_few_broadcasts_in_seq_order(store: Store) -> None:
    assert store.deltas_since(NET, 0, limit=10) == []
    for seq in range(1, 8):
        store.log_delta(NET, seq, b'{"seq":%d}' % seq, expires_at=NOW + 60, keep=4)
    assert store.deltas_since(NET, 0, limit=10) == [(s, b'{"seq":%d}' % s) for s in (4, 5, 6, 7)]
    assert store.deltas_since(NET, 5, limit=10) == [(6, b'{"seq":6}'), (7, b'{"seq":7}')]
    assert store.deltas_since(NET, 3, limit=2) == [(4, b'{"seq":4}'), (5, b'{"seq":5}')]
    assert store.deltas_since(NET, 7, limit=10) == []
    assert store.deltas_since("net_other", 0, limit=10) == []


def test_a_deleted_network_leaves_no_delta_log(backend: Backend, store: Store) -> None:
    store.log_delta(NET, 1, b"{}", expires_at=NOW + 60, keep=4)
    store.delete_network(NET, store.network_registry().version)
    assert backend.leftovers(NET) == [] and store.deltas_since(NET, 0, limit=10) == []


def test_members_are_read_as_they_are_now(store: Store) -> None:
    first, key = _registered(store)
    second = _host(2)
    _register(store, second, key)
    found = store.members(NET, [second.id, first.id, second.id, "host_never"])
    assert found == {first.id: first.member_of(NET), second.id: second.member_of(NET)}
    store.remove_host_from_network(store.get_host(second.id), NET, change=_change(NET, second.id))
    assert store.members(NET, [first.id, second.id]) == {first.id: first.member_of(NET)}
    assert store.members("net_missing", [first.id]) == {}


# --- networks ------------------------------------------------------------------------------------


def test_networks_move_the_registry_one_version_per_write(backend: Backend) -> None:
    store = backend.store
    assert store.network_registry().version == 0 and store.network_registry().entries == ()
    a = Network(NetworkId("net_aaaa"), "a", "100.64.0.0/24", "fd00:64::/64", listen_port=51821, keepalive=10,
                mtu=1400, seq=0, created_at=NOW)
    store.create_network(a, 0)
    assert store.get_network(a.id) == a
    assert store.network_registry().version == 1
    before = backend.contents()
    b = Network(NetworkId("net_bbbb"), "b", "100.65.0.0/24", "fd00:65::/64")
    with pytest.raises(StaleWriteError, match="networks changed meanwhile"):
        store.create_network(b, 0)  # read before a was created
    with pytest.raises(StaleWriteError, match="network id collision"):
        store.create_network(replace(a, name="again"), 1)
    assert backend.contents() == before, "a refused create writes nothing"

    store.create_network(b, 1)
    assert store.network_registry().version == 2
    assert store.network_registry().entries == (
        RegistryEntry(a.id, "a", "100.64.0.0/24", "fd00:64::/64"),
        RegistryEntry(b.id, "b", "100.65.0.0/24", "fd00:65::/64"))


def test_a_network_update_changes_its_settings_and_records_a_broadcast_only_when_asked(
        backend: Backend) -> None:
    store = backend.store
    net = Network(NetworkId("net_aaaa"), "a", "100.64.0.0/24", "fd00:64::/64", created_at=NOW)
    store.create_network(net, 0)
    renamed = replace(net, name="renamed", listen_port=51999, keepalive=5, mtu=1280)
    store.update_network(renamed, 1, change=None)
    assert store.get_network(net.id) == renamed
    assert store.pending_changes(net.id) == []
    assert store.network_registry().version == 2
    assert store.network_registry().entries == (
        RegistryEntry(net.id, "renamed", net.ipv4_cidr, net.ipv6_cidr),)

    # The ranges and seq are not settings: an update leaves them as they are.
    store.update_network(replace(renamed, mtu=1300, seq=7, created_at=1), 2,
                         change=_change(net.id, settings=True))
    assert store.get_network(net.id) == replace(renamed, mtu=1300)
    (change,) = store.pending_changes(net.id)
    assert change.settings and change.host_ids == ()

    before = backend.contents()
    with pytest.raises(StaleWriteError, match="networks changed meanwhile"):
        store.update_network(replace(renamed, mtu=1), 2, change=_change(net.id, settings=True))
    with pytest.raises(NotFoundError, match="net_zzzz does not exist"):
        store.update_network(replace(renamed, id=NetworkId("net_zzzz")), 3,
                             change=_change("net_zzzz", settings=True))
    assert backend.contents() == before, "a refused update writes nothing"


def test_a_snapshot_holds_the_network_and_its_members_in_host_order(store: Store) -> None:
    key = _key(store)
    hosts = [_host(n) for n in (2, 3, 1)]
    for h in hosts:
        _register(store, h, key)
    network, members = store.network_snapshot(NET)
    assert network == store.get_network(NET)
    assert members == [h.member_of(NET) for h in sorted(hosts, key=lambda h: h.id)]
    assert store.network_snapshot("net_missing") is None


def test_a_network_being_deleted_takes_no_members_until_unmarked(store: Store) -> None:
    key = _key(store)
    store.mark_network_deleting(NET)
    with pytest.raises(NetworkGoneError):
        _register(store, _host(1), key)
    store.unmark_network_deleting(NET)
    store.register_host(_host(1), key, NOW, changes=_outbox(_host(1)))  # its pending identity is there
    assert [m.host_id for m in store.network_snapshot(NET)[1]] == ["host_1"]
    with pytest.raises(NotFoundError):
        store.mark_network_deleting("net_missing")
    store.unmark_network_deleting("net_missing")  # nothing to unmark: no error


def test_a_network_with_members_is_not_deleted_and_a_deleted_one_leaves_nothing(backend: Backend,
                                                                                store: Store) -> None:
    first, _ = _registered(store)  # a member, and its change still pending
    with pytest.raises(StaleWriteError, match="still has members"):
        store.delete_network(NET, store.network_registry().version)
    assert store.get_network(NET) is not None

    store.remove_host_from_network(first, NET, change=_change(NET, first.id))
    store.delete_network(NET, store.network_registry().version)
    assert backend.leftovers(NET) == [], "nothing of it is left"
    assert store.network_registry().entries == ()
    assert store.pending_changes(NET) == [] and store.networks_with_pending() == []
    with pytest.raises(NotFoundError):  # a second delete (a concurrent one) finds nothing to delete
        store.delete_network(NET, store.network_registry().version)
    with pytest.raises(NotFoundError):
        store.mark_network_deleting(NET)


def test_a_network_is_not_deleted_on_a_stale_registry(backend: Backend, store: Store) -> None:
    version = store.network_registry().version
    store.create_network(Network(NetworkId("net_bbbb"), "b", "100.65.0.0/24", "fd00:65::/64"), version)
    before = backend.contents()
    with pytest.raises(StaleWriteError, match="networks changed meanwhile"):
        store.delete_network(NET, version)
    assert backend.contents() == before


# --- lists and their cursors ---------------------------------------------------------------------


def _walk(fetch: Callable[[str | None], Page]) -> list[list[str]]:
    """The ids of each page, walking the cursors from the start."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = fetch(cursor)
        pages.append([r.id for r in page.items])
        if page.cursor is None:
            return pages
        cursor = page.cursor


def test_every_list_walks_its_records_once_in_id_order_and_refuses_foreign_cursors(backend: Backend) -> None:
    store = backend.store
    nets = sorted(NetworkId(new_id("network", _RNG)) for _ in range(5))
    for i, nid in enumerate(nets):
        store.create_network(Network(nid, f"n{i}", f"100.64.{i}.0/24", f"fd00:64:{i}::/64"),
                             store.network_registry().version)
    template = EnrollmentKey(EnrollmentKeyId("key_0"), (nets[0],), "hash", None, None, None, True)
    key_ids = sorted(EnrollmentKeyId(new_id("enrollment_key", _RNG)) for _ in range(5))
    for kid in key_ids:
        store.put_enrollment_key(replace(template, id=kid))
    hosts = sorted((Host(HostId(new_id("host", _RNG)), f"h{n}", f"{n:043d}=", 51820, (),
                         {nets[0]: (f"100.64.0.{n}", f"fd00:64::{n}")}) for n in range(1, 5)),
                   key=lambda h: h.id)
    for h in hosts:
        _register(store, h, replace(template, id=key_ids[0]))

    assert _walk(lambda c: store.list_networks(2, c)) == [nets[0:2], nets[2:4], nets[4:]]
    host_ids = [h.id for h in hosts]
    assert _walk(lambda c: store.list_hosts(2, c)) == [host_ids[:2], host_ids[2:]]
    assert _walk(lambda c: store.list_enrollment_keys(3, c)) == [key_ids[:3], key_ids[3:]]
    assert [h.id for h in every_item(lambda c: store.list_hosts(3, c))] == host_ids
    assert store.list_networks(5, None).cursor is None  # a full page with nothing after it
    assert store.list_networks(PAGE_LIMIT_MAX, None).items == tuple(store.get_network(n) for n in nets)

    host_cursor = store.list_hosts(1, None).cursor
    network_cursor = store.list_networks(1, None).cursor
    assert host_cursor and network_cursor
    with pytest.raises(InvalidCursorError, match="another list"):
        store.list_networks(2, host_cursor)
    with pytest.raises(InvalidCursorError, match="another list"):
        store.list_hosts(2, network_cursor)
    with pytest.raises(InvalidCursorError):
        store.list_enrollment_keys(2, network_cursor)
    for garbage in ("not a cursor!", "abc", host_cursor[:-3], "A" * 600):
        with pytest.raises(InvalidCursorError):
            store.list_hosts(2, garbage)


# --- keys --------------------------------------------------------------------------------------------


def test_admin_keys_are_kept_once_each(backend: Backend) -> None:
    store = backend.store
    b, a = AdminKey("adm_bbbb", "hash-b", "ci", NOW), AdminKey("adm_aaaa", "hash-a", created_at=NOW + 1)
    store.put_admin_key(b)
    store.put_admin_key(a)
    assert store.get_admin_key("adm_aaaa") == a and store.get_admin_key("adm_none") is None
    assert store.list_admin_keys() == [a, b]
    before = backend.contents()
    with pytest.raises(UnavailableError):  # an id is never reused: a put over one is refused
        store.put_admin_key(replace(a, token_hash="other"))
    assert backend.contents() == before


def test_an_enrollment_key_is_kept_as_given_and_revoked_in_place(backend: Backend, store: Store) -> None:
    key = EnrollmentKey(EnrollmentKeyId("key_aaaa"), (NET, NetworkId("net_bbbb")), "h", uses_total=3,
                        uses_left=2, expires_at=NOW, unlimited=False, tags=("a", "b"), created_at=NOW)
    store.put_enrollment_key(key)
    assert store.get_enrollment_key(key.id) == key and store.get_enrollment_key("key_none") is None
    before = backend.contents()
    with pytest.raises(UnavailableError):
        store.put_enrollment_key(replace(key, uses_left=99))
    assert backend.contents() == before
    store.revoke_enrollment_key(key.id)
    assert store.get_enrollment_key(key.id) == replace(key, revoked=True)
    with pytest.raises(NotFoundError, match="key_none does not exist"):
        store.revoke_enrollment_key("key_none")


# --- registrations under way -------------------------------------------------------------------------


def test_a_pending_identity_lives_until_its_host_commits_or_the_sweeper_claims_it(store: Store) -> None:
    key = _key(store)
    one, two = _host(1), _host(2)
    store.begin_identity(PendingIdentity(one.id, NOW))
    store.begin_identity(PendingIdentity(two.id, NOW + 1))
    with pytest.raises(UnavailableError):
        store.begin_identity(PendingIdentity(one.id, NOW + 2))
    store.note_certificate(one.id, "cert-1")
    assert store.pending_identities() == [PendingIdentity(one.id, NOW, "cert-1"),
                                          PendingIdentity(two.id, NOW + 1)]

    store.register_host(one, key, NOW, changes=_outbox(one))  # the commit takes its pending identity
    assert store.pending_identities() == [PendingIdentity(two.id, NOW + 1)]
    assert store.abandon_identity(one.id) is None  # committed: nothing to clean up
    store.begin_identity(PendingIdentity(one.id, NOW + 3))  # (a second registration's, say)
    assert store.abandon_identity(one.id) is None  # a committed host's identity is never claimed
    assert PendingIdentity(one.id, NOW + 3) in store.pending_identities()
    store.forget_identity(one.id)

    assert store.abandon_identity(two.id) == PendingIdentity(two.id, NOW + 1, abandoned=True)
    with pytest.raises(IdentityWithdrawnError, match="took too long"):
        store.note_certificate(two.id, "cert-2")
    with pytest.raises(IdentityWithdrawnError, match="took too long"):
        store.register_host(two, key, NOW, changes=_outbox(two))
    assert store.get_host(two.id) is None
    assert store.pending_identities() == [PendingIdentity(two.id, NOW + 1, abandoned=True)]
    store.forget_identity(two.id)
    store.forget_identity(two.id)  # idempotent
    assert store.pending_identities() == []
    assert store.abandon_identity(two.id) is None
    with pytest.raises(IdentityWithdrawnError):
        store.note_certificate(two.id, "cert-2")


# --- hosts -------------------------------------------------------------------------------------------


def test_a_registration_stores_the_host_its_memberships_and_one_use_of_its_key(store: Store) -> None:
    key = _key(store, uses=2)
    host = replace(_host(1), endpoints=("198.18.0.1:51820",), observed_endpoint="198.18.0.9:4000",
                   certificate_id="cert", token_hash="th", enrollment_key_id=key.id, tags=("t",),
                   created_at=NOW, revision=0, status=HostStatus(online=True, last_seen=NOW))
    _register(store, host, key)
    stored = replace(host, status=HostStatus())  # a new host has reported nothing
    assert store.get_host(host.id) == stored
    assert store.list_hosts(PAGE_LIMIT_MAX).items == (stored,)
    assert store.get_enrollment_key(key.id).uses_left == 1
    assert store.network_snapshot(NET)[1] == [host.member_of(NET)]
    assert store.network_snapshot(NET)[1][0].endpoints == ("198.18.0.1:51820", "198.18.0.9:4000")
    assert [p.host_ids for p in store.pending_changes(NET)] == [(host.id,)]

    unlimited = _key(store, uses=None)
    _register(store, _host(2), unlimited)
    assert store.get_enrollment_key(unlimited.id) == unlimited  # no uses to count


def test_a_registration_into_several_networks_is_one_write(backend: Backend, store: Store) -> None:
    other, key, host = _second_network(store)
    squatter = replace(_host(2), addresses={other: ("100.65.0.1", "fd00:65::2")})
    _register(store, squatter, key)
    store.begin_identity(PendingIdentity(host.id, NOW))
    before = backend.contents()
    with pytest.raises(AddressTakenError, match="100.65.0.1 in net_bbbb"):
        store.register_host(host, key, NOW, changes=_outbox(host))
    assert backend.contents() == before, "nothing of it in the first network either"

    store.remove_host_from_network(store.get_host(squatter.id), other, change=_change(other, squatter.id))
    store.register_host(host, key, NOW, changes=_outbox(host))
    assert store.get_host(host.id).addresses == host.addresses
    assert [m.host_id for m in store.network_snapshot(NET)[1]] == [host.id]
    assert [m.host_id for m in store.network_snapshot(other)[1]] == [host.id]


@pytest.mark.parametrize("conflict, expected, message", [
    ("same public key", PublicKeyTakenError, "already used by another host"),
    ("same ipv4", AddressTakenError, "100.64.0.1 in net_a is taken"),
    ("same ipv6", AddressTakenError, "fd00:64::1 in net_a is taken"),
    ("same host id", StaleWriteError, "host id collision"),
    ("network being deleted", NetworkGoneError, "net_a was deleted or is being deleted"),
    ("network deleted", NetworkGoneError, "net_b was deleted or is being deleted"),
    ("key revoked", KeyRefusedError, "this enrollment key was revoked"),
    ("key used up", KeyRefusedError, "this enrollment key has no uses left"),
    ("key expired", KeyRefusedError, "this enrollment key has expired"),
    ("key deleted", KeyRefusedError, "this enrollment key was deleted"),
    ("no pending identity", IdentityWithdrawnError, "took too long"),
])
def test_a_registration_refused_by_a_condition_says_which_and_writes_nothing(
        backend: Backend, store: Store, conflict: str, expected: type[Exception], message: str) -> None:
    first, key = _registered(store)
    second = _host(2)
    setups: dict[str, Callable[[], Host]] = {
        "same public key": lambda: replace(second, public_key=first.public_key),
        "same ipv4": lambda: replace(second, addresses={NET: ("100.64.0.1", "fd00:64::2")}),
        "same ipv6": lambda: replace(second, addresses={NET: ("100.64.0.2", "fd00:64::1")}),
        "same host id": lambda: replace(second, id=first.id),
        "network being deleted": lambda: (store.mark_network_deleting(NET), second)[1],
        "network deleted": lambda: replace(
            second, addresses={**second.addresses, NetworkId("net_b"): ("100.65.0.2", "fd00:65::2")}),
        "key revoked": lambda: (store.revoke_enrollment_key(key.id), second)[1],
        "key used up": lambda: second,
        "key expired": lambda: second,
        "key deleted": lambda: second,
        "no pending identity": lambda: second,
    }
    candidate = setups[conflict]()
    if conflict == "key used up":
        key = _key(store, uses=1)
        _register(store, _host(3), key, NOW)
    elif conflict == "key expired":
        key = _key(store, uses=None, expires_at=NOW + 60)
    elif conflict == "key deleted":
        key = replace(key, id=EnrollmentKeyId("ek_never"))
    if conflict != "no pending identity":
        store.begin_identity(PendingIdentity(candidate.id, NOW + 60))
    before = backend.contents()

    with pytest.raises(expected, match=message):
        store.register_host(candidate, key, NOW + 60, changes=_outbox(candidate))

    assert backend.contents() == before, \
        "a refused registration writes nothing (no use, claim, host or member)"


def test_a_host_update_stores_its_fields_in_the_host_and_its_members(store: Store) -> None:
    first, _ = _registered(store)
    store.record_host_status(first.id, HostStatus(online=True, last_seen=NOW))
    _settle(store)
    current = store.get_host(first.id)
    new = replace(current, name="renamed", listen_port=51999, endpoints=("198.18.0.2:1",), tags=("x",),
                  observed_endpoint="198.18.0.3:2", revision=current.revision + 1)
    store.update_host(current, new, changes=_outbox(new))
    assert store.get_host(first.id) == new  # status, addresses and certificate as they were
    assert store.network_snapshot(NET)[1] == [new.member_of(NET)]
    assert [p.host_ids for p in store.pending_changes(NET)] == [(first.id,)]
    unobserved = replace(new, observed_endpoint=None, revision=new.revision + 1)
    store.update_host(new, unobserved, changes=_outbox(unobserved))
    assert store.get_host(first.id) == unobserved
    new = unobserved

    # The revision is counted by the store: it follows the stored one, not the caller's.
    store.update_host(new, replace(new, name="again", revision=99), changes=_outbox(new))
    assert store.get_host(first.id).revision == new.revision + 1


def test_a_host_update_refused_by_a_condition_says_which_and_writes_nothing(
        backend: Backend, store: Store) -> None:
    first, key = _registered(store)
    second = _host(2)
    _register(store, second, key, NOW)
    current = store.get_host(first.id)
    before = backend.contents()

    with pytest.raises(PublicKeyTakenError):  # another host's key: its claim stays its own
        store.update_host(current, replace(current, public_key=second.public_key, revision=2),
                          changes=_outbox(current))
    with pytest.raises(StaleWriteError, match="host changed meanwhile"):  # a stale read
        store.update_host(replace(current, revision=0), replace(current, name="stale", revision=1),
                          changes=_outbox(current))
    with pytest.raises(StaleWriteError, match="host changed meanwhile"):
        store.delete_host(replace(current, revision=0), changes=_outbox(current))
    with pytest.raises(StaleWriteError, match="host changed meanwhile"):  # a deleted host
        store.update_host(_host(9), replace(_host(9), name="gone"), changes=_outbox(_host(9)))
    with pytest.raises(StaleWriteError, match="key claim changed"):  # never another host's key
        store.delete_host(replace(current, public_key=second.public_key), changes=_outbox(current))
    assert backend.contents() == before
    assert store.get_host(first.id) == current
    assert {m.public_key for m in store.network_snapshot(NET)[1]} == {first.public_key, second.public_key}

    store.update_host(current, replace(current, public_key="K" * 43 + "=", revision=2),
                      changes=_outbox(current))
    with pytest.raises(PublicKeyTakenError):  # the new key is claimed now, the old one freed
        _register(store, _host(4, public_key="K" * 43 + "="), key, NOW)
    _register(store, _host(5, public_key=first.public_key), key, NOW)


def test_leaving_a_network_frees_the_addresses_and_returns_the_host_as_stored(store: Store) -> None:
    first, key = _registered(store)
    _settle(store)
    left = store.remove_host_from_network(first, NET, change=_change(NET, first.id))
    assert left == replace(first, addresses={}, revision=first.revision + 1)
    assert store.get_host(first.id) == left
    assert store.network_snapshot(NET)[1] == []
    assert [p.host_ids for p in store.pending_changes(NET)] == [(first.id,)]
    _register(store, _host(2, address=first.addresses[NET]), key)  # the addresses are free again


def test_leaving_a_network_on_a_stale_read_is_refused_and_changes_nothing(backend: Backend,
                                                                         store: Store) -> None:
    first, key = _registered(store)
    second = _host(2)
    _register(store, second, key)
    before = backend.contents()
    with pytest.raises(StaleWriteError, match="host changed meanwhile"):
        store.remove_host_from_network(replace(first, revision=0), NET, change=_change(NET, first.id))
    with pytest.raises(StaleWriteError, match="address claim changed"):  # never another host's address
        store.remove_host_from_network(replace(first, addresses=second.addresses), NET,
                                       change=_change(NET, first.id))
    assert backend.contents() == before


def test_a_deleted_host_frees_its_key_and_addresses(store: Store) -> None:
    first, key = _registered(store)
    _settle(store)
    store.delete_host(first, changes=_outbox(first))
    assert store.get_host(first.id) is None
    assert store.network_snapshot(NET)[1] == []
    assert [p.host_ids for p in store.pending_changes(NET)] == [(first.id,)]
    _register(store, _host(2, public_key=first.public_key, address=first.addresses[NET]), key)
    with pytest.raises(StaleWriteError, match="host changed meanwhile"):  # a second delete
        store.delete_host(first, changes=_outbox(first))


def test_when_several_conditions_fail_every_store_names_the_same_one(store: Store) -> None:
    """DynamoDB reports checks, then deletes, puts and updates: the first failed one is the error."""
    first, key = _registered(store)
    second = _host(2)
    _register(store, second, key)
    current = store.get_host(first.id)
    # A stale read (the host's update) and a key in use (the claim's put): the put is reported.
    with pytest.raises(PublicKeyTakenError):
        store.update_host(replace(current, revision=0), replace(current, public_key=second.public_key),
                          changes=_outbox(current))
    # A used-up key (its update) and a taken address (a put): the address is reported.
    used_up = _key(store, uses=1)
    _register(store, _host(3), used_up)
    fourth = _host(4, address=first.addresses[NET])
    store.begin_identity(PendingIdentity(fourth.id, NOW))
    with pytest.raises(AddressTakenError):
        store.register_host(fourth, replace(used_up, uses_left=1), NOW, changes=_outbox(fourth))
    # ... and a network being deleted (a check) comes before both, and before a withdrawn
    # identity (a delete).
    store.mark_network_deleting(NET)
    with pytest.raises(NetworkGoneError):
        store.register_host(fourth, replace(used_up, uses_left=1), NOW, changes=_outbox(fourth))
    store.forget_identity(HostId("host_4"))
    with pytest.raises(NetworkGoneError):
        store.register_host(fourth, replace(used_up, uses_left=1), NOW, changes=_outbox(fourth))
    store.unmark_network_deleting(NET)
    # A withdrawn identity (a delete) comes before a taken address (a put).
    with pytest.raises(IdentityWithdrawnError):
        store.register_host(fourth, replace(used_up, uses_left=1), NOW, changes=_outbox(fourth))
    assert store.get_host(first.id) == current and store.get_host(HostId("host_4")) is None
    assert store.get_enrollment_key(used_up.id).uses_left == 0


# --- members' roles (gateways, internet use) ----------------------------------------------------------

_GATEWAY = MemberRole(gateway=Gateway(remote_access=True, egress=("10.1.0.0/16", "fd10::/48"), internet=True,
                                      endpoint="gw.example.com:51820"))


def _role_write(host: Host, role: MemberRole | None, network_id: NetworkId = NET) -> Host:
    """``host`` with ``role`` in ``network_id`` (None: none there), as the service asks for it."""
    roles = {k: v for k, v in host.roles.items() if k != network_id}
    if role is not None:
        roles[network_id] = role
    return replace(host, roles=roles, revision=host.revision + 1)


def test_a_member_role_is_stored_on_the_host_and_its_member_record_in_one_write(store: Store) -> None:
    first, key = _registered(store)
    second = _host(2)
    _register(store, second, key)
    _settle(store)
    gateway = _role_write(store.get_host(first.id), _GATEWAY)
    store.set_member_role(store.get_host(first.id), gateway, NET, change=_change(NET, first.id))
    user = _role_write(store.get_host(second.id), MemberRole(
        internet_gateway=first.id, full_tunnel=True, pinned=(("10.7.0.0/16", first.id),),
        placed=(("10.8.0.0/16", first.id), ("fd10:8::/48", first.id))))
    store.set_member_role(store.get_host(second.id), user, NET, change=_change(NET, second.id))

    assert store.get_host(first.id) == gateway and store.get_host(second.id) == user
    assert store.list_hosts(PAGE_LIMIT_MAX).items == (gateway, user)
    assert store.network_snapshot(NET)[1] == [gateway.member_of(NET), user.member_of(NET)]
    assert store.network_snapshot(NET)[1][0].gateway == _GATEWAY.gateway
    assert store.members(NET, [first.id, second.id]) == {first.id: gateway.member_of(NET),
                                                         second.id: user.member_of(NET)}
    assert [p.host_ids for p in store.pending_changes(NET)] == [(first.id,), (second.id,)]

    # A role set to nothing is no role: the host and its member record are as before any role.
    plain = _role_write(gateway, MemberRole())
    store.set_member_role(gateway, plain, NET, change=_change(NET, first.id))
    assert store.get_host(first.id) == replace(plain, roles={})
    assert store.members(NET, [first.id]) == {first.id: first.member_of(NET)}


def test_a_members_pair_relays_are_stored_and_read_back(store: Store) -> None:
    """Automatic relays (issue 10): the pairs recorded on a member's role survive the store."""
    first, key = _registered(store)
    second = _host(2)
    _register(store, second, key)
    _settle(store)
    paired = _role_write(store.get_host(first.id), MemberRole(pair_relays=((HostId("host_9"), second.id),)))
    store.set_member_role(store.get_host(first.id), paired, NET, change=_change(NET, first.id))
    assert store.get_host(first.id) == paired
    assert store.members(NET, [first.id])[first.id].role.pair_relays == (("host_9", second.id),)


def test_a_member_role_on_a_stale_read_or_outside_the_network_is_refused_and_writes_nothing(
        backend: Backend, store: Store) -> None:
    first, _ = _registered(store)
    current = store.get_host(first.id)
    store.update_host(current, replace(current, name="renamed"), changes=_outbox(current))
    before = backend.contents()
    with pytest.raises(StaleWriteError, match="host changed meanwhile"):
        store.set_member_role(current, _role_write(current, _GATEWAY), NET, change=_change(NET, first.id))
    with pytest.raises(StaleWriteError, match="host changed meanwhile"):  # a deleted host
        store.set_member_role(_host(9), _role_write(_host(9), _GATEWAY), NET, change=_change(NET, "host_9"))
    renamed = store.get_host(first.id)
    with pytest.raises(ValueError, match="not a member of net_bbbb"):
        store.set_member_role(renamed, _role_write(renamed, _GATEWAY, NetworkId("net_bbbb")),
                              NetworkId("net_bbbb"), change=_change("net_bbbb", first.id))
    with pytest.raises(ValueError, match="pending change"):
        store.set_member_role(renamed, _role_write(renamed, _GATEWAY), NET, change=_change(NET, "host_2"))
    assert backend.contents() == before
    assert store.get_host(first.id).roles == {}


def test_a_role_survives_host_updates_and_goes_with_the_membership(store: Store) -> None:
    other, key, host = _second_network(store)
    _register(store, host, key)
    current = store.get_host(host.id)
    gateway = _role_write(current, _GATEWAY)
    store.set_member_role(current, gateway, NET, change=_change(NET, host.id))
    both = _role_write(gateway, MemberRole(internet_gateway=HostId("host_7")), other)
    store.set_member_role(gateway, both, other, change=_change(other, host.id))

    # An update of the host's own fields keeps its roles, even from a caller that left them out.
    renamed = replace(both, name="renamed", roles={}, revision=both.revision + 1)
    store.update_host(both, renamed, changes=_outbox(renamed))
    assert store.get_host(host.id) == replace(renamed, roles=both.roles)
    assert store.members(NET, [host.id])[host.id].role == _GATEWAY
    assert store.members(other, [host.id])[host.id].role == MemberRole(internet_gateway=HostId("host_7"))

    left = store.remove_host_from_network(store.get_host(host.id), NET, change=_change(NET, host.id))
    assert left.roles == {other: both.roles[other]} and store.get_host(host.id) == left
    assert store.members(other, [host.id])[host.id].role == both.roles[other]
    assert store.members(NET, [host.id]) == {}


# --- relays: several hosts' roles in one write; releases; registrations relayed from the start ----------


def _relayed(host: Host, relay: str | None) -> Host:
    return _role_write(host, None if relay is None else MemberRole(relayed_by=HostId(relay)))


def _three(store: Store) -> tuple[Host, Host, Host, EnrollmentKey]:
    first, key = _registered(store)
    for n in (2, 3):
        _register(store, _host(n), key)
    _settle(store)
    return store.get_host(first.id), store.get_host("host_2"), store.get_host("host_3"), key


def test_several_members_roles_are_one_write_with_one_change(store: Store) -> None:
    relay, a, b, _ = _three(store)
    olds = [relay, a, b]
    news = [_role_write(relay, None), _relayed(a, relay.id), _relayed(b, relay.id)]
    change = PendingChange(_change_id(), NET, (relay.id, a.id, b.id))
    store.set_member_roles(olds, news, NET, change=change)
    assert [store.get_host(h.id) for h in olds] == [replace(news[0], roles={}), news[1], news[2]]
    assert store.members(NET, [a.id, b.id]) == {a.id: news[1].member_of(NET), b.id: news[2].member_of(NET)}
    assert store.members(NET, [a.id])[a.id].role.relayed_by == relay.id
    assert store.pending_changes(NET) == [change]


def test_several_roles_on_one_stale_read_write_nothing(backend: Backend, store: Store) -> None:
    relay, a, b, _ = _three(store)
    store.update_host(b, replace(b, name="renamed", revision=b.revision + 1), changes=_outbox(b))
    _settle(store)
    before = backend.contents()
    with pytest.raises(StaleWriteError, match=f"host {b.id} changed meanwhile"):
        store.set_member_roles([a, b], [_relayed(a, relay.id), _relayed(b, relay.id)], NET,
                               change=PendingChange(_change_id(), NET, (a.id, b.id)))
    with pytest.raises(ValueError, match="pending change"):
        store.set_member_roles([a], [_relayed(a, relay.id)], NET, change=_change(NET, b.id))
    with pytest.raises(ValueError, match="1 to 48 hosts"):
        store.set_member_roles([], [], NET, change=_change(NET))
    with pytest.raises(ValueError, match="each host once"):
        store.set_member_roles([a, a], [_relayed(a, relay.id)] * 2, NET, change=_change(NET, a.id))
    assert backend.contents() == before


def test_the_largest_role_write_fits_one_transaction(store: Store) -> None:
    from chalicelib.service.ports import MAX_ROLE_WRITES
    big = NetworkId("net_big")
    store.create_network(Network(big, "big", "100.66.0.0/24", "fd00:66::/64"),
                         store.network_registry().version)
    key = _key(store, uses=None, expires_at=NOW + 10, networks=(big,))
    hosts = []
    for n in range(1, MAX_ROLE_WRITES + 1):
        h = replace(_host(n), addresses={big: (f"100.66.0.{n}", f"fd00:66::{n}")})
        _register(store, h, key)
        hosts.append(store.get_host(h.id))
    news = [_role_write(h, MemberRole(relayed_by=HostId("host_1")) if h.id != "host_1" else None, big)
            for h in hosts]
    store.set_member_roles(hosts, news, big,
                           change=PendingChange(_change_id(), big, tuple(h.id for h in hosts)))
    assert sum(m.role.relayed_by == "host_1" for m in store.network_snapshot(big)[1]) == MAX_ROLE_WRITES - 1


def test_a_relay_that_is_deleted_or_leaves_releases_its_hosts_in_the_same_write(store: Store) -> None:
    other, key2, both = _second_network(store)
    relay = replace(both, id=HostId("host_7"), public_key=f"{7:043d}=",
                    addresses={NET: ("100.64.0.7", "fd00:64::7"), other: ("100.65.0.7", "fd00:65::7")})
    _register(store, relay, key2)
    _register(store, both, key2)
    relay, host = store.get_host(relay.id), store.get_host(both.id)
    relayed = replace(host, roles={NET: MemberRole(relayed_by=relay.id),
                                   other: MemberRole(relayed_by=relay.id, internet_gateway=HostId("host_9"))},
                      revision=host.revision + 1)
    store.update_host(host, host, changes=_outbox(host))  # a write between: the release reads anew
    host = store.get_host(host.id)
    store.set_member_role(host, _role_write(host, relayed.roles[NET]), NET, change=_change(NET, host.id))
    host = store.get_host(host.id)
    store.set_member_role(host, _role_write(host, relayed.roles[other], other), other,
                          change=_change(other, host.id))
    host = store.get_host(host.id)
    _settle(store)
    _settle(store, other)

    with pytest.raises(ValueError, match="names the released host"):
        store.remove_host_from_network(relay, NET, change=_change(NET, relay.id), released=[host])
    left = store.remove_host_from_network(relay, NET,
                                          change=PendingChange(_change_id(), NET, (relay.id, host.id)),
                                          released=[host])
    host_now = store.get_host(host.id)
    assert host_now.roles == {other: relayed.roles[other]} and host_now.revision == host.revision + 1
    assert store.members(NET, [host.id])[host.id].role == MemberRole()
    assert store.pending_changes(NET)[0].host_ids == (relay.id, host.id)

    with pytest.raises(StaleWriteError, match=f"host {host.id} changed meanwhile"):  # read before the leave
        store.delete_host(left, changes=[PendingChange(_change_id(), other, (relay.id, host.id))],
                          released=[host])
    store.delete_host(left, changes=[PendingChange(_change_id(), other, (relay.id, host.id))],
                      released=[host_now])
    assert store.get_host(relay.id) is None
    assert store.get_host(host.id).roles == {other: MemberRole(internet_gateway=HostId("host_9"))}
    assert store.members(other, [host.id])[host.id].role == MemberRole(internet_gateway=HostId("host_9"))


def test_a_registration_relayed_from_the_start_needs_its_relay_in_every_network(
        backend: Backend, store: Store) -> None:
    other, key2, both = _second_network(store)
    relay = replace(both, id=HostId("host_7"), public_key=f"{7:043d}=",
                    addresses={NET: ("100.64.0.7", "fd00:64::7"), other: ("100.65.0.7", "fd00:65::7")})
    _register(store, relay, key2)
    relay = store.get_host(relay.id)
    key = replace(key2, id=EnrollmentKeyId(f"ek_{uuid.uuid4().hex[:8]}"), relay=relay.id)
    store.put_enrollment_key(key)
    assert store.get_enrollment_key(key.id).relay == relay.id
    joining = replace(both, roles={n: MemberRole(relayed_by=relay.id) for n in (NET, other)})
    _register(store, joining, key)
    assert store.get_host(joining.id).roles == joining.roles
    assert store.members(other, [joining.id])[joining.id].role.relayed_by == relay.id
    assert store.get_host(relay.id).revision == relay.revision + 1  # a concurrent delete of it must re-read

    left = store.remove_host_from_network(store.get_host(relay.id), other,
                                          change=PendingChange(_change_id(), other, (relay.id, joining.id)),
                                          released=[store.get_host(joining.id)])
    assert other not in left.addresses
    late = replace(_host(5),
                   addresses={NET: ("100.64.0.5", "fd00:64::5"), other: ("100.65.0.5", "fd00:65::5")},
                   roles={n: MemberRole(relayed_by=relay.id) for n in (NET, other)})
    store.begin_identity(PendingIdentity(late.id, NOW))
    before = backend.contents()
    with pytest.raises(ConflictError,
                       match=f"relay {relay.id} of this enrollment key is no longer a member of "
                                            f"network {other}") as e:
        store.register_host(late, store.get_enrollment_key(key.id), NOW, changes=_outbox(late))
    assert e.value.code == "relay_gone"
    assert backend.contents() == before


# --- remote-access clients ---------------------------------------------------------------------------


def _client(n: int, *, gateway: str = "host_1", public_key: str | None = None,
            address: tuple[str, str] | None = None, network_id: NetworkId = NET) -> Client:
    ipv4, ipv6 = address or (f"100.64.0.{100 + n}", f"fd00:64::{100 + n:x}")
    return Client(ClientId(f"cli_{n:04d}"), network_id, f"phone-{n}", public_key or f"c{n:042d}=", ipv4, ipv6,
                  HostId(gateway), created_at=NOW, revision=1)


def _client_change(client: Client) -> PendingChange:
    return PendingChange(_change_id(), client.network_id, client_ids=(client.id,))


def test_a_client_is_stored_read_listed_in_pages_and_broadcast(store: Store) -> None:
    _registered(store)
    _settle(store)
    full = replace(_client(3), enabled=False, extra_addresses=("192.168.8.0/24",), dns=("100.64.0.1",),
                   post_up="echo up", post_down="echo down", full_tunnel=True, keepalive=15,
                   server_keyed=True)
    clients = [_client(2), full, _client(1), _client(4), _client(5)]
    changes = [_client_change(c) for c in clients]
    for client, change in zip(clients, changes, strict=True):
        store.create_client(client, change=change)

    ordered = sorted(clients, key=lambda c: c.id)
    assert store.get_client(NET, full.id) == full
    assert store.get_client(NET, "cli_9999") is None and store.get_client("net_missing", full.id) is None
    assert store.network_clients(NET) == ordered
    assert store.network_clients("net_missing") == []
    ids = [c.id for c in ordered]
    assert _walk(lambda c: store.list_clients(NET, 2, c)) == [ids[0:2], ids[2:4], ids[4:]]
    assert store.list_clients(NET, 5).items == tuple(ordered) and store.list_clients(NET, 5).cursor is None
    assert store.clients(NET, [full.id, "cli_9999", ordered[0].id, full.id]) == {full.id: full,
                                                                                ordered[0].id: ordered[0]}
    assert store.clients(NET, []) == {} and store.clients("net_missing", [full.id]) == {}
    assert store.pending_changes(NET) == sorted(changes, key=lambda c: c.id)
    assert [p.client_ids for p in store.pending_changes(NET)] == [(c.id,) for c in clients]


def test_client_cursors_belong_to_their_network_s_list(store: Store) -> None:
    other, key, host = _second_network(store)
    _register(store, host, key)
    for n in (1, 2):
        store.create_client(_client(n), change=_client_change(_client(n)))
        theirs = _client(n, network_id=other, address=(f"100.65.0.{100 + n}", f"fd00:65::{100 + n:x}"),
                         public_key=f"o{n:042d}=")
        store.create_client(theirs, change=_client_change(theirs))
    cursor = store.list_clients(NET, 1).cursor
    assert cursor is not None
    assert [c.id for c in store.list_clients(NET, 1, cursor).items] == ["cli_0002"]
    with pytest.raises(InvalidCursorError, match="another list"):
        store.list_clients(other, 1, cursor)
    with pytest.raises(InvalidCursorError, match="another list"):
        store.list_hosts(1, cursor)
    with pytest.raises(InvalidCursorError, match="another list"):
        store.list_clients(NET, 1, store.list_networks(1).cursor)
    for garbage in ("not a cursor!", cursor[:-3], "A" * 600):
        with pytest.raises(InvalidCursorError):
            store.list_clients(NET, 1, garbage)


@pytest.mark.parametrize("conflict, expected, message", [
    ("ipv4 of a host", AddressTakenError, "100.64.0.1 in net_a is taken"),
    ("ipv6 of a host", AddressTakenError, "fd00:64::1 in net_a is taken"),
    ("ipv4 of a client", AddressTakenError, "100.64.0.101 in net_a is taken"),
    ("key of a host", PublicKeyTakenError, "already used by another host or client"),
    ("key of a client", PublicKeyTakenError, "already used by another host or client"),
    ("same client id", StaleWriteError, "client id collision"),
    ("network being deleted", NetworkGoneError, "net_a was deleted or is being deleted"),
    ("network missing", NetworkGoneError, "net_b was deleted or is being deleted"),
])
def test_a_client_refused_by_a_condition_says_which_and_writes_nothing(
        backend: Backend, store: Store, conflict: str, expected: type[Exception], message: str) -> None:
    first, _ = _registered(store)
    taken = _client(1)
    store.create_client(taken, change=_client_change(taken))
    second = _client(2)
    candidate = {
        "ipv4 of a host": replace(second, ipv4=first.addresses[NET][0]),
        "ipv6 of a host": replace(second, ipv6=first.addresses[NET][1]),
        "ipv4 of a client": replace(second, ipv4=taken.ipv4),
        "key of a host": replace(second, public_key=first.public_key),
        "key of a client": replace(second, public_key=taken.public_key),
        "same client id": replace(second, id=taken.id),
        "network being deleted": second,
        "network missing": replace(second, network_id=NetworkId("net_b")),
    }[conflict]
    if conflict == "network being deleted":
        store.mark_network_deleting(NET)
    before = backend.contents()
    with pytest.raises(expected, match=message):
        store.create_client(candidate, change=_client_change(candidate))
    assert backend.contents() == before, "a refused client writes nothing (no item, claim or change)"


def test_hosts_cannot_take_a_client_s_address_or_key(backend: Backend, store: Store) -> None:
    first, key = _registered(store)
    client = _client(1)
    store.create_client(client, change=_client_change(client))
    squatters = ((_host(2, address=(client.ipv4, "fd00:64::2")), AddressTakenError),
                 (_host(3, address=("100.64.0.3", client.ipv6)), AddressTakenError),
                 (_host(4, public_key=client.public_key), PublicKeyTakenError))
    for squatter, _ in squatters:
        store.begin_identity(PendingIdentity(squatter.id, NOW))
    before = backend.contents()
    for squatter, expected in squatters:
        with pytest.raises(expected):
            store.register_host(squatter, key, NOW, changes=_outbox(squatter))
    current = store.get_host(first.id)
    with pytest.raises(PublicKeyTakenError, match="another host or client"):
        store.update_host(current, replace(current, public_key=client.public_key), changes=_outbox(current))
    with pytest.raises(StaleWriteError, match="address claim changed"):  # never a client's address
        store.remove_host_from_network(replace(current, addresses={NET: (client.ipv4, client.ipv6)}), NET,
                                       change=_change(NET, first.id))
    assert backend.contents() == before


def test_a_client_update_replaces_it_and_moves_its_key_claim(backend: Backend, store: Store) -> None:
    first, key = _registered(store)
    _register(store, _host(2), key)
    client = _client(1)
    store.create_client(client, change=_client_change(client))
    _settle(store)

    disabled = replace(client, name="renamed", enabled=False, gateway=HostId("host_2"), dns=("1.1.1.1",),
                       extra_addresses=("192.168.1.0/24",), post_up="x", revision=99)
    change = _client_change(client)
    store.update_client(client, disabled, change=change)
    stored = replace(disabled, revision=client.revision + 1)  # the store counts the revision
    assert store.get_client(NET, client.id) == stored
    assert store.pending_changes(NET) == [change]

    rekeyed = replace(stored, public_key="R" * 43 + "=")
    store.update_client(stored, rekeyed, change=_client_change(client))
    rekeyed = replace(rekeyed, revision=stored.revision + 1)
    assert store.get_client(NET, client.id) == rekeyed
    with pytest.raises(PublicKeyTakenError):  # the new key is the client's now
        _register(store, _host(5, public_key=rekeyed.public_key), key)
    _register(store, _host(6, public_key=client.public_key), key)  # and the old one is free

    before = backend.contents()
    with pytest.raises(StaleWriteError, match="client changed meanwhile"):
        store.update_client(stored, replace(stored, name="stale"), change=_client_change(client))
    with pytest.raises(StaleWriteError, match="client changed meanwhile"):  # a deleted client
        store.update_client(_client(8), replace(_client(8), name="gone"), change=_client_change(_client(8)))
    with pytest.raises(PublicKeyTakenError, match="another host or client"):
        store.update_client(rekeyed, replace(rekeyed, public_key=first.public_key),
                            change=_client_change(client))
    with pytest.raises(StaleWriteError, match="key claim changed"):  # never another's key claim
        store.update_client(replace(rekeyed, public_key=first.public_key),
                            replace(rekeyed, public_key="S" * 43 + "="), change=_client_change(client))
    with pytest.raises(ValueError, match="keeps its"):  # addresses stay with their claims
        store.update_client(rekeyed, replace(rekeyed, ipv4="100.64.0.200"), change=_client_change(client))
    with pytest.raises(ValueError, match="names that client"):
        store.update_client(rekeyed, replace(rekeyed, name="x"), change=_change(NET))
    assert backend.contents() == before


def test_a_deleted_client_frees_its_addresses_and_key(backend: Backend, store: Store) -> None:
    first, key = _registered(store)
    client = _client(1)
    store.create_client(client, change=_client_change(client))
    _settle(store)
    before = backend.contents()
    with pytest.raises(StaleWriteError, match="client changed meanwhile"):
        store.delete_client(replace(client, revision=0), change=_client_change(client))
    with pytest.raises(StaleWriteError, match="key claim changed"):  # never a host's key claim
        store.delete_client(replace(client, public_key=first.public_key), change=_client_change(client))
    with pytest.raises(StaleWriteError, match="address claim changed"):  # never a host's address
        store.delete_client(replace(client, ipv4=first.addresses[NET][0]), change=_client_change(client))
    assert backend.contents() == before

    change = _client_change(client)
    store.delete_client(client, change=change)
    assert store.get_client(NET, client.id) is None and store.network_clients(NET) == []
    assert store.clients(NET, [client.id]) == {}
    assert store.pending_changes(NET) == [change]
    with pytest.raises(StaleWriteError, match="client changed meanwhile"):  # a second delete
        store.delete_client(client, change=_client_change(client))
    _register(store, _host(2, public_key=client.public_key, address=(client.ipv4, client.ipv6)), key)


def test_a_network_with_clients_is_not_deleted_and_a_deleted_one_leaves_none(backend: Backend,
                                                                            store: Store) -> None:
    first, _ = _registered(store)
    client = _client(1)
    store.create_client(client, change=_client_change(client))
    store.remove_host_from_network(first, NET, change=_change(NET, first.id))
    with pytest.raises(StaleWriteError, match="still has clients"):
        store.delete_network(NET, store.network_registry().version)
    assert store.get_client(NET, client.id) == client

    store.delete_client(client, change=_client_change(client))
    store.delete_network(NET, store.network_registry().version)
    assert backend.leftovers(NET) == []
    store.create_network(Network(NET, "again", "100.64.0.0/24", "fd00:64::/64"),
                         store.network_registry().version)
    store.create_client(client, change=_client_change(client))  # its key and addresses are free


def test_a_status_report_keeps_where_each_peer_is_now(store: Store) -> None:
    first, _ = _registered(store)
    status = HostStatus(online=True, last_seen=NOW, peers=(
        PeerStatus("p" * 43 + "=", 5, 10, 20, endpoint="198.51.100.7:40123"),
        PeerStatus("q" * 43 + "=", 7, endpoint="[2001:db8::7]:51820"),
        PeerStatus("r" * 43 + "=", None)))
    assert store.record_host_status(first.id, status) is True
    assert store.get_host(first.id).status == status
