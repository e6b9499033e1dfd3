"""The :class:`~chalicelib.service.ports.Store` port in memory, for fast tests and dry runs.

It keeps the records of :class:`~chalicelib.adapters.dynamodb.DynamoStore` in
dictionaries and makes the same promises: every multi-record change is checked
in full before anything is written (all or nothing), each failed condition raises
the error the DynamoDB store raises for it, and when several conditions fail at
once the one DynamoDB reports first wins (conditions in its wire order: checks,
deletes, puts, updates). Cursors are the same strings the DynamoDB store hands out,
and pending changes come back as they were written, in the same order.
``tests/contract/test_store_contract.py`` holds both stores to one contract, so this
one cannot drift from the real thing.

One lock serialises every call, so a concurrent writer is never seen half way; the
races DynamoDB reports as transaction conflicts cannot happen here. Never used by a
deployed stage: nothing survives the process.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from ..domain.changes import ChangeId, PendingChange
from ..domain.election import Promise
from ..domain.groupkey import GroupKeyRecord
from ..domain.ids import ClientId, EnrollmentKeyId, HostId, NetworkId
from ..domain.models import AdminKey, Client, EnrollmentKey, GatewayGroup, Host, HostStatus, Member, Network
from ..errors import NotFoundError, UnavailableError
from ..service.ports import (
    IdentityWithdrawnError,
    KeyRefusedError,
    KeyWrite,
    NetworkRegistry,
    Page,
    PendingIdentity,
    PromiseWrite,
    PublicKeyTakenError,
    RegistryEntry,
    StaleWriteError,
    check_group_outbox,
    outbox_by_network,
)
from .dynamodb import cursor as cursors
from .dynamodb import layout
from .dynamodb.clients import check_outbox, check_same_client, client_key_taken
from .dynamodb.groups import check_same_group
from .dynamodb.hosts import address_taken, network_gone, relay_gone, released_writes, role_writes, with_role

__all__ = ["MemoryStore"]

T = TypeVar("T")
K = TypeVar("K")
S = TypeVar("S", bound=str)
V = TypeVar("V")
ErrorFactory = Callable[[], Exception]


class _Tx:
    """A transaction: conditions are judged on the state before it, then every change is
    made, or none. A failed condition raises the error it stands for; when several fail,
    the first in DynamoDB's wire order (checks, deletes, puts, updates) wins, as there."""

    _ORDER = ("check", "delete", "put", "update")

    def __init__(self) -> None:
        self._conditions: dict[str, list[tuple[bool, ErrorFactory]]] = {k: [] for k in self._ORDER}
        self._changes: list[Callable[[], None]] = []

    def _add(self, op: str, ok: bool, on_fail: ErrorFactory, change: Callable[[], None] | None) -> None:
        self._conditions[op].append((ok, on_fail))
        if change is not None:
            self._changes.append(change)

    def check(self, ok: bool, on_fail: ErrorFactory) -> None:
        self._add("check", ok, on_fail, None)

    def delete(self, change: Callable[[], None], ok: bool = True, *, on_fail: ErrorFactory) -> None:
        self._add("delete", ok, on_fail, change)

    def put(self, change: Callable[[], None], ok: bool = True, *, on_fail: ErrorFactory) -> None:
        self._add("put", ok, on_fail, change)

    def update(self, change: Callable[[], None], ok: bool = True, *, on_fail: ErrorFactory) -> None:
        self._add("update", ok, on_fail, change)

    def commit(self) -> None:
        for op in self._ORDER:
            for ok, on_fail in self._conditions[op]:
                if not ok:
                    raise on_fail()
        for change in self._changes:
            change()


def _stale(message: str) -> ErrorFactory:
    return lambda: StaleWriteError(message)


def _withdrawn() -> Exception:
    return IdentityWithdrawnError(
        "registration took too long and its certificate was withdrawn; register again")


@dataclass
class _NetworkState:
    """A network with what DynamoDB keeps on its item beside the record."""

    network: Network
    deleting: bool = False
    lease: tuple[str, int] | None = None  # owner, until


def _stored_host(host: Host) -> Host:
    """The host as a new record keeps it: no status reported yet, its own maps."""
    return replace(host, addresses=dict(host.addresses), roles=dict(host.roles), status=HostStatus(),
                   enrollment_key_id=host.enrollment_key_id or None)


def _copy(host: Host) -> Host:
    """The stored host as a reader gets it: maps of its own, so a caller cannot change the store's."""
    return replace(host, addresses=dict(host.addresses), roles=dict(host.roles))


class MemoryStore:
    """Topology storage in dictionaries (see the module's docstring for what it promises)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._registry_version = 0
        self._registry: dict[NetworkId, RegistryEntry] = {}
        self._networks: dict[NetworkId, _NetworkState] = {}
        # As in DynamoDB's partitions, a network's members and pending changes are kept
        # apart from its record (which the stream's lease and the deleting mark are on).
        self._members: dict[NetworkId, dict[HostId, Member]] = defaultdict(dict)
        self._pending: dict[NetworkId, dict[ChangeId, PendingChange]] = defaultdict(dict)
        self._deltas: dict[NetworkId, dict[int, bytes]] = defaultdict(dict)  # expiry: the keep bound only
        self._clients: dict[NetworkId, dict[ClientId, Client]] = defaultdict(dict)
        # issue 11: gateway groups, their key records and the control plane's promises, per network
        self._groups: dict[NetworkId, dict[str, GatewayGroup]] = defaultdict(dict)
        self._group_keys: dict[NetworkId, dict[str, GroupKeyRecord]] = defaultdict(dict)
        self._promises: dict[NetworkId, dict[str, Promise]] = defaultdict(dict)
        # Claims are owned by a host or a client (its id), as DynamoDB's claim items.
        self._address_claims: dict[tuple[NetworkId, str], str] = {}
        self._key_claims: dict[str, str] = {}
        self._hosts: dict[HostId, Host] = {}
        self._identities: dict[HostId, PendingIdentity] = {}
        self._keys: dict[EnrollmentKeyId, EnrollmentKey] = {}
        self._admin_keys: dict[str, AdminKey] = {}

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _page(records: Mapping[S, T], kind: str, prefix: str, limit: int, cursor: str | None) -> Page[T]:
        """Like the DynamoDB store's pages: id order, its cursors, ``None`` when nothing follows."""
        after = None
        if cursor is not None:
            after = cursors.decode(cursor, kind, prefix, layout.META)["pk"]["S"][len(prefix):]
        ids = sorted(i for i in records if after is None or i > after)
        page = ids[:limit]
        next_cursor = cursors.encode(kind, prefix + page[-1], layout.META) if len(ids) > limit else None
        return Page(tuple(records[i] for i in page), next_cursor)

    def _put_new(self, records: dict[K, V], key: K, value: V, what: str) -> None:
        """Store a new record; one already at ``key`` is refused with the DynamoDB store's error."""
        with self._lock:
            if key in records:
                raise UnavailableError(f"the database refused the write: {what} exists already")
            records[key] = value

    def _record_change(self, tx: _Tx, change: PendingChange) -> None:
        """Put the write's pending change (its outbox entry) in the write's transaction."""
        pending = self._pending[change.network_id]
        tx.put(_setter(pending, change.id, change), change.id not in pending,
               on_fail=_stale("change id collision; retry"))

    def _registry_update(self, tx: _Tx, version: int, change: Callable[[], None]) -> None:
        def apply() -> None:
            self._registry_version = version + 1
            change()

        tx.update(apply, self._registry_version == version,
                  on_fail=_stale("networks changed meanwhile; retry"))

    # ---------------------------------------------------------------- admin keys
    def put_admin_key(self, key: AdminKey) -> None:
        self._put_new(self._admin_keys, key.id, key, f"admin key {key.id}")

    def get_admin_key(self, key_id: str) -> AdminKey | None:
        with self._lock:
            return self._admin_keys.get(key_id)

    def list_admin_keys(self) -> list[AdminKey]:
        with self._lock:
            return [self._admin_keys[i] for i in sorted(self._admin_keys)]

    # ------------------------------------------------------------------ networks
    def network_registry(self) -> NetworkRegistry:
        with self._lock:
            entries = tuple(self._registry[i] for i in sorted(self._registry))
            return NetworkRegistry(self._registry_version, entries)

    def create_network(self, network: Network, registry_version: int) -> None:
        entry = RegistryEntry(network.id, network.name, network.ipv4_cidr, network.ipv6_cidr)
        with self._lock:
            tx = _Tx()
            self._registry_update(tx, registry_version, _setter(self._registry, network.id, entry))
            tx.put(_setter(self._networks, network.id, _NetworkState(network)),
                   network.id not in self._networks, on_fail=_stale("network id collision; retry"))
            tx.commit()

    def update_network(self, network: Network, registry_version: int, *,
                       change: PendingChange | None) -> None:
        entry = RegistryEntry(network.id, network.name, network.ipv4_cidr, network.ipv6_cidr)
        if change is not None:
            outbox_by_network([change], [network.id])
        with self._lock:
            state = self._networks.get(network.id)
            tx = _Tx()
            self._registry_update(tx, registry_version, _setter(self._registry, network.id, entry))

            def apply() -> None:
                assert state is not None
                state.network = replace(state.network, name=network.name, listen_port=network.listen_port,
                                        keepalive=network.keepalive, mtu=network.mtu)

            tx.update(apply, state is not None,
                      on_fail=lambda: NotFoundError(f"network {network.id} does not exist"))
            if change is not None:
                self._record_change(tx, change)
            tx.commit()

    def get_network(self, network_id: str) -> Network | None:
        with self._lock:
            state = self._networks.get(NetworkId(network_id))
            return None if state is None else state.network

    def list_networks(self, limit: int, cursor: str | None = None) -> Page[Network]:
        with self._lock:
            networks = {i: s.network for i, s in self._networks.items()}
            return self._page(networks, "network", layout.NETWORK_PREFIX, limit, cursor)

    def network_snapshot(self, network_id: str) -> tuple[Network, list[Member]] | None:
        with self._lock:
            state = self._networks.get(NetworkId(network_id))
            if state is None:
                return None
            members = self._members.get(state.network.id, {})
            return state.network, [members[h] for h in sorted(members)]

    def mark_network_deleting(self, network_id: str) -> None:
        with self._lock:
            state = self._networks.get(NetworkId(network_id))
            if state is None:
                raise NotFoundError(f"network {network_id} does not exist")
            state.deleting = True

    def unmark_network_deleting(self, network_id: str) -> None:
        with self._lock:
            state = self._networks.get(NetworkId(network_id))
            if state is not None:
                state.deleting = False

    def delete_network(self, network_id: str, registry_version: int) -> None:
        nid = NetworkId(network_id)
        with self._lock:
            if self._members.get(nid):
                raise StaleWriteError("the network still has members")
            if self._clients.get(nid):
                raise StaleWriteError("the network still has clients")
            tx = _Tx()
            self._registry_update(tx, registry_version, _popper(self._registry, nid))
            tx.delete(_popper(self._networks, nid), nid in self._networks,
                      on_fail=lambda: NotFoundError(f"network {network_id} does not exist"))
            tx.commit()
            # What is left (broadcast bookkeeping) is meaningless without the network.
            self._pending.pop(nid, None)
            self._deltas.pop(nid, None)
            self._members.pop(nid, None)
            self._clients.pop(nid, None)
            self._groups.pop(nid, None)
            self._group_keys.pop(nid, None)
            self._promises.pop(nid, None)
            for claim in [c for c in self._address_claims if c[0] == nid]:
                del self._address_claims[claim]

    # ---------------------------------------------------------- enrollment keys
    def put_enrollment_key(self, key: EnrollmentKey) -> None:
        self._put_new(self._keys, key.id, key, f"enrollment key {key.id}")

    def get_enrollment_key(self, key_id: str) -> EnrollmentKey | None:
        with self._lock:
            return self._keys.get(EnrollmentKeyId(key_id))

    def list_enrollment_keys(self, limit: int, cursor: str | None = None) -> Page[EnrollmentKey]:
        with self._lock:
            return self._page(self._keys, "enrollment_key", layout.KEY_PREFIX, limit, cursor)

    def revoke_enrollment_key(self, key_id: str) -> None:
        with self._lock:
            key = self._keys.get(EnrollmentKeyId(key_id))
            if key is None:
                raise NotFoundError(f"enrollment key {key_id} does not exist")
            self._keys[key.id] = replace(key, revoked=True)

    # ---------------------------------------------------- registrations under way
    def begin_identity(self, pending: PendingIdentity) -> None:
        self._put_new(self._identities, pending.host_id, pending, f"a pending identity of {pending.host_id}")

    def note_certificate(self, host_id: HostId, certificate_id: str) -> None:
        with self._lock:
            pending = self._identities.get(host_id)
            if pending is None or pending.abandoned:
                raise _withdrawn()
            self._identities[host_id] = replace(pending, certificate_id=certificate_id)

    def pending_identities(self) -> list[PendingIdentity]:
        with self._lock:
            return [self._identities[h] for h in sorted(self._identities)]

    def abandon_identity(self, host_id: HostId) -> PendingIdentity | None:
        with self._lock:
            pending = self._identities.get(host_id)
            if host_id in self._hosts or pending is None:
                return None
            pending = self._identities[host_id] = replace(pending, abandoned=True)
            return pending

    def forget_identity(self, host_id: HostId) -> None:
        with self._lock:
            self._identities.pop(host_id, None)

    # -------------------------------------------------------------------- hosts
    def register_host(self, host: Host, key: EnrollmentKey, now: int, *,
                      changes: Sequence[PendingChange]) -> None:
        outbox = outbox_by_network(changes, host.addresses, host_id=host.id)
        with self._lock:
            tx = _Tx()
            stored = self._keys.get(key.id)

            def refused() -> Exception:
                current = self._keys.get(key.id)
                reason = current.refusal(now) if current else "this enrollment key was deleted"
                return KeyRefusedError(reason or "this enrollment key cannot be used now")

            # The conditions are the DynamoDB store's: the caller's key says which apply.
            usable = stored is not None and not stored.revoked
            if key.expires_at is not None:
                usable = usable and stored is not None and stored.expires_at is not None \
                    and stored.expires_at > now
            if key.uses_left is not None:
                def use() -> None:
                    assert stored is not None and stored.uses_left is not None
                    self._keys[key.id] = replace(stored, uses_left=stored.uses_left - 1)

                tx.update(use, usable and stored is not None and stored.uses_left is not None
                          and stored.uses_left > 0, on_fail=refused)
            else:
                tx.check(usable, refused)
            tx.put(_setter(self._hosts, host.id, _stored_host(host)), host.id not in self._hosts,
                   on_fail=_stale("host id collision; retry"))
            # The host and its certificate become one: the pending identity goes, and a
            # sweeper that withdrew the certificate (abandoned) stops the commit.
            pending = self._identities.get(host.id)
            tx.delete(_popper(self._identities, host.id), pending is not None and not pending.abandoned,
                      on_fail=_withdrawn)
            tx.put(_setter(self._key_claims, host.public_key, host.id),
                   host.public_key not in self._key_claims,
                   on_fail=lambda: PublicKeyTakenError(
                       "this WireGuard public key is already used by another host or client; "
                       "generate a new key pair for this host"))
            for network_id, (ipv4, ipv6) in sorted(host.addresses.items()):
                state = self._networks.get(network_id)
                tx.check(state is not None and not state.deleting, network_gone(network_id))
                for address in (ipv4, ipv6):
                    tx.put(_setter(self._address_claims, (network_id, address), host.id),
                           (network_id, address) not in self._address_claims,
                           on_fail=address_taken(network_id, address))
                self._member_ops(tx, host, network_id, outbox[network_id])
            if key.relay is not None:
                self._relay_ops(tx, key.relay, host.network_ids)
            tx.commit()

    def _relay_ops(self, tx: _Tx, relay: str, network_ids: Sequence[NetworkId]) -> None:
        """The DynamoDB store's: the relay is a member of every network; its revision moves on."""
        for network_id in network_ids:
            tx.check(HostId(relay) in self._members[network_id], relay_gone(relay, network_id))
        current = self._hosts.get(HostId(relay))

        def bump() -> None:
            assert current is not None
            self._hosts[current.id] = replace(current, revision=current.revision + 1)

        tx.update(bump, current is not None, on_fail=relay_gone(relay, network_ids[0]))

    def _role_ops(self, tx: _Tx, old: Host, stored: Host, network_ids: Sequence[NetworkId]) -> None:
        """Store ``stored``'s roles and revision if ``old`` is current, and its member records."""
        current = self._hosts.get(old.id)

        def apply() -> None:
            assert current is not None
            self._hosts[old.id] = replace(current, roles=dict(stored.roles), revision=stored.revision)

        tx.update(apply, current is not None and current.revision == old.revision,
                  on_fail=_stale(f"host {old.id} changed meanwhile; retry"))
        for network_id in network_ids:
            tx.put(_setter(self._members[network_id], old.id, stored.member_of(network_id)),
                   on_fail=_stale("member write conflicted; retry"))

    def get_host(self, host_id: str) -> Host | None:
        with self._lock:
            host = self._hosts.get(HostId(host_id))
            return None if host is None else _copy(host)

    def list_hosts(self, limit: int, cursor: str | None = None) -> Page[Host]:
        with self._lock:
            hosts = {i: _copy(h) for i, h in self._hosts.items()}
            return self._page(hosts, "host", layout.HOST_PREFIX, limit, cursor)

    def update_host(self, old: Host, new: Host, *, changes: Sequence[PendingChange]) -> None:
        outbox = outbox_by_network(changes, new.network_ids, host_id=new.id)
        stored = replace(new, roles=old.roles)  # roles are not this write's (see the DynamoDB store)
        with self._lock:
            current = self._hosts.get(old.id)
            tx = _Tx()

            def apply() -> None:
                assert current is not None
                self._hosts[old.id] = replace(
                    current, name=new.name, public_key=new.public_key, listen_port=new.listen_port,
                    endpoints=new.endpoints, observed_endpoint=new.observed_endpoint or None, tags=new.tags,
                    revision=old.revision + 1)

            tx.update(apply, current is not None and current.revision == old.revision,
                      on_fail=_stale("the host changed meanwhile; retry"))
            if old.public_key != new.public_key:
                tx.put(_setter(self._key_claims, new.public_key, new.id),
                       new.public_key not in self._key_claims,
                       on_fail=lambda: PublicKeyTakenError(
                           "this WireGuard public key is already used by another host or client"))
                tx.delete(_popper(self._key_claims, old.public_key),
                          on_fail=_stale("key claim changed; retry"))
            for network_id in new.network_ids:
                self._member_ops(tx, stored, network_id, outbox[network_id])
            tx.commit()

    def _member_ops(self, tx: _Tx, host: Host, network_id: NetworkId, change: PendingChange) -> None:
        """Write the host's member record in the network and record the change to broadcast."""
        tx.put(_setter(self._members[network_id], host.id, host.member_of(network_id)),
               on_fail=_stale("member write conflicted; retry"))
        self._record_change(tx, change)

    def _leave_ops(self, tx: _Tx, host: Host, network_id: NetworkId, change: PendingChange) -> None:
        tx.delete(_popper(self._members[network_id], host.id),
                  on_fail=_stale("member changed meanwhile; retry"))
        for address in host.addresses[network_id]:
            claim = (network_id, address)
            tx.delete(_popper(self._address_claims, claim), self._address_claims.get(claim) == host.id,
                      on_fail=_stale("address claim changed meanwhile; retry"))
        self._record_change(tx, change)

    def remove_host_from_network(self, host: Host, network_id: NetworkId, *, change: PendingChange,
                                 released: Sequence[Host] = ()) -> Host:
        outbox_by_network([change], [network_id], host_id=host.id)
        releases = released_writes(host, released, [network_id], {network_id: change})
        addresses = {k: v for k, v in host.addresses.items() if k != network_id}
        roles = {k: v for k, v in host.roles.items() if k != network_id}
        with self._lock:
            current = self._hosts.get(host.id)
            tx = _Tx()

            def apply() -> None:
                assert current is not None
                self._hosts[host.id] = replace(current, addresses=dict(addresses), roles=dict(roles),
                                               revision=host.revision + 1)

            tx.update(apply, current is not None and current.revision == host.revision,
                      on_fail=_stale("the host changed meanwhile; retry"))
            self._leave_ops(tx, host, network_id, change)
            for old, new, touched in releases:
                self._role_ops(tx, old, new, touched)
            tx.commit()
        return replace(host, addresses=addresses, roles=roles, revision=host.revision + 1)

    def delete_host(self, host: Host, *, changes: Sequence[PendingChange],
                    released: Sequence[Host] = ()) -> None:
        outbox = outbox_by_network(changes, host.network_ids, host_id=host.id)
        releases = released_writes(host, released, host.network_ids, outbox)
        with self._lock:
            current = self._hosts.get(host.id)
            tx = _Tx()
            tx.delete(_popper(self._hosts, host.id),
                      current is not None and current.revision == host.revision,
                      on_fail=_stale("the host changed meanwhile; retry"))
            tx.delete(_popper(self._key_claims, host.public_key),
                      self._key_claims.get(host.public_key) == host.id,
                      on_fail=_stale("key claim changed; retry"))
            for network_id in host.network_ids:
                self._leave_ops(tx, host, network_id, outbox[network_id])
            for old, new, touched in releases:
                self._role_ops(tx, old, new, touched)
            tx.commit()

    def set_member_role(self, old: Host, new: Host, network_id: NetworkId, *, change: PendingChange) -> None:
        outbox_by_network([change], [network_id], host_id=old.id)
        stored = with_role(old, new, network_id)
        with self._lock:
            current = self._hosts.get(old.id)
            tx = _Tx()

            def apply() -> None:
                assert current is not None
                self._hosts[old.id] = replace(current, roles=dict(stored.roles), revision=stored.revision)

            tx.update(apply, current is not None and current.revision == old.revision,
                      on_fail=_stale("the host changed meanwhile; retry"))
            self._member_ops(tx, stored, network_id, change)
            tx.commit()

    def set_member_roles(self, olds: Sequence[Host], news: Sequence[Host], network_id: NetworkId, *,
                         change: PendingChange) -> None:
        stored = role_writes(olds, news, network_id, change)
        with self._lock:
            tx = _Tx()
            for old, new in zip(olds, stored, strict=True):
                self._role_ops(tx, old, new, [network_id])
            self._record_change(tx, change)
            tx.commit()

    def record_host_status(self, host_id: str, status: HostStatus) -> bool:
        with self._lock:
            host = self._hosts.get(HostId(host_id))
            if host is None:
                return False
            self._hosts[host.id] = replace(host, status=replace(
                status, reported_endpoints=tuple(status.reported_endpoints), peers=tuple(status.peers),
                latency=tuple(status.latency), direct=tuple(status.direct),
                groups=tuple(status.groups)))
            return True

    def host_statuses(self, host_ids: Sequence[str]) -> dict[HostId, HostStatus]:
        with self._lock:
            return {h.id: replace(h.status, peers=()) for x in host_ids
                    if (h := self._hosts.get(HostId(x))) is not None}

    def mark_offline(self, host_id: str, seen_before: int) -> bool:
        with self._lock:
            host = self._hosts.get(HostId(host_id))
            if host is None or not host.status.online:
                return False
            if host.status.last_seen is not None and host.status.last_seen >= seen_before:
                return False
            self._hosts[host.id] = replace(host, status=replace(host.status, online=False))
            return True

    # ------------------------------------------------------- remote-access clients
    def create_client(self, client: Client, *, change: PendingChange) -> None:
        check_outbox(change, client)
        nid = client.network_id
        with self._lock:
            state, clients = self._networks.get(nid), self._clients[nid]
            tx = _Tx()
            # In the DynamoDB store's order: the network's check, then the puts as it makes them.
            tx.check(state is not None and not state.deleting, network_gone(nid))
            tx.put(_setter(clients, client.id, client), client.id not in clients,
                   on_fail=_stale("client id collision; retry"))
            for address in (client.ipv4, client.ipv6):
                tx.put(_setter(self._address_claims, (nid, address), client.id),
                       (nid, address) not in self._address_claims, on_fail=address_taken(nid, address))
            tx.put(_setter(self._key_claims, client.public_key, client.id),
                   client.public_key not in self._key_claims, on_fail=client_key_taken)
            self._record_change(tx, change)
            tx.commit()

    def get_client(self, network_id: str, client_id: str) -> Client | None:
        with self._lock:
            return self._clients.get(NetworkId(network_id), {}).get(ClientId(client_id))

    def list_clients(self, network_id: str, limit: int, cursor: str | None = None) -> Page[Client]:
        pk = layout.network_pk(network_id)
        after = None
        if cursor is not None:
            start = cursors.decode_in_partition(cursor, "client", pk, layout.CLIENT_PREFIX)
            after = start["sk"]["S"][len(layout.CLIENT_PREFIX):]
        with self._lock:
            clients = self._clients.get(NetworkId(network_id), {})
            ids = sorted(i for i in clients if after is None or i > after)
            page = ids[:limit]
            more = len(ids) > limit
            return Page(tuple(clients[i] for i in page),
                        cursors.encode("client", pk, layout.client_sk(page[-1])) if more else None)

    def network_clients(self, network_id: str) -> list[Client]:
        with self._lock:
            clients = self._clients.get(NetworkId(network_id), {})
            return [clients[i] for i in sorted(clients)]

    def clients(self, network_id: str, client_ids: Sequence[str]) -> dict[ClientId, Client]:
        with self._lock:
            found = self._clients.get(NetworkId(network_id), {})
            return {ClientId(c): found[ClientId(c)] for c in dict.fromkeys(client_ids) if c in found}

    def update_client(self, old: Client, new: Client, *, change: PendingChange) -> None:
        check_same_client(old, new)
        check_outbox(change, old)
        stored = new.with_changes(revision=old.revision + 1)
        with self._lock:
            clients = self._clients[old.network_id]
            current = clients.get(old.id)
            tx = _Tx()
            tx.put(_setter(clients, old.id, stored), current is not None and current.revision == old.revision,
                   on_fail=_stale("the client changed meanwhile; retry"))
            if old.public_key != new.public_key:
                tx.put(_setter(self._key_claims, new.public_key, new.id),
                       new.public_key not in self._key_claims, on_fail=client_key_taken)
                tx.delete(_popper(self._key_claims, old.public_key),
                          self._key_claims.get(old.public_key) == old.id,
                          on_fail=_stale("key claim changed; retry"))
            self._record_change(tx, change)
            tx.commit()

    def delete_client(self, client: Client, *, change: PendingChange) -> None:
        check_outbox(change, client)
        nid = client.network_id
        with self._lock:
            clients = self._clients[nid]
            current = clients.get(client.id)
            tx = _Tx()
            tx.delete(_popper(clients, client.id),
                      current is not None and current.revision == client.revision,
                      on_fail=_stale("the client changed meanwhile; retry"))
            for address in (client.ipv4, client.ipv6):
                claim = (nid, address)
                tx.delete(_popper(self._address_claims, claim), self._address_claims.get(claim) == client.id,
                          on_fail=_stale("address claim changed meanwhile; retry"))
            tx.delete(_popper(self._key_claims, client.public_key),
                      self._key_claims.get(client.public_key) == client.id,
                      on_fail=_stale("key claim changed; retry"))
            self._record_change(tx, change)
            tx.commit()

    # ------------------------------------------------------- HA gateway groups (issue 11)
    def create_group(self, group: GatewayGroup, *, change: PendingChange) -> None:
        check_group_outbox(change, group)
        nid = group.network_id
        with self._lock:
            state, groups = self._networks.get(nid), self._groups[nid]
            tx = _Tx()
            tx.check(state is not None and not state.deleting, network_gone(nid))
            tx.put(_setter(groups, group.id, group), group.id not in groups,
                   on_fail=_stale("group id collision; retry"))
            self._record_change(tx, change)
            tx.commit()

    def get_group(self, network_id: str, group_id: str) -> GatewayGroup | None:
        with self._lock:
            return self._groups.get(NetworkId(network_id), {}).get(group_id)

    def network_groups(self, network_id: str) -> list[GatewayGroup]:
        with self._lock:
            groups = self._groups.get(NetworkId(network_id), {})
            return [groups[i] for i in sorted(groups)]

    def groups(self, network_id: str, group_ids: Sequence[str]) -> dict[str, GatewayGroup]:
        with self._lock:
            found = self._groups.get(NetworkId(network_id), {})
            return {g: found[g] for g in dict.fromkeys(group_ids) if g in found}

    def update_group(self, old: GatewayGroup, new: GatewayGroup, *, change: PendingChange,
                     key: KeyWrite | None = None) -> None:
        check_same_group(old, new)
        check_group_outbox(change, old)
        stored = new.with_changes(revision=old.revision + 1)
        with self._lock:
            groups = self._groups[old.network_id]
            current = groups.get(old.id)
            tx = _Tx()
            tx.put(_setter(groups, old.id, stored), current is not None and current.revision == old.revision,
                   on_fail=_stale("the group changed meanwhile; retry"))
            if key is not None:
                self._put_key(tx, key)
            self._record_change(tx, change)
            tx.commit()

    def delete_group(self, group: GatewayGroup, *, change: PendingChange) -> None:
        check_group_outbox(change, group)
        nid = group.network_id
        with self._lock:
            current = self._groups[nid].get(group.id)
            tx = _Tx()
            tx.delete(_popper(self._groups[nid], group.id),
                      current is not None and current.revision == group.revision,
                      on_fail=_stale("the group changed meanwhile; retry"))
            tx.delete(_popper(self._group_keys[nid], group.id), on_fail=_stale("key record changed; retry"))
            tx.delete(_popper(self._promises[nid], group.id), on_fail=_stale("promise changed; retry"))
            self._record_change(tx, change)
            tx.commit()

    def get_group_key(self, network_id: str, group_id: str) -> GroupKeyRecord | None:
        with self._lock:
            return self._group_keys.get(NetworkId(network_id), {}).get(group_id)

    def put_group_key(self, write: KeyWrite) -> None:
        with self._lock:
            tx = _Tx()
            self._put_key(tx, write)
            tx.commit()

    def _put_key(self, tx: _Tx, write: KeyWrite) -> None:
        keys = self._group_keys[write.new.network_id]
        tx.put(_setter(keys, write.new.group_id, write.new), keys.get(write.new.group_id) == write.old,
               on_fail=_stale("the group's key record changed meanwhile; fetch it again"))

    def get_group_promise(self, network_id: str, group_id: str) -> Promise | None:
        with self._lock:
            return self._promises.get(NetworkId(network_id), {}).get(group_id)

    def put_group_promise(self, network_id: str, group_id: str, write: PromiseWrite) -> None:
        with self._lock:
            tx = _Tx()
            self._put_promise(tx, NetworkId(network_id), group_id, write)
            tx.commit()

    def _put_promise(self, tx: _Tx, network_id: NetworkId, group_id: str, write: PromiseWrite) -> None:
        promises = self._promises[network_id]
        tx.put(_setter(promises, group_id, write.new), promises.get(group_id) == write.old,
               on_fail=_stale("a concurrent vote changed the promise; vote again"))

    # ------------------------------------------------------------ update stream
    def acquire_publish_lease(self, network_id: str, owner: str, now: int, ttl: int) -> bool:
        with self._lock:
            state = self._networks.get(NetworkId(network_id))
            if state is None or (state.lease is not None and state.lease[1] >= now):
                return False
            state.lease = (owner, now + ttl)
            return True

    def release_publish_lease(self, network_id: str, owner: str) -> None:
        with self._lock:
            state = self._networks.get(NetworkId(network_id))
            if state is not None and state.lease is not None and state.lease[0] == owner:
                state.lease = None

    def pending_changes(self, network_id: str, limit: int | None = None) -> list[PendingChange]:
        with self._lock:
            pending = self._pending.get(NetworkId(network_id), {})
            return [pending[i] for i in sorted(pending)[:limit]]

    def advance_seq(self, network_id: str, owner: str, now: int, ttl: int) -> Network:
        with self._lock:
            state = self._networks.get(NetworkId(network_id))
            if state is None or state.lease is None or state.lease[0] != owner:
                raise StaleWriteError("the publish lease was lost")
            state.lease = (owner, now + ttl)
            state.network = replace(state.network, seq=state.network.seq + 1)
            return state.network

    def members(self, network_id: str, host_ids: Sequence[str]) -> dict[HostId, Member]:
        with self._lock:
            found = self._members.get(NetworkId(network_id), {})
            return {HostId(h): found[HostId(h)] for h in dict.fromkeys(host_ids) if h in found}

    def clear_pending(self, network_id: str, change_ids: Sequence[ChangeId]) -> None:
        with self._lock:
            pending = self._pending.get(NetworkId(network_id), {})
            for change_id in change_ids:
                pending.pop(change_id, None)

    def networks_with_pending(self) -> list[NetworkId]:
        with self._lock:
            return sorted(i for i, pending in self._pending.items() if pending)

    def network_head(self, network_id: str) -> tuple[Network, bool] | None:
        with self._lock:
            state = self._networks.get(NetworkId(network_id))
            if state is None:
                return None
            return state.network, bool(self._pending.get(NetworkId(network_id)))

    def log_delta(self, network_id: str, seq: int, payload: bytes, *, expires_at: int, keep: int) -> None:
        with self._lock:
            logged = self._deltas[NetworkId(network_id)]
            logged[seq] = bytes(payload)
            logged.pop(seq - keep, None)

    def deltas_since(self, network_id: str, seq: int, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            logged = self._deltas.get(NetworkId(network_id), {})
            return [(s, logged[s]) for s in sorted(s for s in logged if s > seq)[:limit]]


def _setter(records: dict[K, V], key: K, value: V) -> Callable[[], None]:
    """The change that stores ``value`` at ``key`` (made when its transaction commits)."""
    return lambda: records.__setitem__(key, value)


def _popper(records: dict[K, V], key: K) -> Callable[[], None]:
    """The change that removes ``key`` (nothing when it is gone already, as a DynamoDB delete)."""
    def pop() -> None:
        records.pop(key, None)

    return pop
