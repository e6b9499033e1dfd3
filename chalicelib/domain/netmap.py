"""What the plan makes of a network, as a map a person can read: for every member its peers, whom
it reaches each other member through, and where each range it sends into the tunnel goes.

Nothing here is a rule of its own: every answer is read off :func:`.plan.network_plan` (the one
topology rule), run for each member with the gateways that member's latest report found down
(``NetworkRecords.down``, the agent's own view: what its fast path does) and the failover's
placements already on the roles. So the map shows what each agent's device is configured to do
now, not what a second reading of the records would guess:

- a member's **next hop** for a destination is the peer whose entry carries it in that member's
  plan (its own address, a range, ``0.0.0.0/0``);
- the **gateway** of a range is where it leaves the mesh: the next hop when that serves the range,
  else the next hop's own next hop (a relay, an automatic relay's via), and so on (no chains: the
  plan refuses them; the walk stops after a few hops anyway).

>>> from .models import Network, Member
>>> net = Network(id="net_a", name="a", ipv4_cidr="100.64.0.0/16", ipv6_cidr="fd00::/64")
>>> ms = [Member("net_a", f"host_{i}", f"h{i}", f"k{i}", f"100.64.0.{i}", f"fd00::{i}", 51820)
...       for i in (1, 2)]
>>> m = network_map(NetworkRecords.of(net, ms), {})
>>> [(h.host_id, h.peers) for h in m.hosts]
[('host_1', ('host_2',)), ('host_2', ('host_1',))]
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .ids import ClientId, HostId
from .plan import INTERNET, HostView, NetworkRecords, candidates, network_plan

__all__ = ["Route", "HostMap", "ClientMap", "PairMap", "NetworkMap", "network_map", "MAX_HOPS"]

MAX_HOPS = 4  # a member, its relay, the relay's gateway: the plan allows no longer path


@dataclass(frozen=True)
class Route:
    """Where one member sends one destination outside the network's own ranges."""

    destination: str  # an egress range, or INTERNET ("0.0.0.0/0": the full tunnel, IPv6 with it)
    next_hop: HostId | None  # the peer whose entry carries it here (None: no entry carries it)
    gateway: HostId | None  # the member where it leaves the mesh (None: none found)
    # the gateways it may use, the plan's ranking best first (its placement, pin or own order);
    # several: HA. Empty for a relayed member (its relay chooses).
    candidates: tuple[HostId, ...] = ()


@dataclass(frozen=True)
class HostMap:
    host_id: HostId
    name: str
    peers: tuple[HostId, ...]  # the members it has an entry for, in host id order
    via: tuple[tuple[HostId, HostId], ...]  # (member, next hop) for every member it reaches through another
    routes: tuple[Route, ...]  # by destination
    relay: HostId | None  # the member that relays it (it peers with that one alone)
    down: tuple[HostId, ...]  # what its latest report found down (the plan skips those gateways)


@dataclass(frozen=True)
class ClientMap:
    client_id: ClientId
    name: str
    gateway: HostId
    served: bool  # enabled, and its gateway is a member with remote access


@dataclass(frozen=True)
class PairMap:
    a: HostId
    b: HostId
    via: HostId


@dataclass(frozen=True)
class NetworkMap:
    hosts: tuple[HostMap, ...]  # by host id
    clients: tuple[ClientMap, ...]  # by client id
    pairs: tuple[PairMap, ...]  # pairs relayed automatically, by (a, b)


def network_map(records: NetworkRecords, down: Mapping[HostId, frozenset[HostId]]) -> NetworkMap:
    """The map of ``records``' network, each member's plan computed with ``down[member]`` (what its
    latest report found down; absent: nothing). Costs one plan per member (O(members²) peer rules),
    the plans of members with the same ``down`` shared."""
    plans: dict[frozenset[HostId], Mapping[HostId, HostView]] = {}
    carriers: dict[HostId, dict[str, HostId]] = {}

    def view(h: HostId) -> HostView:
        d = frozenset(down.get(h, ()))
        if d not in plans:
            plans[d] = network_plan(records if d == records.down else replace(records, down=d))
        return plans[d][h]

    def carrier(h: HostId, prefix: str) -> HostId | None:
        """The peer WireGuard sends ``prefix`` to at ``h``: the entry with the longest allowed IP that
        holds it (cryptokey routing), e.g. a relay's entry carries the network's whole range."""
        if h not in carriers:  # one prefix, one peer (the plan's own rule): an index per member
            carriers[h] = {a: p.host_id for p in view(h).peers for a in p.allowed_ips}
        exact = carriers[h].get(prefix)
        if exact is not None:
            return exact
        want = ipaddress.ip_network(prefix, strict=False)
        best: tuple[int, HostId] | None = None
        for allowed, peer_id in carriers[h].items():
            net = ipaddress.ip_network(allowed, strict=False)
            holds = net.version == want.version and net.prefixlen <= want.prefixlen and net.overlaps(want)
            if holds and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, peer_id)
        return None if best is None else best[1]

    def serves(h: HostId, prefix: str) -> bool:
        gw = records.gateway(h)
        return gw is not None and (gw.internet if prefix == INTERNET else prefix in gw.egress)

    def gateway(h: HostId, prefix: str) -> tuple[HostId | None, HostId | None]:
        first = hop = carrier(h, prefix)
        for _ in range(MAX_HOPS):
            if hop is None or serves(hop, prefix) or hop not in records.members:
                break
            hop = carrier(hop, prefix)
        return first, hop if hop is not None and serves(hop, prefix) else None

    egress = sorted({r for m in records.members.values() if (role := m.role.gateway) for r in role.egress})
    hosts = []
    for h in sorted(records.members):
        me = records.members[h]
        own = set(me.role.gateway.egress) if me.role.gateway else set()
        wanted = [r for r in egress if r not in own] + ([INTERNET] if records.internet_gateway(h) else [])
        routes = []
        for prefix in wanted:
            first, gw = gateway(h, prefix)
            # a relayed member sends everything to its relay, whose own ranking decides (as the failover does)
            ranked = candidates(records, h, prefix) if records.relay_of(h) is None else ()
            routes.append(Route(prefix, first, gw, ranked))
        members = [p.host_id for p in view(h).peers if p.host_id in records.members]
        via = tuple((t, n) for t in sorted(records.members) if t != h
                    and (n := carrier(h, f"{records.members[t].ipv4}/32")) is not None and n != t)
        hosts.append(HostMap(h, me.name, tuple(members), via, tuple(routes), records.relay_of(h),
                             tuple(sorted(down.get(h, ())))))
    clients = tuple(ClientMap(c.id, c.name, c.gateway, records.served(c))
                    for c in (records.clients[i] for i in sorted(records.clients)))
    pairs = tuple(PairMap(a, b, v) for (a, b), v in sorted(records.pair_relays.items()))
    return NetworkMap(tuple(hosts), clients, pairs)
