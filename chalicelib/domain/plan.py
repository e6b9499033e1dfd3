"""A network's records → every host's plan in it: peers with allowed IPs, routes, forwarding.

The one place the topology rule is written. The control plane (``/config``) and every
agent run it on the same records, so a change in a network is one small broadcast of
the changed records, and each host derives its own configuration from them.

Two entry points, one rule (:func:`peer`):

- :func:`network_plan` — the whole plan of a network, host by host (each host's plan is
  computed when first read, so ``/config`` for one host costs O(network), not O(network²));
- :func:`dependents` — which members' peer entries may differ after some records changed:
  the agent's fast path recomputes only those (:func:`peer` for each), so one change costs
  O(change) on every host of a large network.

Rule today: a host peers with every other member of the network exactly once (never with
itself, nor with a member holding its own key); each peer's allowed IPs are that member's
overlay addresses (a /32 and a /128, unique in the network); a host routes the network's
ranges into the interface; it forwards and NATs nothing.

>>> from .models import Network, Member
>>> net = Network(id="net_a", name="a", ipv4_cidr="100.64.0.0/16", ipv6_cidr="fd00::/64")
>>> ms = [Member("net_a", f"host_{i}", f"h{i}", f"k{i}", f"100.64.0.{i}", f"fd00::{i}", 51820)
...       for i in (1, 2)]
>>> plan = network_plan(NetworkRecords.of(net, ms))
>>> [(p.host_id, p.allowed_ips) for p in plan["host_1"].peers]
[('host_2', ('100.64.0.2/32', 'fd00::2/128'))]
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from .ids import HostId, NetworkId
from .models import Member, Network

__all__ = [
    "Gateway",
    "RemoteClient",
    "Relay",
    "PairRelay",
    "HaGroup",
    "NetworkRecords",
    "Peer",
    "Interface",
    "HostView",
    "NetworkPlan",
    "network_plan",
    "peer",
    "dependents",
]


# ------------------------------------------------------------------------------ inputs
# The records the next issues add. Each is accepted (and empty) today; the comments say
# what each will change in the plan, so a feature is a change of this module's rule, not
# of the shape every caller passes around.
@dataclass(frozen=True)
class Gateway:
    """A member that serves others beyond its own addresses.

    - ``remote_access``: it terminates :class:`RemoteClient` tunnels; its peer entry at
      every other member gains the clients' addresses as allowed IPs, and it forwards
      between the clients and the network.
    - ``egress``: ranges behind it (e.g. ``10.1.0.0/16``); its peer entry gains them as
      allowed IPs, the other members route them into the interface, it forwards them.
    - ``internet``: it is a default route for members that opt in; their entry of it gains
      ``0.0.0.0/0`` and ``::/0`` (wg-quick's fwmark/table routing), and it NATs.
    """

    host_id: HostId
    remote_access: bool = False
    egress: tuple[str, ...] = ()
    internet: bool = False


@dataclass(frozen=True)
class RemoteClient:
    """A device without an agent (a wg-quick file), reachable through one gateway.

    Not a member: no other member peers with it. Its addresses become allowed IPs of its
    gateway's peer entry at every member; the gateway has it as a peer of its own.
    """

    id: str
    name: str
    public_key: str
    ipv4: str
    ipv6: str
    gateway: HostId


@dataclass(frozen=True)
class Relay:
    """A member that carries traffic for ``relayed`` members that cannot be reached directly.

    Every other member drops its direct peer entry of a relayed host and adds the relayed
    host's addresses to the relay's allowed IPs; the relayed host peers only with the relay.
    """

    host_id: HostId
    relayed: tuple[HostId, ...] = ()


@dataclass(frozen=True)
class PairRelay:
    """Traffic between ``a`` and ``b`` (only) goes through ``via``: at ``a`` the entry of ``b``
    disappears and ``b``'s addresses join ``via``'s allowed IPs, and the other way round."""

    a: HostId
    b: HostId
    via: HostId


@dataclass(frozen=True)
class HaGroup:
    """Candidates that can each serve a role (a gateway's ranges, a relay), ranked; ``chosen``
    is the one serving now. Only the chosen candidate's peer entry carries the role's
    allowed IPs (one prefix, one peer); failing over moves them, one peer update per host."""

    id: str
    candidates: tuple[HostId, ...]
    chosen: HostId | None = None


@dataclass(frozen=True)
class NetworkRecords:
    """Everything the plan of one network is computed from.

    ``members`` is keyed by host id; it is read, never copied or changed, so the agent can
    pass the dict it keeps current (building the records is O(1)).
    """

    network: Network
    members: Mapping[HostId, Member]
    gateways: tuple[Gateway, ...] = ()
    clients: tuple[RemoteClient, ...] = ()
    relays: tuple[Relay, ...] = ()
    pair_relays: tuple[PairRelay, ...] = ()
    ha_groups: tuple[HaGroup, ...] = ()

    @classmethod
    def of(cls, network: Network, members: Iterable[Member], **more: tuple) -> NetworkRecords:
        """The records of ``network`` with these ``members`` (in any order)."""
        return cls(network, {m.host_id: m for m in members}, **more)


# ----------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class Peer:
    """One member as a WireGuard peer of one host, in one network."""

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
    peers: tuple[Peer, ...]  # sorted by host id
    routes: tuple[str, ...]  # ranges routed into the interface
    forwards: tuple[str, ...] = ()  # ranges this host forwards for others (gateways, relays)
    nat: tuple[str, ...] = ()  # ranges it masquerades (internet gateways)


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
def peer(records: NetworkRecords, viewer: HostId, target: HostId) -> Peer | None:
    """How member ``target`` appears as a peer of member ``viewer``, or None when ``viewer``
    does not peer with it (itself, a member with the viewer's own key, not a member)."""
    me = records.members.get(viewer)
    m = records.members.get(target)
    if me is None or m is None or m.host_id == me.host_id or m.public_key == me.public_key:
        return None
    return Peer(
        host_id=m.host_id,
        name=m.name,
        public_key=m.public_key,
        endpoint=m.endpoints[0] if m.endpoints else None,
        allowed_ips=m.allowed_ips,  # gateways, relays and HA choices add theirs here
        keepalive=records.network.keepalive,
    )


def dependents(records: NetworkRecords, changed: Iterable[HostId]) -> frozenset[HostId]:
    """The members whose peer entry, at any host, may depend on the records of ``changed``
    hosts (added, changed or removed).

    Call it on the records before and after a change: the union is what to recompute with
    :func:`peer`. Today a peer entry depends only on its own member's record; a relay's or
    gateway's entry will also depend on the hosts it relays and the clients behind it.
    """
    del records  # the dependencies of relays, gateways and HA groups are read from it
    return frozenset(changed)


def _host_view(records: NetworkRecords, host_id: HostId) -> HostView:
    me = records.members[host_id]
    network = records.network
    addresses = (f"{me.ipv4}/{ipaddress.ip_network(network.ipv4_cidr).prefixlen}",
                 f"{me.ipv6}/{ipaddress.ip_network(network.ipv6_cidr).prefixlen}")
    peers = tuple(p for t in sorted(records.members) if (p := peer(records, host_id, t)) is not None)
    return HostView(
        network_id=network.id,
        seq=network.seq,
        interface=Interface(addresses=addresses, listen_port=me.listen_port, mtu=network.mtu),
        peers=peers,
        routes=tuple(str(ipaddress.ip_interface(a).network) for a in addresses),
    )

