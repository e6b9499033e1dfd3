"""Hosts: enrollment, changes by the host or an admin, removal, and their configuration."""

from __future__ import annotations

import builtins  # ``list`` in the class body is Hosts.list
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

from ..domain import ipam, protocol, validate
from ..domain.changes import PendingChange
from ..domain.election import ELECTION_PORT
from ..domain.ids import HostId, NetworkId, new_id, new_token
from ..domain.models import EnrollmentKey, Host, MemberRole, Network
from ..domain.plan import HostView, network_plan
from ..errors import ConflictError, NotFoundError, UnavailableError
from . import topology
from .deps import Deps, log, retrying
from .ports import (
    MAX_TRANSACTION_ITEMS,
    PAGE_LIMIT_DEFAULT,
    AddressTakenError,
    IdentityWithdrawnError,
    IssuedCertificate,
    Page,
    PendingIdentity,
    StaleWriteError,
    page_limit,
)
from .stream import Stream

MAX_REGISTER_ATTEMPTS = 40


@dataclass(frozen=True)
class Registration:
    host: Host
    certificate: IssuedCertificate
    host_token: str
    mqtt_endpoint: str
    mqtt_port: int
    status_topic: str  # where the host publishes its reports


@dataclass(frozen=True)
class NetworkConfig:
    snapshot: protocol.Snapshot
    view: HostView


@dataclass(frozen=True)
class HostConfig:
    """Every network of a host: a full snapshot, or (for one it said it knows) the deltas it missed."""

    snapshots: tuple[NetworkConfig, ...]
    catch_ups: tuple[protocol.CatchUp, ...] = ()


# A catch-up is sent as deltas only while they stay small; beyond, the full snapshot is cheaper
# to apply (and a burst of large deltas would pass API Gateway's and Lambda's 6 MB).
CATCH_UP_MAX_BYTES = 256 * 1024
# How long a catch-up waits to send a change that is stored but not broadcast yet (the broker
# was down when it was made) before it answers with the full snapshot instead.
CATCH_UP_FLUSH_WAIT = 2.0


def observed_endpoint(source_ip: str | None, listen_port: int) -> str | None:
    """The address the API saw a host's request come from, as an endpoint candidate.

    Loopback and unspecified addresses say nothing about reachability and are dropped.
    """
    if not source_ip:
        return None
    try:
        addr = ipaddress.ip_address(source_ip)
    except ValueError:
        return None
    if addr.is_loopback or addr.is_unspecified or addr.is_link_local:
        return None
    return validate.format_endpoint(str(addr), listen_port)


class Hosts:
    def __init__(self, deps: Deps, stream: Stream) -> None:
        self._d = deps
        self._stream = stream

    # ------------------------------------------------------------------ enroll
    def register(self, key: EnrollmentKey, *, name: str, wg_public_key: str, listen_port: int,
                 endpoints: list[str], csr_pem: str, source_ip: str | None = None) -> Registration:
        """Create a host in every network of ``key``, consuming one use of it.

        The certificate is signed from the host's CSR (its private key never
        leaves it). Everything is undone when the key turns out to be used up.
        A pending identity is recorded before the certificate is issued and goes
        in the transaction that commits the host: if this call dies in between,
        :meth:`~chalicelib.service.orphans.Orphans.sweep` removes the certificate
        and its broker access later.
        """
        d = self._d
        validate.name(name)
        validate.wireguard_key(wg_public_key)
        validate.port(listen_port, "listen_port")
        eps = validate.endpoints(endpoints)
        networks = [self._network_of_key(n) for n in key.networks]
        self._refuse_relay_of_key(key)
        host_id = HostId(new_id("host", d.rng))  # type: ignore[arg-type]
        token = new_token("host", host_id, d.rng)
        d.store.begin_identity(PendingIdentity(host_id, d.clock.now()))
        certificate: IssuedCertificate | None = None
        try:
            certificate = d.identity.issue(host_id, csr_pem)
            d.store.note_certificate(host_id, certificate.certificate_id)
            d.identity.set_networks(host_id, key.networks)
            host, outbox = self._commit_registration(key, networks, Host(
                id=host_id, name=name, public_key=wg_public_key, listen_port=listen_port,
                endpoints=eps, certificate_id=certificate.certificate_id,
                token_hash=token.secret_hash, enrollment_key_id=key.id,
                observed_endpoint=observed_endpoint(source_ip, listen_port), tags=key.tags,
                roles={} if key.relay is None else {n: MemberRole(relayed_by=key.relay)
                                                     for n in key.networks},
                created_at=d.clock.now(),
            ))
        except BaseException as e:
            self._withdraw(host_id, certificate, claimed=isinstance(e, IdentityWithdrawnError))
            raise
        self._stream.send(outbox)
        return Registration(host, certificate, str(token), d.identity.mqtt_endpoint,
                            d.identity.mqtt_port, d.identity.status_topic(host_id))

    def _withdraw(self, host_id: HostId, certificate: IssuedCertificate | None, *, claimed: bool) -> None:
        """Undo a registration that failed before its commit; never raises (the first
        error is the one to report). What is left here, the sweeper removes: its pending
        identity stays until everything is gone, and it alone owns one it ``claimed``."""
        d = self._d
        try:
            d.identity.discard(host_id, None if certificate is None else certificate.certificate_id)
            if not claimed:
                d.store.forget_identity(host_id)
        except Exception as e:  # noqa: BLE001 (logged; the sweeper finishes it)
            log.warning("registration of %s failed; the sweeper removes its identity later: %s",
                        host_id, e)

    def _network_of_key(self, network_id: str) -> Network:
        network = self._d.store.get_network(network_id)
        if network is None:
            raise ConflictError(f"network {network_id} of this enrollment key no longer exists; "
                                "ask for a new key", code="network_gone")
        return network

    def _refuse_relay_of_key(self, key: EnrollmentKey) -> None:
        """409 when the key's relay cannot relay a new host now: it left a network of the key, or
        it is relayed itself (no chains). The registration's transaction holds the first again."""
        if key.relay is None:
            return
        for network_id in key.networks:
            relay = self._d.store.members(network_id, [key.relay]).get(key.relay)
            if relay is None:
                raise ConflictError(f"the relay {key.relay} of this enrollment key is no longer a member of "
                                    f"network {network_id}; ask for a new key", code="relay_gone")
            if relay.role.relayed_by is not None:
                raise ConflictError(f"the relay {key.relay} of this enrollment key is relayed itself in "
                                    f"network {network_id} (no relay chains); ask an admin to fix the relay "
                                    "or the key",
                                    code="relay_chain")

    def _commit_registration(self, key: EnrollmentKey, networks: list[Network],
                             host: Host) -> tuple[Host, tuple[PendingChange, ...]]:
        """The host as committed with its addresses, and the changes its commit recorded."""
        d = self._d
        # Random picks rarely collide; after a collision, pick from the known-free addresses.
        used: dict[str, set[str]] = {}
        for _ in range(MAX_REGISTER_ATTEMPTS):
            addresses = {
                NetworkId(n.id): (ipam.allocate(n.ipv4_cidr, used.get(n.id, ()), d.rng),
                                  ipam.allocate(n.ipv6_cidr, used.get(n.id, ()), d.rng))
                for n in networks
            }
            candidate = replace(host, addresses=addresses)
            outbox = self._stream.new_changes(addresses, host_ids=(host.id,))
            try:
                d.store.register_host(candidate, key, d.clock.now(), changes=outbox)
                return candidate, outbox
            except AddressTakenError as e:
                used.setdefault(e.network_id, set()).update(self._claimed(e.network_id))
                used[e.network_id].add(e.address)
            except StaleWriteError:
                d.sleep(d.rng.uniform(0, 0.05))
        raise UnavailableError("too many hosts are enrolling at this moment; try again")

    def _claimed(self, network_id: str) -> set[str]:
        """The addresses held in the network now, by hosts and by remote-access clients."""
        records = topology.records(self._d.store, network_id)
        return set() if records is None else topology.used_addresses(records)

    # ------------------------------------------------------------------ read
    def get(self, host_id: str) -> Host:
        host = self._d.store.get_host(host_id)
        if host is None:
            raise NotFoundError(f"host {host_id} does not exist")
        return host

    def list(self, limit: int = PAGE_LIMIT_DEFAULT, cursor: str | None = None) -> Page[Host]:
        """One page of hosts in id order (ids are random, so this is no order a person reads).

        Raises :class:`~chalicelib.errors.InvalidInputError` for a limit out of range or a
        cursor this list did not hand out.
        """
        return self._d.store.list_hosts(page_limit(limit), cursor)

    def config(self, host: Host, known: Mapping[str, int] | None = None) -> HostConfig:
        """Each of the host's networks: a full snapshot with the host's own view of it, or,
        for a network in ``known`` (network id → the seq the host has), what it missed.

        An agent that reconnects after an outage passes what it has; when nothing changed
        the answer costs one small read per network (:meth:`Store.network_head`) instead of
        every member. It gets the full snapshot when the missed deltas are no longer kept
        (or would be large), when it is ahead (the network was re-created), and when a
        change is stored but could not be broadcast within :data:`CATCH_UP_FLUSH_WAIT` —
        which this call tries first, so the broadcast a broker outage held back goes out
        with the first agent back.
        """
        known = known or {}
        snapshots, catch_ups = [], []
        for network_id in host.network_ids:
            if network_id in known and (catch_up := self._catch_up(network_id, known[network_id])):
                catch_ups.append(catch_up)
                continue
            records = topology.records(self._d.store, network_id)
            if records is None or host.id not in records.members:
                continue
            snapshots.append(NetworkConfig(
                protocol.Snapshot(records.network, tuple(records.members.values()),
                                  tuple(records.clients.values()), tuple(records.gateway_groups.values())),
                network_plan(records)[host.id]))
        return HostConfig(tuple(snapshots), tuple(catch_ups))

    def _catch_up(self, network_id: NetworkId, seq: int) -> protocol.CatchUp | None:
        """The deltas after ``seq`` of a network, or None when a full snapshot must be sent."""
        store = self._d.store
        head = store.network_head(network_id)
        if head is not None and head[1]:  # a change waits: send it now (the broker is back)
            self._stream.flush(network_id, wait=CATCH_UP_FLUSH_WAIT)
            head = store.network_head(network_id)
        if head is None or head[1]:
            return None
        network = head[0]
        if seq > network.seq or network.seq - seq > self._d.settings.delta_log_keep:
            return None
        logged = store.deltas_since(network_id, seq, limit=network.seq - seq) if network.seq > seq else []
        if [s for s, _ in logged] != list(range(seq + 1, network.seq + 1)):
            return None  # a hole: a delta that was never logged or is gone
        if sum(len(p) for _, p in logged) > CATCH_UP_MAX_BYTES:
            return None
        deltas = []
        for _, payload in logged:
            try:
                msg = protocol.decode(payload)
            except protocol.ProtocolError:  # logged by a control plane of an older schema
                return None
            if not isinstance(msg, protocol.Delta):
                return None
            deltas.append(msg)
        return protocol.CatchUp(network_id, network.seq, tuple(deltas))

    # ------------------------------------------------------------------ change
    def update(self, host_id: str, *, name: str | None = None, wg_public_key: str | None = None,
               listen_port: int | None = None, endpoints: builtins.list[str] | None = None,
               tags: builtins.list[str] | None = None, source_ip: str | None = None) -> Host:
        """The host with these fields changed, broadcast to its networks before this returns.

        Fields that are already so change nothing: no write and no broadcast.
        """
        if name is not None:
            validate.name(name)
        if wg_public_key is not None:
            validate.wireguard_key(wg_public_key)
        if listen_port is not None:
            validate.port(listen_port, "listen_port")
        eps = validate.endpoints(endpoints) if endpoints is not None else None
        new_tags = validate.tags(tags) if tags is not None else None

        def attempt() -> tuple[Host, tuple[PendingChange, ...]]:
            old = self.get(host_id)
            port = old.listen_port if listen_port is None else listen_port
            seen = observed_endpoint(source_ip, port) if source_ip else None
            new = replace(
                old,
                name=old.name if name is None else name,
                public_key=old.public_key if wg_public_key is None else wg_public_key,
                listen_port=port,
                endpoints=old.endpoints if eps is None else eps,
                tags=old.tags if new_tags is None else new_tags,
                observed_endpoint=seen or (old.observed_endpoint if listen_port is None else None),
                revision=old.revision + 1,
            )
            if new == replace(old, revision=old.revision + 1):
                return old, ()
            if port != old.listen_port:
                self._refuse_floating_port(new)
            outbox = self._stream.new_changes(new.network_ids, host_ids=(new.id,))
            self._d.store.update_host(old, new, changes=outbox)
            return new, outbox

        host, outbox = retrying(self._d, "updating the host", attempt)
        self._stream.send(outbox)
        return host

    def _refuse_floating_port(self, host: Host) -> None:
        """409 when ``host`` is a member of a gateway group (issue 11) whose floating port would be its
        new mesh port or underlay echo port (port + 1): the group interface listens there."""
        for network_id in host.network_ids:
            for group in self._d.store.network_groups(network_id):
                ports = (host.listen_port, host.listen_port + 1)
                if host.id in group.members and group.floating_port in ports:
                    raise ConflictError(
                        f"host {host.id} is a member of gateway group {group.name} ({group.id}), whose "
                        f"floating port is {group.floating_port}; choose a listen port other than it and "
                        "one below it", code="floating_port_in_use")
                if host.id in group.members and ELECTION_PORT in ports:
                    raise ConflictError(
                        f"host {host.id} is a member of gateway group {group.name} ({group.id}), whose "
                        f"members hold their election on port {ELECTION_PORT}; choose a listen port other "
                        "than it and one below it", code="floating_port_in_use")

    def _refuse_group_member(self, host: Host, network_ids: Sequence[NetworkId]) -> None:
        """409 when ``host`` is a member of a gateway group (issue 11) in one of ``network_ids``: it
        holds the group's key, so an admin removes it from the group first, and that answer says
        whether it still knows the key (rotate-key ends that). As a gateway's role cannot end while a
        group names it (:mod:`chalicelib.service.gateways`)."""
        found = [(network_id, g) for network_id in network_ids
                 for g in self._d.store.network_groups(network_id) if host.id in g.members]
        if found:
            network_id, first = found[0]
            names = ", ".join(f"{g.name} ({g.id})" for _, g in found)
            raise ConflictError(
                f"host {host.id} is a member of gateway groups: {names}; remove it from them first "
                f"(DELETE /v1/networks/{network_id}/gateway-groups/{first.id}/members/{host.id}): the "
                "answer says whether it still knows the group's key", code="gateway_in_use")

    def leave_network(self, network_id: str, host_ids: Sequence[str]) -> builtins.list[Host]:
        """Take these hosts out of one network: free their addresses and their broker
        permission, then broadcast it once for all of them; returns the hosts as stored now."""
        outbox: list[PendingChange] = []

        def attempt(host_id: str) -> Host:
            host = self.get(host_id)
            if network_id not in host.addresses:
                return host
            released = self._relayed_by(host, [NetworkId(network_id)])
            (change,) = self._stream.new_changes([NetworkId(network_id)],
                                                 host_ids=(host.id, *(h.id for h in released)))
            left = self._d.store.remove_host_from_network(host, NetworkId(network_id), change=change,
                                                          released=released)
            outbox.append(change)
            return left

        hosts = []
        for host_id in host_ids:
            host = retrying(self._d, "removing the host from the network", partial(attempt, host_id))
            self._d.identity.set_networks(host.id, host.network_ids)
            hosts.append(host)
        self._stream.send(outbox)
        return hosts

    def delete(self, host_id: str) -> Host:
        """Remove the host from every network, free its addresses, revoke its certificate.

        The host's own agent is told first, on its inbox (while its certificate may
        still read it): a broker keeps a revoked client's connection open but delivers
        it nothing more, so without the word the agent would learn of its deletion
        only at its next ``/config`` call.
        """
        def attempt() -> tuple[Host, tuple[PendingChange, ...]]:
            host = self.get(host_id)
            self._refuse_group_member(host, host.network_ids)
            released = self._relayed_by(host, host.network_ids)
            outbox = tuple(c for n in host.network_ids for c in self._stream.new_changes(
                [n], host_ids=(host.id, *(h.id for h in released if n in h.addresses))))
            self._d.store.delete_host(host, changes=outbox, released=released)
            return host, outbox

        host, outbox = retrying(self._d, "deleting the host", attempt)
        self._tell_deleted(host.id)
        self._d.identity.revoke(host.id, host.certificate_id)
        self._stream.send(outbox)
        return host

    def _relayed_by(self, relay: Host, network_ids: Sequence[NetworkId]) -> builtins.list[Host]:
        """The hosts ``relay`` relays in these networks, and those with an automatic pair that names
        it (as peer or via), as stored now: what it releases when it leaves them, in the same write
        (so none is left relayed by a host that is gone, nor paired with or through it).

        409 when they are more than one write can hold: unrelay some first."""
        ids: dict[HostId, int] = {}  # host -> in how many of these networks ``relay`` relays it
        for network_id in network_ids:
            records = topology.records(self._d.store, network_id)
            if records is None:
                continue
            for h, m in sorted(records.members.items()):
                if h != relay.id and (m.role.relayed_by == relay.id
                                      or any(relay.id in p for p in m.role.pair_relays)):
                    ids[h] = ids.get(h, 0) + 1
        # DynamoDB's 100 items: the host, its key claim, per network its member, two address
        # claims and the change; per released host its item and its member records
        if 2 + 4 * len(network_ids) + sum(1 + n for n in ids.values()) > MAX_TRANSACTION_ITEMS:
            raise ConflictError(f"host {relay.id} relays {len(ids)} hosts; release them before it goes "
                                f"(DELETE /v1/networks/NETWORK_ID/relays/{relay.id})", code="relay_in_use")
        return [found for hid in ids if (found := self._d.store.get_host(hid)) is not None]

    def _tell_deleted(self, host_id: HostId) -> None:
        """Ask the host's agent to resync now: its ``/config`` then answers that it is gone.

        Best effort: the deletion has committed, and an agent that misses this learns it
        at its next resync.
        """
        try:
            self._d.publisher.publish(protocol.host_inbox_topic(host_id),
                                      protocol.encode(protocol.Command(name="resync")))
        except UnavailableError as e:
            log.warning("could not tell %s it was deleted: %s", host_id, e.message)
