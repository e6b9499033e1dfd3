"""Hosts, their memberships, roles and claims, and the registrations under way.

A host is one item (with its role in each network: gateway, internet use); each network
it is in holds its member record (with that role) and a claim of each of its addresses,
and its WireGuard key has a claim of its own. Registration, update, leaving, a role's
change and deletion each write all of these, the enrollment key's use and the pending
change to broadcast in one transaction, under the conditions that make addresses and
keys unique (``attribute_not_exists`` puts) and the host's ``revision`` current.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ...domain.changes import PendingChange
from ...domain.ids import HostId, NetworkId
from ...domain.models import EnrollmentKey, Host, HostStatus, MemberRole
from ...errors import ConflictError
from ...service.ports import (
    MAX_ROLE_WRITES,
    AddressTakenError,
    IdentityWithdrawnError,
    KeyRefusedError,
    NetworkGoneError,
    Page,
    PendingIdentity,
    PublicKeyTakenError,
    outbox_by_network,
    released_roles,
)
from . import layout, mapping
from .base import StoreBase
from .tx import ErrorFactory, Tx, guard, guard_update, stale

__all__ = ["HostRecords", "with_role", "role_writes", "released_writes", "relay_gone", "network_gone",
           "address_taken"]


def _withdrawn() -> Exception:
    return IdentityWithdrawnError(
        "registration took too long and its certificate was withdrawn; register again")


def network_gone(network_id: str) -> ErrorFactory:
    """What a write into a network that is gone or being deleted raises (hosts and clients, both stores)."""
    return lambda: NetworkGoneError(f"network {network_id} was deleted or is being deleted")


def address_taken(network_id: str, address: str) -> ErrorFactory:
    """What a claim of an address another host or client holds raises (both stores)."""
    return lambda: AddressTakenError(network_id, address)


def with_role(old: Host, new: Host, network_id: NetworkId) -> Host:
    """``old`` as :meth:`~chalicelib.service.ports.Store.set_member_role` stores it: its role in
    ``network_id`` is ``new``'s, every other field and role stays as it is, and the revision is
    the next. An empty role is no entry (``roles`` holds only what a host does). Raises
    :class:`ValueError` for a network the host is not in (its role would never be broadcast)."""
    if network_id not in old.addresses:
        raise ValueError(f"host {old.id} is not a member of {network_id}: it has no role there")
    return old.with_role(network_id, new.roles.get(network_id, MemberRole()))


def role_writes(olds: Sequence[Host], news: Sequence[Host], network_id: NetworkId,
                change: PendingChange) -> list[Host]:
    """The hosts as :meth:`~chalicelib.service.ports.Store.set_member_roles` stores them (each
    :func:`with_role`); :class:`ValueError` for a write it refuses (too many hosts, one twice,
    a change that does not name them all)."""
    if len(olds) != len(news) or not 1 <= len(olds) <= MAX_ROLE_WRITES:
        raise ValueError(f"one write changes the roles of 1 to {MAX_ROLE_WRITES} hosts, given as pairs")
    if len({h.id for h in olds}) != len(olds) or any(o.id != n.id for o, n in zip(olds, news, strict=True)):
        raise ValueError("each host once, its old and new record in the same place")
    for old in olds:
        outbox_by_network([change], [network_id], host_id=old.id)
    return [with_role(o, n, network_id) for o, n in zip(olds, news, strict=True)]


def released_writes(relay: Host, released: Sequence[Host], network_ids: Sequence[NetworkId],
                    changes: dict[NetworkId, PendingChange]) -> list[tuple[Host, Host, list[NetworkId]]]:
    """Each host ``relay`` releases as it leaves ``network_ids``: (as read, as stored, the networks
    whose member record changes); :class:`ValueError` when a change does not name it."""
    out = []
    for old in released:
        new = released_roles(relay.id, old, network_ids)
        touched = [n for n in network_ids if old.roles.get(n, MemberRole()) != new.roles.get(n, MemberRole())]
        for n in touched:
            if old.id not in changes[n].host_ids:
                raise ValueError(f"the pending change of {n} names the released host {old.id}")
        out.append((old, new, touched))
    return out


def relay_gone(relay: str, network_id: str) -> ErrorFactory:
    """What a registration with a key whose relay is no longer a member raises (both stores)."""
    return lambda: ConflictError(
        f"the relay {relay} of this enrollment key is no longer a member of network {network_id}; "
        "ask for a new key", code="relay_gone")


class HostRecords(StoreBase):
    # ---------------------------------------------------- registrations under way
    def begin_identity(self, pending: PendingIdentity) -> None:
        self._put_new(mapping.identity_item(self._items, pending))

    def note_certificate(self, host_id: HostId, certificate_id: str) -> None:
        ident = self._items.identity
        guard_update(ident(layout.identity_pk(host_id), layout.PENDING),
                     [ident.certificate_id.set(certificate_id)],
                     ident.pk.exists() & ident.abandoned.does_not_exist(), _withdrawn())

    def pending_identities(self) -> list[PendingIdentity]:
        return [mapping.pending_identity(i) for i in self._by_kind(self._items.identity, "pending_identity")]

    def abandon_identity(self, host_id: HostId) -> PendingIdentity | None:
        h, ident = self._items.host, self._items.identity

        class _Nothing(Exception):
            pass

        def build(tx: Tx) -> None:
            # The host's absence and the claim in one transaction: a registration that
            # commits first makes this fail; one that comes later finds the claim.
            tx.check(h, layout.host_pk(host_id), layout.META, condition=h.pk.does_not_exist(),
                     on_fail=_Nothing)
            tx.update(ident(layout.identity_pk(host_id), layout.PENDING), actions=[ident.abandoned.set(True)],
                      condition=ident.pk.exists(), on_fail=_Nothing)

        try:
            self._transact(build)
        except _Nothing:
            return None
        item = self._get(ident, layout.identity_pk(host_id), layout.PENDING)
        return None if item is None else mapping.pending_identity(item)

    def forget_identity(self, host_id: HostId) -> None:
        item = self._items.identity(layout.identity_pk(host_id), layout.PENDING)
        guard(item.delete)

    # -------------------------------------------------------------------- hosts
    def register_host(self, host: Host, key: EnrollmentKey, now: int, *,
                      changes: Sequence[PendingChange]) -> None:
        k, net, claim = self._items.key, self._items.network, self._items.claim
        outbox = outbox_by_network(changes, host.addresses, host_id=host.id)

        def refused() -> Exception:
            item = self._get(k, layout.key_pk(key.id), layout.META)
            reason = mapping.enrollment_key(item).refusal(now) if item else "this enrollment key was deleted"
            return KeyRefusedError(reason or "this enrollment key cannot be used now")

        def build(tx: Tx) -> None:
            usable = k.pk.exists() & (k.revoked == False)  # noqa: E712 (a DynamoDB condition)
            if key.expires_at is not None:
                usable = usable & (k.expires_at > now)
            if key.uses_left is not None:
                tx.update(
                    k(layout.key_pk(key.id), layout.META),
                    actions=[k.uses_left.add(-1)],
                    condition=usable & (k.uses_left > 0),
                    on_fail=refused,
                )
            else:
                tx.check(k, layout.key_pk(key.id), layout.META, condition=usable, on_fail=refused)
            tx.put(
                mapping.host_item(self._items, host),
                condition=self._items.host.pk.does_not_exist(),
                on_fail=stale("host id collision; retry"),
            )
            # The host and its certificate become one: the pending identity goes, and a
            # sweeper that withdrew the certificate (abandoned) stops the commit.
            ident = self._items.identity
            tx.delete(ident(layout.identity_pk(host.id), layout.PENDING),
                      condition=ident.pk.exists() & ident.abandoned.does_not_exist(),
                      on_fail=_withdrawn)
            tx.put(
                claim(layout.wgkey_pk(host.public_key), layout.CLAIM, owner=host.id),
                condition=claim.pk.does_not_exist(),
                on_fail=lambda: PublicKeyTakenError(
                    "this WireGuard public key is already used by another host or client; "
                    "generate a new key pair for this host"
                ),
            )
            for network_id, (ipv4, ipv6) in sorted(host.addresses.items()):
                pk = layout.network_pk(network_id)
                tx.check(
                    net,
                    pk,
                    layout.META,
                    condition=net.pk.exists() & net.deleting.does_not_exist(),
                    on_fail=network_gone(network_id),
                )
                for address in (ipv4, ipv6):
                    tx.put(
                        claim(pk, layout.ip_sk(address), owner=host.id),
                        condition=claim.pk.does_not_exist(),
                        on_fail=address_taken(network_id, address),
                    )
                self._member_ops(tx, host, network_id, outbox[network_id])
            if key.relay is not None:
                self._relay_ops(tx, key.relay, host.network_ids)

        self._transact(build)

    def _relay_ops(self, tx: Tx, relay: str, network_ids: Sequence[str]) -> None:
        """A registration relayed by ``relay``: it must be a member of every network, and its
        revision moves on, so a concurrent deletion of the relay (which releases the hosts it
        relays, as it read them) fails and reads them again."""
        h, m = self._items.host, self._items.member
        for network_id in network_ids:
            tx.check(m, layout.network_pk(network_id), layout.member_sk(relay), condition=m.pk.exists(),
                     on_fail=relay_gone(relay, network_id))
        tx.update(h(layout.host_pk(relay), layout.META), actions=[h.revision.add(1)],
                  condition=h.pk.exists(), on_fail=relay_gone(relay, network_ids[0]))

    def _role_ops(self, tx: Tx, old: Host, stored: Host, network_ids: Sequence[NetworkId]) -> None:
        """Store ``stored``'s roles and revision, if ``old`` is current, and its member records in
        ``network_ids`` (the change is the caller's to record)."""
        h = self._items.host
        tx.update(
            h(layout.host_pk(old.id), layout.META),
            actions=[h.roles.set(mapping.roles_map(stored.roles)), h.revision.set(stored.revision)],
            condition=h.revision == old.revision,
            on_fail=stale(f"host {old.id} changed meanwhile; retry"),
        )
        for network_id in network_ids:
            tx.put(mapping.member_item(self._items, stored.member_of(network_id)),
                   on_fail=stale("member write conflicted; retry"))

    def get_host(self, host_id: str) -> Host | None:
        item = self._get(self._items.host, layout.host_pk(host_id), layout.META)
        return None if item is None else mapping.host(item)

    def list_hosts(self, limit: int, cursor: str | None = None) -> Page[Host]:
        return self._page_by_kind(self._items.host, "host", layout.HOST_PREFIX, limit, cursor, mapping.host)

    def update_host(self, old: Host, new: Host, *, changes: Sequence[PendingChange]) -> None:
        h, claim = self._items.host, self._items.claim
        key_changed = old.public_key != new.public_key
        outbox = outbox_by_network(changes, new.network_ids, host_id=new.id)
        # Roles are not this write's: they stay as stored (``old``'s, current under the revision
        # condition), on the host item and in its member records.
        stored = replace(new, roles=old.roles)

        def build(tx: Tx) -> None:
            tx.update(
                h(layout.host_pk(old.id), layout.META),
                actions=[
                    h.name.set(new.name),
                    h.public_key.set(new.public_key),
                    h.listen_port.set(new.listen_port),
                    h.endpoints.set(list(new.endpoints)),
                    h.observed_endpoint.set(new.observed_endpoint)
                    if new.observed_endpoint
                    else h.observed_endpoint.remove(),
                    h.tags.set(list(new.tags)),
                    h.revision.set(old.revision + 1),
                ],
                condition=h.revision == old.revision,
                on_fail=stale("the host changed meanwhile; retry"),
            )
            if key_changed:
                tx.put(
                    claim(layout.wgkey_pk(new.public_key), layout.CLAIM, owner=new.id),
                    condition=claim.pk.does_not_exist(),
                    on_fail=lambda: PublicKeyTakenError(
                        "this WireGuard public key is already used by another host or client"
                    ),
                )
                tx.delete(claim(layout.wgkey_pk(old.public_key), layout.CLAIM),
                          on_fail=stale("key claim changed; retry"))
            for network_id in new.network_ids:
                self._member_ops(tx, stored, network_id, outbox[network_id])

        self._transact(build)

    def _member_ops(self, tx: Tx, host: Host, network_id: NetworkId, change: PendingChange) -> None:
        """Write the host's member record in the network and record the change to broadcast."""
        tx.put(mapping.member_item(self._items, host.member_of(network_id)),
               on_fail=stale("member write conflicted; retry"))
        self._record_change(tx, change)

    def _leave_ops(self, tx: Tx, host: Host, network_id: str, change: PendingChange) -> None:
        claim = self._items.claim
        pk = layout.network_pk(network_id)
        tx.delete(self._items.member(pk, layout.member_sk(host.id)),
                  on_fail=stale("member changed meanwhile; retry"))
        for address in host.addresses[NetworkId(network_id)]:
            tx.delete(
                claim(pk, layout.ip_sk(address)),
                condition=claim.owner == host.id,
                on_fail=stale("address claim changed meanwhile; retry"),
            )
        self._record_change(tx, change)

    def remove_host_from_network(self, host: Host, network_id: NetworkId, *, change: PendingChange,
                                 released: Sequence[Host] = ()) -> Host:
        h = self._items.host
        outbox_by_network([change], [network_id], host_id=host.id)
        releases = released_writes(host, released, [network_id], {network_id: change})
        addresses = {k: v for k, v in host.addresses.items() if k != network_id}
        roles = {k: v for k, v in host.roles.items() if k != network_id}

        def build(tx: Tx) -> None:
            tx.update(
                h(layout.host_pk(host.id), layout.META),
                actions=[
                    h.addresses.set({k: [v[0], v[1]] for k, v in addresses.items()}),
                    h.roles.set(mapping.roles_map(roles)),
                    h.revision.set(host.revision + 1),
                ],
                condition=h.revision == host.revision,
                on_fail=stale("the host changed meanwhile; retry"),
            )
            self._leave_ops(tx, host, network_id, change)
            for old, new, touched in releases:
                self._role_ops(tx, old, new, touched)

        self._transact(build)
        return replace(host, addresses=addresses, roles=roles, revision=host.revision + 1)

    def delete_host(self, host: Host, *, changes: Sequence[PendingChange],
                    released: Sequence[Host] = ()) -> None:
        h, claim = self._items.host, self._items.claim
        outbox = outbox_by_network(changes, host.network_ids, host_id=host.id)
        releases = released_writes(host, released, host.network_ids, outbox)

        def build(tx: Tx) -> None:
            tx.delete(
                h(layout.host_pk(host.id), layout.META),
                condition=h.revision == host.revision,
                on_fail=stale("the host changed meanwhile; retry"),
            )
            tx.delete(
                claim(layout.wgkey_pk(host.public_key), layout.CLAIM),
                condition=claim.owner == host.id,
                on_fail=stale("key claim changed; retry"),
            )
            for network_id in host.network_ids:
                self._leave_ops(tx, host, network_id, outbox[network_id])
            for old, new, touched in releases:
                self._role_ops(tx, old, new, touched)

        self._transact(build)

    def set_member_role(self, old: Host, new: Host, network_id: NetworkId, *, change: PendingChange) -> None:
        h = self._items.host
        outbox_by_network([change], [network_id], host_id=old.id)
        stored = with_role(old, new, network_id)

        def build(tx: Tx) -> None:
            tx.update(
                h(layout.host_pk(old.id), layout.META),
                actions=[h.roles.set(mapping.roles_map(stored.roles)), h.revision.set(stored.revision)],
                condition=h.revision == old.revision,
                on_fail=stale("the host changed meanwhile; retry"),
            )
            self._member_ops(tx, stored, network_id, change)

        self._transact(build)

    def set_member_roles(self, olds: Sequence[Host], news: Sequence[Host], network_id: NetworkId, *,
                         change: PendingChange) -> None:
        stored = role_writes(olds, news, network_id, change)

        def build(tx: Tx) -> None:
            for old, new in zip(olds, stored, strict=True):
                self._role_ops(tx, old, new, [network_id])
            self._record_change(tx, change)

        self._transact(build)

    def record_host_status(self, host_id: str, status: HostStatus) -> bool:
        h = self._items.host
        return guard_update(
            h(layout.host_pk(host_id), layout.META),
            [
                h.online.set(status.online),
                h.last_seen.set(status.last_seen),
                h.agent_version.set(status.agent_version),
                h.reported_endpoints.set(list(status.reported_endpoints)),
                h.peers.set(mapping.status_peers(status)),
                h.latency.set(mapping.status_latency(status)),
                h.direct.set(mapping.status_direct(status)),
                h.groups.set(mapping.status_groups(status)),
            ],
            h.pk.exists(),
            None,
        )

    def host_statuses(self, host_ids: Sequence[str]) -> dict[HostId, HostStatus]:
        h = self._items.host
        keys = [(layout.host_pk(x), layout.META) for x in dict.fromkeys(host_ids)]
        # only what a status is made of: a gateway's reported peers (up to ~44 KB) stay on the server
        wanted = ["id", "online", "last_seen", "agent_version", "reported_endpoints", "latency", "direct",
                  "groups"]
        items = guard(lambda: list(h.batch_get(keys, attributes_to_get=wanted)))
        return {HostId(i.id): mapping.host_status(i) for i in items}

    def mark_offline(self, host_id: str, seen_before: int) -> bool:
        h = self._items.host
        return guard_update(
            h(layout.host_pk(host_id), layout.META),
            [h.online.set(False)],
            h.pk.exists()
            & (h.online == True)  # noqa: E712 (a DynamoDB condition)
            & (h.last_seen.does_not_exist() | (h.last_seen < seen_before)),
            None,
        )
