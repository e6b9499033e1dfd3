"""Gateways: a member's gateway role in a network (remote access, egress ranges, internet), and
members' use of an internet gateway.

Each change is one write of the member's role (``Store.set_member_role``) with one pending
change naming the host, broadcast before the call returns; a change that changes nothing
writes and sends nothing. What the plan cannot give every host consistently (overlapping
ranges, internet-gateway chains, a full tunnel without an internet gateway) is refused before
writing, by :func:`chalicelib.domain.plan.check` on the records as they would be after the
change. The rules that span a host's networks are checked here: a host uses at most one
internet gateway, and an internet gateway uses none, in any of its networks (its uplink is
the host's, not a network's).
"""

from __future__ import annotations

import builtins  # ``list`` in the class body is Gateways.list
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Final

from ..domain import ipam, plan, validate
from ..domain.changes import PendingChange
from ..domain.ids import HostId, NetworkId
from ..domain.models import AUTO, Gateway, Host, Member, MemberRole, Network
from ..errors import ConflictError, InvalidInputError, NotFoundError
from . import topology
from .deps import Deps, retrying
from .stream import Stream

__all__ = ["Gateways", "KEEP", "MAX_EGRESS"]

MAX_EGRESS = 64  # ranges behind one gateway; each is a route on every host of the network


class _Keep:
    """The value of an optional argument that was not given: keep what is stored."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()

_WHAT_A_GATEWAY_DOES = ("a gateway serves remote-access clients (remote_access: true), routes ranges behind "
                        "it (egress: [CIDR, ...]) or carries hosts' internet traffic (internet: true); give "
                        "at least one, or remove the role with DELETE")


def _names(items: builtins.list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class Gateways:
    """Members' gateway roles and internet use; each change broadcast by the change itself."""

    def __init__(self, deps: Deps, stream: Stream) -> None:
        self._d = deps
        self._stream = stream

    # ------------------------------------------------------------------ read
    def get(self, network_id: str, host_id: str) -> Member:
        """The member ``host_id`` of ``network_id`` with its gateway role.

        404 when the network or host does not exist or the member is no gateway; 409 when the
        host is no member of the network.
        """
        _, host = self._member(network_id, host_id)
        member = host.member_of(NetworkId(network_id))
        if member.gateway is None:
            raise NotFoundError(f"host {host_id} is not a gateway of network {network_id}; make it one "
                                f"with PUT /v1/networks/{network_id}/gateways/{host_id}")
        return member

    def list(self, network_id: str) -> builtins.list[Member]:
        """Every gateway of the network, in host id order (404 for a network that does not exist)."""
        snapshot = self._d.store.network_snapshot(network_id)
        if snapshot is None:
            raise NotFoundError(f"network {network_id} does not exist")
        return [m for m in snapshot[1] if m.gateway is not None]

    def member(self, network_id: str, host_id: str) -> Member:
        """The member ``host_id`` of ``network_id`` as it is stored, with its role."""
        _, host = self._member(network_id, host_id)
        return host.member_of(NetworkId(network_id))

    # ------------------------------------------------------------------ change
    def set(self, network_id: str, host_id: str, *, remote_access: bool | None = None,
            egress: builtins.list[str] | None = None, internet: bool | None = None,
            endpoint: str | None | _Keep = KEEP, auto_relay: bool | None = None) -> Member:
        """Make member ``host_id`` a gateway of ``network_id``, or change its role; the member as
        stored now.

        Fields left out (None; for ``endpoint``, :data:`KEEP`) keep their current value, or for a
        new gateway take false, no ranges and the host's first endpoint (``endpoint=None``: back
        to that default). Egress ranges are canonicalised and must overlap no network's ranges,
        no other gateway's egress and no client's extra addresses. A gateway with no role at all
        is a 400; giving up remote access while clients use it, or internet while hosts use it,
        is a 409 (``gateway_in_use``) naming them.
        """
        ranges = validate.prefixes(egress, "egress", MAX_EGRESS) if egress is not None else None
        if isinstance(endpoint, str):
            validate.endpoint(endpoint, "endpoint")

        def attempt() -> tuple[Member, tuple[PendingChange, ...]]:
            network, host = self._member(network_id, host_id)
            nid = network.id
            old = host.roles.get(nid, MemberRole())
            was = old.gateway or Gateway()
            gateway = Gateway(
                remote_access=was.remote_access if remote_access is None else remote_access,
                egress=was.egress if ranges is None else ranges,
                internet=was.internet if internet is None else internet,
                endpoint=was.endpoint if isinstance(endpoint, _Keep) else endpoint,
                auto_relay=was.auto_relay if auto_relay is None else auto_relay,
            )
            if not (gateway.remote_access or gateway.egress or gateway.internet):
                raise InvalidInputError(f"host {host_id} would be a gateway that does nothing: "
                                        + _WHAT_A_GATEWAY_DOES, code="empty_gateway")
            role = replace(old, gateway=gateway)
            if role == old:
                return host.member_of(nid), ()
            if gateway.internet:
                self._refuse_chain(host)
            if gateway.egress != was.egress:
                self._refuse_network_ranges(gateway.egress)
            records = self._records_with(network_id, host, role)
            self._refuse_in_use(records, host.id, how="change them first",
                                remote_access=was.remote_access and not gateway.remote_access,
                                internet=was.internet and not gateway.internet)
            records, released = topology.release_pairs(self._d.store, records, frozenset({host.id}))
            plan.check(records)
            return self._write(host, nid, records.members[host.id].role, released)

        member, outbox = retrying(self._d, "changing the gateway", attempt)
        self._stream.send(outbox)
        return member

    def unset(self, network_id: str, host_id: str, *, force: bool = False) -> None:
        """Remove the gateway role of ``host_id`` in ``network_id``, and every route through it.

        409 (``gateway_in_use``) naming them while remote-access clients name it as their
        gateway or members use it as their internet gateway, unless ``force``: then the clients
        stay, unserved (their gateway serves them again once it has remote access), and the
        members stop using it (each its own write and broadcast) before the role goes.
        """
        records = topology.existing(self._d.store, network_id)
        if force:
            for user in self._internet_users(records, HostId(host_id)):
                self.set_member(network_id, user, internet_gateway=None, full_tunnel=False)

        def attempt() -> tuple[None, tuple[PendingChange, ...]]:
            network, host = self._member(network_id, host_id)
            old = host.roles.get(network.id, MemberRole())
            if old.gateway is None:
                raise NotFoundError(f"host {host_id} is not a gateway of network {network_id}")
            if not force:
                self._refuse_in_use(topology.existing(self._d.store, network_id), host.id,
                                    remote_access=True, internet=True,
                                    how="move them to another gateway first, or pass force=true")
            # the pairs relayed through it end in the same write (it is no auto-relay any more)
            records, released = topology.release_pairs(
                self._d.store, self._records_with(network_id, host, replace(old, gateway=None)),
                frozenset({host.id}))
            return None, self._write(host, network.id, records.members[host.id].role, released)[1]

        _, outbox = retrying(self._d, "removing the gateway", attempt)
        self._stream.send(outbox)

    def set_member(self, network_id: str, host_id: str, *, internet_gateway: str | None | _Keep = KEEP,
                   full_tunnel: bool | None = None, pins: Mapping[str, str | None] | None = None) -> Member:
        """Member ``host_id`` uses ``internet_gateway`` (a member with ``internet: true``; ``auto``:
        any of them, the plan ranks them for it and its agent moves to the next live one when the
        active one dies, like a shared range; None: none) of ``network_id``, with all its traffic
        (``full_tunnel``) or only the network's and egress ranges; and sends each range of
        ``pins`` (one that several gateways serve) to the gateway named (None: back to automatic).
        The member as stored now. Left out: kept (clearing the internet gateway also ends the full
        tunnel unless ``full_tunnel`` is given; ranges not in ``pins`` keep their pin).

        A host uses at most one internet gateway across its networks, and an internet gateway
        uses none (409 naming the other); a full tunnel needs an internet gateway (400); a pin
        names a gateway that serves that range (409 ``not_a_gateway_of_range``); internet access
        is pinned as ``0.0.0.0/0`` to an internet gateway, by a host that uses ``auto``.
        """
        if isinstance(internet_gateway, str) and not internet_gateway:
            raise InvalidInputError(f"internet_gateway must be a host id, {AUTO!r}, or null for none")
        # (internet access is pinned under its group's key, a default route: checked in _refuse_pins)
        asked = {p if p in plan.DEFAULT_ROUTES else validate.prefix(p, "pinned"): g
                 for p, g in (pins or {}).items()}
        if len(asked) > MAX_EGRESS:
            raise InvalidInputError(f"pinned: at most {MAX_EGRESS} ranges")

        def attempt() -> tuple[Member, tuple[PendingChange, ...]]:
            network, host = self._member(network_id, host_id)
            nid = network.id
            old = host.roles.get(nid, MemberRole())
            uses = old.internet_gateway if isinstance(internet_gateway, _Keep) else (
                None if internet_gateway is None else HostId(internet_gateway))
            if full_tunnel is not None:
                tunnel = full_tunnel
            else:  # kept, except that without an internet gateway there is no tunnel to keep
                tunnel = old.full_tunnel and uses is not None
            pinned = {**dict(old.pinned), **{p: HostId(g) for p, g in asked.items() if g is not None}}
            for p in (p for p, g in asked.items() if g is None):
                pinned.pop(p, None)
            role = replace(old, internet_gateway=uses, full_tunnel=tunnel,
                           pinned=tuple(sorted(pinned.items())))
            if role == old:
                return host.member_of(nid), ()
            if uses is not None:
                self._refuse_second_internet_gateway(host, nid)
                self._refuse_chain(host, using=uses)
            records = self._records_with(network_id, host, role)
            self._refuse_pins(records, host.id, {p: g for p, g in pinned.items() if asked.get(p)})
            records, released = topology.release_pairs(self._d.store, records, frozenset({host.id}))
            plan.check(records)
            return self._write(host, nid, records.members[host.id].role, released)

        member, outbox = retrying(self._d, "changing the member's internet gateway", attempt)
        self._stream.send(outbox)
        return member

    # ------------------------------------------------------------------ helpers
    def _member(self, network_id: str, host_id: str) -> tuple[Network, Host]:
        """The network and the host, which is a member of it (else 404 / 409)."""
        network = self._d.store.get_network(network_id)
        if network is None:
            raise NotFoundError(f"network {network_id} does not exist")
        host = self._d.store.get_host(host_id)
        if host is None:
            raise NotFoundError(f"host {host_id} does not exist")
        if network.id not in host.addresses:
            raise ConflictError(f"host {host_id} is not a member of network {network_id}; enroll it with "
                                "a key of that network first", code="not_a_member")
        return network, host

    def _records_with(self, network_id: str, host: Host, role: MemberRole) -> plan.NetworkRecords:
        """The network's records as they would be with ``host``'s ``role`` in it, to check.

        Other members' use of an internet gateway that is gone (its host left or was deleted; for
        ``auto``, the network has none left) is left out: the plan ignores it already, and it must
        not block every later change.
        """
        records = topology.existing(self._d.store, network_id)
        members = dict(records.members)
        for hid, m in records.members.items():
            uses = m.role.internet_gateway
            gone = not records.internet_gateways if uses == AUTO else uses not in records.members
            if uses is not None and uses != host.id and gone:
                members[hid] = replace(m, role=replace(m.role, internet_gateway=None, full_tunnel=False))
        members[host.id] = replace(host.member_of(records.network.id), role=role)
        return replace(records, members=members)

    def _write(self, host: Host, network_id: NetworkId, role: MemberRole,
               released: Sequence[tuple[Host, Host]] = ()) -> tuple[Member, tuple[PendingChange, ...]]:
        """The member's new role, with the members whose automatic pairs it releases
        (:func:`topology.release_pairs`), in one write and one change naming them all."""
        new = host.with_role(network_id, role)
        outbox = self._stream.new_changes([network_id], host_ids=(host.id, *(o.id for o, _ in released)))
        if released:
            self._d.store.set_member_roles([host, *(o for o, _ in released)],
                                           [new, *(n for _, n in released)], network_id, change=outbox[0])
        else:
            self._d.store.set_member_role(host, new, network_id, change=outbox[0])
        return new.member_of(network_id), outbox

    def _refuse_network_ranges(self, egress: tuple[str, ...]) -> None:
        """409 when an egress range overlaps any network's own ranges (routes into the overlay
        of this network or of another one a host may also be in)."""
        entries = self._d.store.network_registry().entries
        for prefix in egress:
            for e in entries:
                clash = ipam.first_overlap(prefix, ((c, c) for c in (e.ipv4_cidr, e.ipv6_cidr)))
                if clash:
                    raise ConflictError(f"egress {prefix} overlaps {clash}, the range of network {e.name} "
                                        f"({e.id}); egress ranges lie outside every network's ranges",
                                        code="range_overlap")

    @staticmethod
    def _refuse_pins(records: plan.NetworkRecords, host_id: HostId, pins: Mapping[str, HostId]) -> None:
        """409 when a new pin names a gateway that does not serve that range (the plan ignores a
        pin that went stale later, when its gateway stopped serving the range); internet access
        (``0.0.0.0/0``) is pinned to an internet gateway, only by a host that uses ``auto``."""
        for prefix, gateway in sorted(pins.items()):
            gw = records.gateway(gateway)
            if prefix in plan.DEFAULT_ROUTES:
                Gateways._refuse_internet_pin(records, host_id, prefix, gateway)
            elif gw is None or prefix not in gw.egress:
                serving = [str(g) for g in sorted(records.members)
                           if prefix in (records.gateway(g) or Gateway()).egress]
                raise ConflictError(
                    f"{gateway} does not serve {prefix} in network {records.network.id}, so host {host_id} "
                    f"cannot be pinned to it; gateways of {prefix}: {_names(serving) if serving else 'none'}",
                    code="not_a_gateway_of_range")

    @staticmethod
    def _refuse_internet_pin(records: plan.NetworkRecords, host_id: HostId, prefix: str,
                             gateway: HostId) -> None:
        if prefix != plan.INTERNET:
            raise InvalidInputError(f"pin internet access as {plan.INTERNET} (both default routes go to one "
                                    f"gateway), not {prefix}")
        if records.members[host_id].role.internet_gateway != AUTO:
            raise ConflictError(f"host {host_id} does not use internet_gateway {AUTO!r}, so its internet "
                                f"access cannot be pinned; name the internet gateway instead, or use "
                                f"{AUTO!r} first",
                                code="internet_gateway_not_auto")
        if gateway not in records.internet_gateways:
            raise ConflictError(
                f"{gateway} is no internet gateway of network {records.network.id}, so host {host_id}'s "
                f"internet access cannot be pinned to it; internet gateways: "
                f"{_names(list(records.internet_gateways)) or 'none'}", code="not_a_gateway_of_range")

    @staticmethod
    def _refuse_second_internet_gateway(host: Host, network_id: NetworkId) -> None:
        for nid, role in sorted(host.roles.items()):
            if nid != network_id and role.internet_gateway is not None:
                raise ConflictError(
                    f"host {host.id} already uses {role.internet_gateway} as its internet gateway in network "
                    f"{nid}; a host has at most one internet gateway: clear that one first",
                    code="second_internet_gateway")

    @staticmethod
    def _refuse_chain(host: Host, using: HostId | None = None) -> None:
        """409 when ``host`` would both be an internet gateway and use one, in any of its networks."""
        for nid, role in sorted(host.roles.items()):
            if using is None and role.internet_gateway is not None:
                raise ConflictError(
                    f"host {host.id} uses {role.internet_gateway} as its internet gateway in network {nid}; "
                    "an internet gateway cannot use another one (no chains): clear that first",
                    code="internet_gateway_chain")
            if using is not None and role.gateway is not None and role.gateway.internet:
                raise ConflictError(
                    f"host {host.id} is an internet gateway in network {nid} and cannot use another one "
                    f"({using}): no chains", code="internet_gateway_chain")

    @staticmethod
    def _internet_users(records: plan.NetworkRecords, gateway: HostId) -> builtins.list[HostId]:
        """The members that name ``gateway`` as their internet gateway, and those with ``auto`` when it
        is the network's only internet gateway (the others lose nothing: they move to another)."""
        members = records.members
        last = not [g for g in records.internet_gateways if g != gateway]
        return [hid for hid in sorted(members)
                if (uses := members[hid].role.internet_gateway) == gateway or (last and uses == AUTO)]

    def _refuse_in_use(self, records: plan.NetworkRecords, gateway: HostId, *, remote_access: bool,
                       internet: bool, how: str) -> None:
        """409 when what ``gateway`` gives up (remote access, internet) is in use, naming the users."""
        if remote_access:
            clients = records.clients_by_gateway.get(gateway, ())
            if clients:
                raise ConflictError(
                    f"gateway {gateway} serves remote-access clients: "
                    f"{_names([f'{c.name} ({c.id})' for c in clients])}; {how}", code="gateway_in_use")
            groups = [g for _, g in sorted(records.gateway_groups.items()) if gateway in g.members]
            if groups:  # issue 11
                raise ConflictError(
                    f"gateway {gateway} is a member of gateway groups: "
                    f"{_names([f'{g.name} ({g.id})' for g in groups])}; remove it from them first "
                    f"(PATCH /v1/networks/{records.network.id}/gateway-groups/GROUP_ID with remove)"
                    + (", or pass force=true (the group keeps it, serving nothing)" if "force" in how
                       else ""),
                    code="gateway_in_use")
        if internet:
            users = self._internet_users(records, gateway)
            if users:
                raise ConflictError(
                    f"hosts use {gateway} as their internet gateway: {_names(list(users))}; {how} "
                    f"(PATCH /v1/networks/{records.network.id}/members/HOST_ID)", code="gateway_in_use")
