"""A network's records → every host's plan in it: peers with allowed IPs, routes, forwarding.

The one place the topology rule is written. The control plane (``/config``) and every
agent run it on the same records, so a change in a network is one small broadcast of
the changed records, and each host derives its own configuration from them.

Two entry points, one rule (:func:`peer`):

- :func:`network_plan` — the whole plan of a network, host by host (each host's plan is
  computed when first read, so ``/config`` for one host costs O(network), not O(network²));
- :func:`dependents` — which peer entries may differ after some records changed: the
  agent's fast path recomputes only those (:func:`peer` for each), so one change costs
  O(change) on every host of a large network.

And :func:`client_view`, the one peer of a remote-access client's wg-quick file.

The rule:

- A host peers with every other member exactly once (never with itself, nor with a member
  holding its own key); a peer's allowed IPs are that member's overlay addresses (a /32
  and a /128, unique in the network).
- A gateway's entry also carries its egress ranges and the addresses (and extra
  addresses) of the clients it serves; a gateway has those clients as peers of its own,
  forwards for the network, and masquerades what leaves for its egress ranges (or, as
  an internet gateway, for anywhere).
- A host that uses an internet gateway with full tunnel gives that gateway's entry
  ``0.0.0.0/0`` and ``::/0`` and routes everything else into the tunnel by policy
  (:attr:`HostView.full_tunnel`). A host whose internet gateway is ``auto`` (:data:`AUTO`) may
  use any internet gateway of the network: internet access is then a group like a shared range
  (key :data:`INTERNET`), and the default routes go to its :func:`active_gateway` only.
- A relayed member (its role's ``relayed_by``: another member; :func:`check` refuses chains)
  peers with its relay alone, whose entry there carries everything the network reaches (and, when the
  relay is its internet gateway with full tunnel, ``0.0.0.0/0`` and ``::/0``); every other
  member drops its entry of the relayed host and adds its addresses and egress ranges to the
  relay's entry; the relay reaches it directly and forwards for the network.
- A pair of members relayed automatically (:attr:`NetworkRecords.pair_relays`, recorded on the
  pair's smaller end) reach each other through an auto-relay gateway: at each end the other's
  entry goes, and what it carried joins the relay's entry; the relay forwards for them.
- Every host routes the network's ranges, the other gateways' egress ranges and the served
  clients' extra addresses into the interface. So every client is reached through exactly
  one peer (its gateway) from every host, and no range is routed back to where it is.
- A range several gateways serve (HA), and internet access of a host with ``auto``, is carried,
  at each host, by one of them only: the first of the host's ranked :func:`candidates` that the
  host has not found dead (:func:`active_gateway`). Moving it is one peer update at that host.
- A gateway group (issue 11: :class:`~.models.GatewayGroup`, remote-access gateways sharing one
  identity and a floating address) serves the clients that name it: they are peers of no host's
  mesh interface (the members' group interface has them), and their addresses are carried, at
  each host, by one member's entry (:func:`group_carrier`: the recorded active member unless the
  host found it dead, else the first live member by priority; never the host itself).

>>> from .models import Network, Member
>>> net = Network(id="net_a", name="a", ipv4_cidr="100.64.0.0/16", ipv6_cidr="fd00::/64")
>>> ms = [Member("net_a", f"host_{i}", f"h{i}", f"k{i}", f"100.64.0.{i}", f"fd00::{i}", 51820)
...       for i in (1, 2)]
>>> plan = network_plan(NetworkRecords.of(net, ms))
>>> [(p.host_id, p.allowed_ips) for p in plan["host_1"].peers]
[('host_2', ('100.64.0.2/32', 'fd00::2/128'))]
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .election import ELECTION_PORT
from .errors import ConflictError, InvalidInputError
from .ids import ClientId, HostId, NetworkId
from .models import (
    AUTO,
    MAX_GROUP_MEMBERS,
    Client,
    Gateway,
    GatewayGroup,
    Member,
    MemberRole,
    Network,
    is_group_gateway,
)

_EMPTY: Mapping = MappingProxyType({})
DEFAULT_ROUTES = ("0.0.0.0/0", "::/0")
# The key of internet access as a group of gateways (``internet_gateway: auto``) wherever shared
# ranges have theirs: candidates, pins, placements, failover groups. Both default routes move together.
INTERNET = DEFAULT_ROUTES[0]

__all__ = [
    "candidates",
    "active_gateway",
    "group_carrier",
    "group_probe_targets",
    "NetworkRecords",
    "Peer",
    "Interface",
    "HostView",
    "ClientView",
    "client_view",
    "gateway_endpoint",
    "DEFAULT_ROUTES",
    "INTERNET",
    "pin",
    "routed_ranges",
    "check",
    "NetworkPlan",
    "network_plan",
    "peer",
    "dependents",
]


# ------------------------------------------------------------------------------ inputs
# Members (with their roles: gateways, internet use, being relayed, pairs relayed automatically) and
# remote-access clients are the records of the rule; what is derived from them is cached per records
# object (the agent makes new records on every delta).
@dataclass(frozen=True)
class NetworkRecords:
    """Everything the plan of one network is computed from.

    ``members`` is keyed by host id and ``clients`` by client id; both are read, never
    copied or changed, so the agent can pass the dicts it keeps current (building the
    records is O(1)). What is derived from the clients (who serves which) and from the
    members' roles (which ranges several gateways share, who relays whom) is computed once
    per records object: make new records when the members or clients change (the agent's
    tracker does after every delta).

    ``down`` holds the gateways the host computing the plan found dead by its own probes
    (the agent's view): a shared range then goes to the next candidate in that host's
    ranking. The control plane passes none: it moves hosts by their ``placed`` role.

    Pairs of members relayed automatically are read off the roles (:attr:`pair_relays`): of the
    members in ``pair_owners`` when the caller keeps that index (the agent's tracker, so a delta
    costs no scan of the network), else of every member.

    ``gateway_groups`` (issue 11) are the network's gateway groups by id, read like ``clients``.
    """

    network: Network
    members: Mapping[HostId, Member]
    clients: Mapping[ClientId, Client] = field(default_factory=lambda: _EMPTY)
    down: frozenset[HostId] = frozenset()
    pair_owners: frozenset[HostId] | None = None  # the members whose roles record pairs (None: any)
    gateway_groups: Mapping[str, GatewayGroup] = field(default_factory=lambda: _EMPTY)

    @classmethod
    def of(cls, network: Network, members: Iterable[Member], clients: Iterable[Client] = (),
           groups: Iterable[GatewayGroup] = (), **more: Any) -> NetworkRecords:
        """The records of ``network`` with these ``members``, ``clients`` and ``groups`` (in any order)."""
        return cls(network, {m.host_id: m for m in members}, {c.id: c for c in clients},
                   gateway_groups={g.id: g for g in groups}, **more)

    def group_gateways(self, group_id: str) -> tuple[HostId, ...]:
        """The members of gateway group ``group_id`` that can serve its clients (members of the
        network with remote access), in the group's priority order; empty for no such group."""
        g = self.gateway_groups.get(group_id)
        if g is None:
            return ()
        return tuple(h for h in g.members if (gw := self.gateway(h)) is not None and gw.remote_access)

    @functools.cached_property
    def _groups_of(self) -> Mapping[HostId, tuple[str, ...]]:
        out: dict[HostId, list[str]] = {}
        for gid in sorted(self.gateway_groups):
            for h in self.gateway_groups[gid].members:
                out.setdefault(h, []).append(gid)
        return {h: tuple(gs) for h, gs in out.items()}

    def groups_of(self, host_id: HostId) -> tuple[str, ...]:
        """The gateway groups ``host_id`` is named a member of, in id order."""
        return self._groups_of.get(host_id, ())

    @functools.cached_property
    def clients_by_gateway(self) -> Mapping[HostId, tuple[Client, ...]]:
        """Every client, by the member it names as its gateway (served or not), in id order."""
        out: dict[HostId, list[Client]] = {}
        for cid in sorted(self.clients):
            c = self.clients[cid]
            out.setdefault(c.gateway, []).append(c)
        return {g: tuple(cs) for g, cs in out.items()}

    @functools.cached_property
    def shared_ranges(self) -> Mapping[str, tuple[HostId, ...]]:
        """The egress ranges several gateways serve (HA), each with those gateways in host-id order."""
        out: dict[str, list[HostId]] = {}
        for hid in sorted(self.members):
            gw = self.members[hid].role.gateway
            if gw is not None:
                for prefix in gw.egress:
                    out.setdefault(prefix, []).append(hid)
        return {p: tuple(gs) for p, gs in out.items() if len(gs) > 1}

    @functools.cached_property
    def internet_gateways(self) -> tuple[HostId, ...]:
        """The members that offer internet access (``internet: true``), in host-id order: the
        candidates of a host whose internet gateway is ``auto``."""
        return tuple(h for h in sorted(self.members) if (gw := self.members[h].role.gateway) and gw.internet)

    @functools.cached_property
    def groups(self) -> Mapping[str, tuple[HostId, ...]]:
        """Everything several gateways serve (HA), by its key, with those gateways in host-id order:
        each shared egress range (:attr:`shared_ranges`) and, with several internet gateways,
        internet access (:data:`INTERNET`). What the failover functions place hosts in."""
        if len(self.internet_gateways) < 2:
            return self.shared_ranges
        return {**self.shared_ranges, INTERNET: self.internet_gateways}

    def internet_candidates(self, host_id: HostId) -> tuple[HostId, ...]:
        """The members that may carry ``host_id``'s full tunnel, in host-id order, whatever is down,
        pinned or placed: the one it names when that is an internet gateway; with ``auto``, every
        internet gateway but itself (a relayed host: its relay, when that is one, since the relay is
        its only peer). Empty without a full tunnel."""
        m = self.members.get(host_id)
        if m is None or not m.role.full_tunnel or m.role.internet_gateway is None:
            return ()
        uses = m.role.internet_gateway
        if uses != AUTO:
            gw = self.gateway(uses)
            return (uses,) if gw is not None and gw.internet else ()
        relay = self.relay_of(host_id)
        if relay is not None:
            return (relay,) if relay in self.internet_gateways else ()
        return tuple(g for g in self.internet_gateways if g != host_id)

    @functools.cached_property
    def pair_relays(self) -> Mapping[tuple[HostId, HostId], HostId]:
        """The pairs of members relayed automatically, (a, b) with a < b → the member between them.

        A pair is read off the role of its smaller member (``pair_relays``: peer → via) and holds
        only when it can: a, b and the via are members, the via is neither of them, has a gateway
        role with ``auto_relay`` and is not relayed itself; neither a nor b is relayed
        (``relayed_by``) or uses the other as its internet gateway; and neither a nor b has a
        recorded pair with the via (no chains). Any other pair is ignored (:func:`check` refuses
        what it can name). Whether it holds reads the records of a, b and the via only, which is
        what :func:`dependents` relies on.
        """
        out: dict[tuple[HostId, HostId], HostId] = {}
        owners = self.members if self.pair_owners is None else self.pair_owners
        for a in sorted(h for h in owners if h in self.members):
            for b, via in self.members[a].role.pair_relays:
                if a < b and self.pair_holds(a, b, via):
                    out[(a, b)] = via
        return out

    def _recorded_pair(self, x: HostId, y: HostId) -> bool:
        lo, hi = min(x, y), max(x, y)
        m = self.members.get(lo)
        return m is not None and m.role.pair_relay(hi) is not None

    def pair_holds(self, a: HostId, b: HostId, via: HostId) -> bool:
        """Whether the pair a, b (a < b) relayed through ``via`` would hold (:attr:`pair_relays`), whatever
        is recorded now: what the automatic relays' decision picks vias by."""
        if via in (a, b) or a not in self.members or b not in self.members or via not in self.members:
            return False
        gw = self.gateway(via)
        if gw is None or not gw.auto_relay or self.members[via].role.relayed_by is not None:
            return False
        if self.members[a].role.relayed_by is not None or self.members[b].role.relayed_by is not None:
            return False
        if b in self.internet_candidates(a) or a in self.internet_candidates(b):
            return False  # (any candidate, not the active one: every host must agree on the pairs)
        return not (self._recorded_pair(a, via) or self._recorded_pair(b, via))

    @functools.cached_property
    def _paired(self) -> Mapping[HostId, Mapping[HostId, HostId]]:
        out: dict[HostId, dict[HostId, HostId]] = {}
        for (a, b), via in self.pair_relays.items():
            out.setdefault(a, {})[b] = via
            out.setdefault(b, {})[a] = via
        return out

    @functools.cached_property
    def _pairs_via(self) -> Mapping[HostId, tuple[HostId, ...]]:
        out: dict[HostId, list[HostId]] = {}
        for (a, b), via in self.pair_relays.items():
            out.setdefault(via, []).extend((a, b))
        return {v: tuple(sorted(set(hs))) for v, hs in out.items()}

    def paired(self, host_id: HostId) -> Mapping[HostId, HostId]:
        """The members ``host_id`` reaches through an automatic relay: peer → via (holding pairs only)."""
        return self._paired.get(host_id, _EMPTY)

    def pairs_via(self, via: HostId) -> tuple[HostId, ...]:
        """The members of the holding pairs ``via`` relays, in host id order."""
        return self._pairs_via.get(via, ())

    def gateway(self, host_id: HostId) -> Gateway | None:
        """The gateway role of member ``host_id`` (None: not a member, or no gateway)."""
        m = self.members.get(host_id)
        return None if m is None else m.role.gateway

    def served(self, client: Client) -> bool:
        """Whether the client is connected to the network now: enabled, and its gateway is a
        member with remote access (or a gateway group with one such member). A client whose
        gateway lost the role is kept, unserved."""
        if is_group_gateway(client.gateway):
            return client.enabled and bool(self.group_gateways(client.gateway))
        gw = self.gateway(client.gateway)
        return client.enabled and gw is not None and gw.remote_access

    def internet_gateway(self, host_id: HostId) -> HostId | None:
        """The member that carries all of ``host_id``'s traffic (full tunnel) now, when one offers
        it: the one it names, or with ``auto`` its :func:`active_gateway` for :data:`INTERNET`
        (given ``down``); else None."""
        return active_gateway(self, host_id, INTERNET)

    def relay_of(self, host_id: HostId) -> HostId | None:
        """The member that relays ``host_id`` (its ``relayed_by``), when that is another member;
        else None (not relayed, or its relay is gone: it is reached directly).

        It reads the two members' presence only, never the relay's record: so a change of the
        relay's record changes no entry of the hosts it relays (what :func:`dependents` relies
        on). :func:`check` keeps relays from being relayed themselves (no chains).
        """
        m = self.members.get(host_id)
        r = None if m is None else m.role.relayed_by
        return r if r is not None and r != host_id and r in self.members else None

    def relayed(self, relay: HostId) -> tuple[HostId, ...]:
        """The members ``relay`` relays, in host id order."""
        return self._relayed_by_relay.get(relay, ())

    @functools.cached_property
    def _relayed_by_relay(self) -> Mapping[HostId, tuple[HostId, ...]]:
        # Once per records object, like shared_ranges: peer() asks it for every entry, and a scan
        # per entry made one host's plan O(members²) (115 ms instead of 3.5 ms at 1,000 members).
        out: dict[HostId, list[HostId]] = {}
        for h in sorted(self.members):
            if (r := self.relay_of(h)) is not None:
                out.setdefault(r, []).append(h)
        return {r: tuple(hs) for r, hs in out.items()}


# ----------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class Peer:
    """One member (or, at its gateway, one remote-access client) as a WireGuard peer of one
    host, in one network. ``host_id`` is the member's host id or the client's id."""

    host_id: HostId
    name: str
    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    keepalive: int


@dataclass(frozen=True)
class Interface:
    addresses: tuple[str, ...]  # with the network's prefix, e.g. 100.64.0.7/16
    listen_port: int
    mtu: int


@dataclass(frozen=True)
class HostView:
    """One host's plan in one network."""

    network_id: NetworkId
    seq: int
    interface: Interface
    peers: tuple[Peer, ...]  # members sorted by host id, then (at a gateway) its clients by id
    routes: tuple[str, ...]  # ranges routed into the interface
    forwards: tuple[str, ...] = ()  # ranges this host forwards for others (gateways)
    nat: tuple[str, ...] = ()  # destinations it masquerades traffic from the tunnel to (egress, internet)
    full_tunnel: bool = False  # all other traffic goes into the tunnel, to its internet gateway


@dataclass(frozen=True)
class ClientView:
    """What a remote-access client's wg-quick file says: its addresses and its one peer."""

    network_id: NetworkId
    addresses: tuple[str, ...]  # /32 and /128
    mtu: int
    gateway: HostId
    public_key: str  # the gateway's
    endpoint: str | None
    allowed_ips: tuple[str, ...]


class NetworkPlan(Mapping[HostId, HostView]):
    """Every member's :class:`HostView`, by host id; each computed when first read.

    Raises ``KeyError`` for a host that is not a member.
    """

    def __init__(self, records: NetworkRecords) -> None:
        self.records = records
        self._views: dict[HostId, HostView] = {}

    def __getitem__(self, host_id: str) -> HostView:
        hid = HostId(host_id)
        view = self._views.get(hid)
        if view is None:
            view = self._views[hid] = _host_view(self.records, hid)
        return view

    def __iter__(self) -> Iterator[HostId]:
        return iter(sorted(self.records.members))

    def __len__(self) -> int:
        return len(self.records.members)


def network_plan(records: NetworkRecords) -> NetworkPlan:
    """The whole plan of a network: for every member, its peers, routes and forwarding."""
    return NetworkPlan(records)


# -------------------------------------------------------------------------------- rule
def peer(records: NetworkRecords, viewer: HostId, target: str) -> Peer | None:
    """How ``target`` (a member's host id, or a client's id) appears as a peer of member
    ``viewer``, or None when ``viewer`` does not peer with it.

    - A member peers with every other member once (never itself, nor a member holding its
      own key). The entry's allowed IPs are the member's addresses; a gateway's also its
      egress ranges and the addresses of the clients it serves, and, for a viewer that uses
      it as its internet gateway with full tunnel, ``0.0.0.0/0`` and ``::/0``.
    - A relayed member T (:meth:`NetworkRecords.relay_of` is R) is a peer of R only, as above;
      at every other viewer its addresses and egress ranges join R's entry. T itself peers
      with R only, whose entry there carries everything reachable in the network
      (:func:`routed_ranges` but T's own egress) and, when R is T's internet gateway with full
      tunnel, ``0.0.0.0/0`` and ``::/0``.
    - A pair (a, b) relayed automatically through R (:attr:`NetworkRecords.pair_relays`): at a,
      no entry of b, and what b's entry would carry there (its addresses, egress ranges, clients,
      the hosts it relays) joins R's entry; the same at b for a. R peers with both as usual and
      forwards (:attr:`HostView.forwards`).
    - A client is a peer of its gateway only, while it is served (:meth:`NetworkRecords.served`).
    """
    me = records.members.get(viewer)
    if me is None:
        return None
    m = records.members.get(HostId(target))
    if m is None:
        c = records.clients.get(ClientId(target))
        if c is None or c.gateway != viewer or not records.served(c) or c.public_key == me.public_key:
            return None
        return Peer(host_id=HostId(c.id), name=c.name, public_key=c.public_key, endpoint=None,
                    allowed_ips=c.allowed_ips, keepalive=0)
    if m.host_id == me.host_id or m.public_key == me.public_key:
        return None
    my_relay = records.relay_of(me.host_id)
    if my_relay is not None:  # a relayed viewer peers with its relay alone
        if m.host_id != my_relay:
            return None
        reach = tuple(dict.fromkeys(routed_ranges(records, exclude=me.host_id)))
        if records.internet_gateway(viewer) == m.host_id:
            reach += DEFAULT_ROUTES
        return _entry(records, m, reach)
    relay = records.relay_of(m.host_id)
    if relay is not None and relay != me.host_id:
        return None  # reached through its relay's entry
    paired = records.paired(me.host_id)
    if m.host_id in paired:
        return None  # reached through the pair's relay
    allowed = _direct(records, me, m)
    for other, via in sorted(paired.items()):
        if via == m.host_id:
            allowed += _direct(records, me, records.members[other])
    return _entry(records, m, allowed)


def _direct(records: NetworkRecords, me: Member, m: Member) -> tuple[str, ...]:
    """What member ``m``'s entry carries at ``me`` (neither relayed), before pairs relayed
    automatically move entries: its addresses; a gateway's egress ranges, served clients and
    (``me``'s internet gateway) the default routes; the addresses of the hosts it relays."""
    viewer = me.host_id
    allowed: tuple[str, ...] = m.allowed_ips
    gw = m.role.gateway
    if gw is not None:
        allowed += _egress_at(records, viewer, m)
        if gw.remote_access:
            allowed += tuple(a for c in records.clients_by_gateway.get(m.host_id, ()) if c.enabled
                             and c.public_key != me.public_key for a in c.allowed_ips)
            for gid in records.groups_of(m.host_id):
                if group_carrier(records, viewer, gid) == m.host_id:
                    allowed += tuple(a for c in records.clients_by_gateway.get(HostId(gid), ())
                                     if c.enabled and c.public_key != me.public_key for a in c.allowed_ips)
        if records.internet_gateway(viewer) == m.host_id:
            allowed += DEFAULT_ROUTES
    for t in _relayed_here(records, m.host_id, me.host_id):
        tm = records.members[t]
        allowed += tm.allowed_ips + _egress_at(records, viewer, tm)
    return allowed


def _egress_at(records: NetworkRecords, viewer: HostId, gateway: Member) -> tuple[str, ...]:
    """The egress ranges of ``gateway`` that ``viewer`` sends to it: all but those it shares with
    other gateways and ``viewer`` sends to another one of them (:func:`active_gateway`)."""
    gw = gateway.role.gateway
    if gw is None:
        return ()
    shared = records.shared_ranges
    return tuple(r for r in gw.egress
                 if r not in shared or active_gateway(records, viewer, r) == gateway.host_id)


def _entry(records: NetworkRecords, m: Member, allowed: tuple[str, ...]) -> Peer:
    return Peer(
        host_id=m.host_id,
        name=m.name,
        public_key=m.public_key,
        endpoint=m.endpoints[0] if m.endpoints else None,
        allowed_ips=allowed,
        keepalive=records.network.keepalive,
    )


def _relayed_here(records: NetworkRecords, relay: HostId, viewer: HostId) -> tuple[HostId, ...]:
    """The members ``relay`` relays whose addresses its entry carries at ``viewer`` (all but the
    viewer itself, which never routes its own addresses to a peer)."""
    return tuple(t for t in records.relayed(relay) if t != viewer)


def dependents(records: NetworkRecords, changed: Iterable[str]) -> frozenset[str]:
    """The peers (member host ids and client ids) whose entry, at any host, may depend on
    the records of ``changed`` members and clients (added, changed or removed).

    Call it on the records before and after a change: the union is what to recompute with
    :func:`peer`. A member's entry depends on its own record and on the clients it serves;
    a client's entry (at its gateway) on its own record and its gateway's role; a gateway
    that shares a range with others on all of them (which one carries the range may move), an
    internet gateway on every internet gateway (the full tunnel of ``auto`` hosts may move), so
    a change of ``down`` is a change of the gateways in it. A relayed member's record is
    also in its relay's entry; and whether a member is relayed depends on its relay being a
    member, so a member that joins or leaves (absent from one of the two records) lists the
    hosts that name it as their relay. What depends on a viewer's own record (its internet
    gateway, its relay, its routes, its placements) the viewer recomputes whole, and so does
    a relay when the set of hosts it relays changes (its forwarding).

    Pairs relayed automatically: whether a pair holds reads the records of its two ends and its
    via, so a change of the via lists the pairs' ends (their entries come and go); and the entry
    of one end is carried, at the other end, by the via's entry, so every member listed lists
    the vias of its pairs too. A pair's record sits on its smaller end, whose viewer recomputes
    whole; the via recomputes whole when its pairs or their ends change (its forwarding).
    """
    out: set[str] = set()
    for rid in changed:
        out.add(rid)
        c = records.clients.get(ClientId(rid))
        if c is not None:
            out.add(c.gateway)
        elif (m := records.members.get(HostId(rid))) is not None:
            out.update(c.id for c in records.clients_by_gateway.get(m.host_id, ()))
            if (relay := records.relay_of(m.host_id)) is not None:
                out.add(relay)
            if m.role.gateway is not None:
                for prefix in m.role.gateway.egress:
                    for g in records.shared_ranges.get(prefix, ()):
                        out.add(g)
                        if (its_relay := records.relay_of(g)) is not None:
                            out.add(its_relay)  # a relayed gateway's ranges are in its relay's entry
                if m.role.gateway.internet:  # which one carries an ``auto`` host's full tunnel may move
                    out.update(records.internet_gateways)
            out.update(records.pairs_via(m.host_id))
        elif rid not in records.gateway_groups:  # joins or leaves: the hosts it relays (O(members))
            out.update(h for h in records.members if records.members[h].role.relayed_by == rid)
        out.update(_group_dependents(records, rid))
    out.update(via for h in tuple(out) for via in records.paired(HostId(h)).values())
    return frozenset(out)


def _group_dependents(records: NetworkRecords, rid: str) -> tuple[HostId, ...]:
    """The members whose entries may carry a gateway group's clients, given a change of ``rid``:
    a group (its members, active member or clients' addresses), a client of a group, or a member
    of groups (its role or being down moves the carrier of each of its groups)."""
    gids: tuple[str, ...]
    if rid in records.gateway_groups:
        gids = (rid,)
    elif (c := records.clients.get(ClientId(rid))) is not None and is_group_gateway(c.gateway):
        gids = (c.gateway,)
    else:
        gids = records.groups_of(HostId(rid))
    return tuple(h for gid in gids if (g := records.gateway_groups.get(gid)) is not None for h in g.members)


def group_carrier(records: NetworkRecords, viewer: HostId, group_id: str,
                  down: frozenset[HostId] | None = None) -> HostId | None:
    """The member of gateway group ``group_id`` whose entry at ``viewer`` carries the group's
    clients: the recorded active member unless ``viewer`` found it dead (``down``, default
    ``records.down``), else the first member by priority not found dead (the election goes by
    priority too, so every host agrees with it), else (all dead) the recorded active or first
    one. Never ``viewer`` itself (the active member routes the clients into its group interface;
    a standby one sends them to the active one like any host). Only members that can serve
    (:meth:`NetworkRecords.group_gateways`); None when there is none.
    """
    order = [h for h in records.group_gateways(group_id) if h != viewer]
    active = records.gateway_groups[group_id].active if order else None
    if active in order:
        order.remove(active)
        order.insert(0, active)
    dead = records.down if down is None else down
    return next((h for h in order if h not in dead), order[0] if order else None)


def group_probe_targets(records: NetworkRecords, viewer: HostId) -> frozenset[HostId]:
    """The gateway group members ``viewer`` routes group clients through (every serving member of
    every group but itself): what its prober watches, so that the carrier moves within a few
    missed probes when the active member dies, with the control plane down."""
    return frozenset(h for gid in records.gateway_groups for h in records.group_gateways(gid) if h != viewer)


def _group(records: NetworkRecords, viewer: HostId, prefix: str) -> tuple[HostId, ...]:
    """The gateways of the group ``prefix`` (a shared range, or :data:`INTERNET`) ``viewer`` may use."""
    if prefix == INTERNET:
        return records.internet_candidates(viewer)
    cands = records.shared_ranges.get(prefix, ())
    return () if viewer in cands else cands


def pin(records: NetworkRecords, viewer: HostId, prefix: str) -> HostId | None:
    """The one gateway ``viewer`` is held to for the group ``prefix``, even while it is down: the
    operator's pin when it names one of the group's gateways (a pin to a gateway that stopped
    serving it is ignored, like a stale placement), or the internet gateway ``viewer`` names
    (not ``auto``); None: the choice is automatic."""
    cands = _group(records, viewer, prefix)
    me = records.members.get(viewer)
    if me is None or not cands:
        return None
    if prefix == INTERNET and me.role.internet_gateway != AUTO:
        return cands[0]
    pinned = me.role.pin(prefix)
    return pinned if pinned in cands else None


def candidates(records: NetworkRecords, viewer: HostId, prefix: str) -> tuple[HostId, ...]:
    """The gateways ``viewer`` may send the group ``prefix`` to, best first: a shared range (empty
    when the range is not shared, or ``viewer`` serves it itself), or :data:`INTERNET`, its full
    tunnel (:meth:`NetworkRecords.internet_candidates`: empty without one).

    The :func:`pin` alone, when there is one; else the failover function's placement first,
    then the rest in an order of their own for each viewer (rendezvous hashing), so that hosts
    without a placement spread evenly and every process that runs the plan ranks them alike.
    """
    cands = _group(records, viewer, prefix)
    if len(cands) < 2:
        return cands
    pinned = pin(records, viewer, prefix)
    if pinned is not None:
        return (pinned,)
    me = records.members.get(viewer)
    role = me.role if me is not None else MemberRole()
    ranked = sorted(cands, key=lambda g: _rendezvous(viewer, g, prefix))
    placed = role.placement(prefix)
    if placed in ranked:
        ranked.remove(placed)
        ranked.insert(0, placed)
    return tuple(ranked)


def active_gateway(records: NetworkRecords, viewer: HostId, prefix: str,
                   down: frozenset[HostId] | None = None) -> HostId | None:
    """The one gateway whose entry at ``viewer`` carries the shared range ``prefix``: the best
    candidate not in ``down`` (default ``records.down``: the gateways the viewer found dead),
    or the best one when all are down (no move helps then). None when ``viewer`` has no
    candidates for it."""
    ranked = candidates(records, viewer, prefix)
    dead = records.down if down is None else down
    return next((g for g in ranked if g not in dead), ranked[0] if ranked else None)


@functools.lru_cache(maxsize=1 << 16)
def _rendezvous(viewer: str, gateway: str, prefix: str) -> bytes:
    return hashlib.blake2b(f"{viewer}\0{gateway}\0{prefix}".encode(), digest_size=8).digest()


def _ranges(network: Network) -> tuple[str, str]:
    return (network.ipv4_cidr, network.ipv6_cidr)


def routed_ranges(records: NetworkRecords, exclude: HostId | None = None) -> tuple[str, ...]:
    """The ranges reachable through the network's tunnel, each once: its own ranges, every
    gateway's egress ranges (but ``exclude``'s own: they are behind it, not in the tunnel,
    also where other gateways serve them too) and every served client's extra addresses."""
    out = list(_ranges(records.network))
    own_gw = records.gateway(exclude) if exclude is not None else None
    own = set(own_gw.egress) if own_gw is not None else set()
    for hid in sorted(records.members):
        gw = records.members[hid].role.gateway
        if gw is not None and hid != exclude:
            out.extend(r for r in gw.egress if r not in own)
    for cid in sorted(records.clients):
        c = records.clients[cid]
        if records.served(c):
            out.extend(c.extra_addresses)
    return tuple(dict.fromkeys(out))


def _host_view(records: NetworkRecords, host_id: HostId) -> HostView:
    me = records.members[host_id]
    network = records.network
    addresses = (f"{me.ipv4}/{ipaddress.ip_network(network.ipv4_cidr).prefixlen}",
                 f"{me.ipv6}/{ipaddress.ip_network(network.ipv6_cidr).prefixlen}")
    peers = [p for t in sorted(records.members) if (p := peer(records, host_id, t)) is not None]
    peers += [p for c in records.clients_by_gateway.get(host_id, ()) if (p := peer(records, host_id, c.id))]
    gw = me.role.gateway
    forwards: tuple[str, ...] = ()
    nat: tuple[str, ...] = ()
    if gw is not None:
        served = tuple(a for g in (host_id, *records.groups_of(host_id))
                       for c in records.clients_by_gateway.get(HostId(g), ()) if records.served(c)
                       for a in c.extra_addresses)
        forwards = _ranges(network) + gw.egress + served + (DEFAULT_ROUTES if gw.internet else ())
        nat = DEFAULT_ROUTES if gw.internet else gw.egress
    relayed = records.relayed(host_id)
    if relayed:  # a relay forwards between its relayed hosts and the rest of the network
        behind = tuple(r for t in relayed if (tg := records.members[t].role.gateway) is not None
                       for r in tg.egress)
        forwards = tuple(dict.fromkeys(forwards + _ranges(network) + behind))
    ends = records.pairs_via(host_id)
    if ends:  # an automatic relay forwards between the ends of its pairs
        behind = tuple(r for t in ends if (tg := records.members[t].role.gateway) is not None
                       for r in tg.egress)
        forwards = tuple(dict.fromkeys(forwards + _ranges(network) + behind))
    return HostView(
        network_id=network.id,
        seq=network.seq,
        interface=Interface(addresses=addresses, listen_port=me.listen_port, mtu=network.mtu),
        peers=tuple(peers),
        routes=routed_ranges(records, exclude=host_id),
        forwards=forwards,
        nat=nat,
        full_tunnel=records.internet_gateway(host_id) is not None,
    )


def gateway_endpoint(member: Member) -> str | None:
    """Where clients reach ``member`` as their gateway: its gateway role's endpoint when one is
    set, else the member's first endpoint (None: it has none)."""
    gw = member.role.gateway
    if gw is not None and gw.endpoint:
        return gw.endpoint
    return member.endpoints[0] if member.endpoints else None


def client_view(records: NetworkRecords, client_id: str, *, full_tunnel: bool = False) -> ClientView | None:
    """The one peer of a client's wg-quick file: its gateway, with the network's ranges,
    every egress range and the other clients' extra addresses (``full_tunnel``: everything).
    None when the client is unknown or its gateway is no member (a group: no group, or none of
    its members can serve).

    A client of a gateway group (issue 11) has the group as its peer: the floating endpoint and
    the group's public key (:class:`ConflictError` ``group_key_missing`` while no member made it).
    """
    c = records.clients.get(ClientId(client_id))
    if c is None:
        return None
    if is_group_gateway(c.gateway):
        g = records.gateway_groups.get(c.gateway)
        if g is None or not records.group_gateways(g.id):
            return None
        if g.public_key is None:
            raise ConflictError(f"gateway group {g.id} has no key yet: its members make it when the group is "
                                "created; try again in a few seconds", code="group_key_missing")
        gateway, public_key = HostId(g.id), g.public_key
        endpoint: str | None = g.floating_endpoint
    else:
        gm = records.members.get(c.gateway)
        if gm is None:
            return None
        gateway, public_key, endpoint = gm.host_id, gm.public_key, gateway_endpoint(gm)
    if full_tunnel:
        allowed: tuple[str, ...] = DEFAULT_ROUTES
    else:
        own = set(c.extra_addresses)
        allowed = tuple(dict.fromkeys(r for r in routed_ranges(records) if r not in own))
    return ClientView(network_id=records.network.id, addresses=(f"{c.ipv4}/32", f"{c.ipv6}/128"),
                      mtu=records.network.mtu, gateway=gateway, public_key=public_key,
                      endpoint=endpoint, allowed_ips=allowed)


# ------------------------------------------------------------------------------- checks
def check(records: NetworkRecords) -> None:
    """Raise :class:`~.errors.ConflictError` (a 409 that names the conflict) when the records
    ask for something the plan cannot give every host consistently:

    - an egress range or a client's extra addresses overlapping the network's own ranges,
      or another gateway's egress range, or another client's extra addresses (one prefix,
      one peer). Gateways may serve the very same range (HA: each host sends it to one of
      them, :func:`active_gateway`), never ranges that overlap in part;
    - a host that uses an internet gateway which is no member, or no internet gateway; a
      full tunnel without an internet gateway; ``auto`` in a network without internet gateways;
      an internet gateway that uses one itself (no chains);
    - a full-tunnel client whose gateway (a remote-access gateway) is no internet gateway;
    - a host relayed by itself, by a host that is no member, or by a host that is relayed
      itself (no chains); a relayed gateway with remote access (its clients' one peer must be
      reachable) or an internet gateway; a relayed host whose full tunnel goes to an internet
      gateway that is not its relay, or with ``auto``, to a relay that is no internet gateway
      (all its traffic leaves through its one peer).

    - a pair relayed automatically recorded on its larger end, naming a peer or a via that is no
      member, a via that is one of its ends, or a via that is no auto-relay gateway.

    The service runs it on the records as they would be after a change, before writing.
    """
    owned: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, str]] = [
        (ipaddress.ip_network(r), "", f"the network's range {r}") for r in _ranges(records.network)]

    def claim(prefix: str, who: str) -> None:
        net = ipaddress.ip_network(prefix, strict=False)
        for other, owner, label in owned:
            if net.version == other.version and net.overlaps(other) and owner != who:
                if net == other and who.startswith("gateway ") and owner.startswith("gateway "):
                    continue  # the same range behind several gateways: HA
                raise ConflictError(f"{prefix} of {who} overlaps {label}; a range can be behind one "
                                    "client, or behind gateways that all serve exactly that range, "
                                    "outside the network's ranges", code="range_overlap")
        owned.append((net, who, f"{who} ({prefix})"))

    for hid in sorted(records.members):
        m = records.members[hid]
        if m.role.gateway is not None:
            for prefix in m.role.gateway.egress:
                claim(prefix, f"gateway {hid}")
    for cid in sorted(records.clients):
        for prefix in records.clients[cid].extra_addresses:
            claim(prefix, f"client {cid}")

    for hid in sorted(records.members):
        role = records.members[hid].role
        uses = role.internet_gateway
        if role.full_tunnel and uses is None:
            raise InvalidInputError(f"host {hid}: full_tunnel needs an internet_gateway",
                                    code="no_internet_gateway")
        if uses is None:
            continue
        if uses != AUTO:
            if uses == hid:
                raise ConflictError(f"host {hid} cannot be its own internet gateway",
                                    code="internet_gateway_chain")
            gw = records.gateway(uses)
            if gw is None or not gw.internet:
                raise ConflictError(f"{uses} is not an internet gateway of network {records.network.id}; "
                                    "make it one first (PUT …/gateways/{host_id} with internet: true)",
                                    code="not_an_internet_gateway")
        if role.gateway is not None and role.gateway.internet:
            raise ConflictError(f"host {hid} is an internet gateway itself and cannot use another one",
                                code="internet_gateway_chain")
        if uses == AUTO and not records.internet_gateways:
            raise ConflictError(f"host {hid} uses any internet gateway of network {records.network.id} "
                                "(auto), but it has none; make a member one first (PUT …/gateways/{host_id} "
                                "with internet: true), or use none", code="no_internet_gateways")
    for cid in sorted(records.clients):
        c = records.clients[cid]
        if is_group_gateway(c.gateway):
            _check_group_client(records, c)
            continue
        gw = records.gateway(c.gateway)
        # A client whose gateway gave up remote access (DELETE …?force=true) is kept, unserved:
        # its file reaches nothing, and it must not block every later change of the network.
        if gw is None or not gw.remote_access:
            continue
        if c.full_tunnel and not gw.internet:
            raise ConflictError(f"client {cid} has full_tunnel, but its gateway {c.gateway} is no "
                                "internet gateway; make it one or turn full_tunnel off",
                                code="not_an_internet_gateway")
    _check_relays(records)
    _check_pair_relays(records)
    _check_groups(records)


def _check_group_client(records: NetworkRecords, c: Client) -> None:
    g = records.gateway_groups.get(c.gateway)
    if g is None:
        raise ConflictError(f"client {c.id} names gateway group {c.gateway}, which is not a group of network "
                            f"{records.network.id}", code="group_gone")
    if c.full_tunnel and not all((gw := records.gateway(h)) is not None and gw.internet
                                 for h in records.group_gateways(g.id)):
        raise ConflictError(f"client {c.id} has full_tunnel, but the members of its gateway group {g.id} are "
                            "no internet gateways; make them internet gateways or turn full_tunnel off",
                            code="not_an_internet_gateway")


def _check_groups(records: NetworkRecords) -> None:
    """Gateway groups (issue 11): 1 to MAX_GROUP_MEMBERS distinct members; each member that serves
    (in the network, with remote access) has a mesh port and underlay echo port (port + 1) other
    than the floating port, and egress ranges and internet access the same as every other (any of
    them may carry the clients). That members are remote-access gateways is the group's own write
    to check (:mod:`chalicelib.service.groups`); the gateways' routes refuse to end the role of a
    member without ``force``."""
    for gid in sorted(records.gateway_groups):
        g = records.gateway_groups[gid]
        if not 1 <= len(g.members) <= MAX_GROUP_MEMBERS or len(set(g.members)) != len(g.members):
            raise InvalidInputError(f"gateway group {gid} needs 1 to {MAX_GROUP_MEMBERS} distinct members",
                                    code="invalid_group")
        if g.floating_port == ELECTION_PORT:
            raise ConflictError(f"the floating port {g.floating_port} of gateway group {gid} is the port the "
                                "members' election listens on; choose another floating port",
                                code="floating_port_in_use")
        offered: dict[HostId, tuple[tuple[str, ...], bool]] = {}
        for h in g.members:
            m = records.members.get(h)
            if m is None:
                continue  # left the network: kept, unserving (the group's PATCH removes it)
            gw = m.role.gateway
            if gw is None or not gw.remote_access:
                # gave up the role (DELETE …/gateways/{host}?force=true): kept, serving nothing (the
                # plan skips it), like a client whose gateway did; it must not block every later change
                continue
            if g.floating_port in (m.listen_port, m.listen_port + 1):
                raise ConflictError(f"the floating port {g.floating_port} of gateway group {gid} is host "
                                    f"{h}'s "
                                    f"mesh port or its underlay echo port ({m.listen_port}, "
                                    f"{m.listen_port + 1}); choose another floating port",
                                    code="floating_port_in_use")
            if ELECTION_PORT in (m.listen_port, m.listen_port + 1):
                raise ConflictError(f"host {h}'s mesh port {m.listen_port} or its underlay echo port is "
                                    f"{ELECTION_PORT}, where the members of gateway group {gid} hold their "
                                    "election; give the host another listen port first",
                                    code="floating_port_in_use")
            offered[h] = (tuple(sorted(gw.egress)), gw.internet)
        if len(set(offered.values())) > 1:
            raise ConflictError(f"the members of gateway group {gid} must offer the same egress ranges and "
                                f"internet access (any of them may carry its clients): "
                                f"{', '.join(sorted(offered))} differ", code="group_members_differ")


def _check_relays(records: NetworkRecords) -> None:
    net = records.network.id
    for hid in sorted(records.members):
        role = records.members[hid].role
        relay = role.relayed_by
        if relay is None:
            continue
        if relay == hid:
            raise ConflictError(f"host {hid} cannot relay itself; name another member of network {net} "
                                "as its relay", code="relay_itself")
        rm = records.members.get(relay)
        if rm is None:
            raise ConflictError(f"relay {relay} of host {hid} is not a member of network {net}; a relay "
                                "must be a member of the network", code="relay_not_a_member")
        if rm.role.relayed_by is not None:
            raise ConflictError(f"host {relay} cannot relay {hid}: it is relayed itself (by "
                                f"{rm.role.relayed_by}); no relay chains", code="relay_chain")
        gw = role.gateway
        if gw is not None and (gw.remote_access or gw.internet):
            what = "remote-access clients" if gw.remote_access else "internet traffic"
            raise ConflictError(f"host {hid} is a gateway for {what} of network {net} and cannot be "
                                "relayed; give up that role or relay another host", code="relayed_gateway")
        if role.full_tunnel and role.internet_gateway == AUTO and relay not in records.internet_gateways:
            raise ConflictError(f"host {hid} is relayed by {relay} and sends all its traffic (full tunnel) "
                                f"to any internet gateway (auto), but {relay} is none; a relayed host's "
                                "full tunnel goes to its relay: make the relay an internet gateway, or use a "
                                "split tunnel", code="relayed_full_tunnel")
        uses = records.internet_gateway(hid)
        if uses is not None and uses != relay:
            raise ConflictError(f"host {hid} is relayed by {relay} but sends all its traffic (full tunnel) "
                                f"to internet gateway {uses}; a relayed host's full tunnel goes to its "
                                "relay: use the relay as internet gateway, or a split tunnel",
                                code="relayed_full_tunnel")


def _check_pair_relays(records: NetworkRecords) -> None:
    net = records.network.id
    for hid in sorted(records.members):
        for peer_id, via in records.members[hid].role.pair_relays:
            pair = f"the pair {hid}, {peer_id}"
            if peer_id == hid or via in (hid, peer_id):
                raise ConflictError(f"{pair} cannot be relayed through {via}: a pair is two members "
                                    "relayed through a third one", code="pair_relay_itself")
            for who in (peer_id, via):
                if who not in records.members:
                    raise ConflictError(f"{pair} relayed through {via}: {who} is not a member of network "
                                        f"{net}", code="pair_relay_not_a_member")
            if peer_id < hid:
                raise ConflictError(f"{pair} is recorded on {hid}; a pair is recorded on its member with "
                                    f"the smaller host id ({peer_id})", code="pair_relay_owner")
            gw = records.gateway(via)
            if gw is None or not gw.auto_relay:
                raise ConflictError(f"{via} cannot relay {pair}: it is no gateway with auto_relay on in "
                                    f"network {net}; relay the pair through an auto-relay gateway",
                                    code="not_an_auto_relay")
