"""Network records → one host's WireGuard interface and peers.

The control plane (for ``/config``) and every agent run this same function on the
same records, so one change in a network is one small broadcast, and each host
derives its own configuration from it.

Rule: a host peers with every other member of the network exactly once; each
peer's allowed IPs are that member's overlay addresses, which are unique in the
network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .ids import HostId
from .models import Member, Network

__all__ = ["Peer", "Interface", "HostView", "host_view", "peer_of"]


@dataclass(frozen=True)
class Peer:
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
    network_id: str
    seq: int
    interface: Interface
    peers: tuple[Peer, ...]

    @property
    def routes(self) -> tuple[str, ...]:
        """The overlay ranges routed into the interface."""
        return tuple(str(ipaddress.ip_interface(a).network) for a in self.interface.addresses)


def host_view(host_id: str, network: Network, members: Iterable[Member]) -> HostView:
    """What host ``host_id`` must configure for ``network``.

    ``members`` are all members of the network (the host itself included).
    Raises ``KeyError`` when the host is not among them.
    """
    by_host = {m.host_id: m for m in members}
    me = by_host[HostId(host_id)]
    v4_prefix = ipaddress.ip_network(network.ipv4_cidr).prefixlen
    v6_prefix = ipaddress.ip_network(network.ipv6_cidr).prefixlen
    interface = Interface(
        addresses=(f"{me.ipv4}/{v4_prefix}", f"{me.ipv6}/{v6_prefix}"),
        listen_port=me.listen_port,
        mtu=network.mtu,
    )
    peers = tuple(
        peer_of(m, network)
        for m in sorted(by_host.values(), key=lambda m: m.host_id)
        if m.host_id != me.host_id and m.public_key != me.public_key
    )
    return HostView(network_id=network.id, seq=network.seq, interface=interface, peers=peers)


def peer_of(member: Member, network: Network) -> Peer:
    """How ``member`` appears as a peer to the other hosts of ``network``."""
    return Peer(
        host_id=member.host_id,
        name=member.name,
        public_key=member.public_key,
        endpoint=member.endpoints[0] if member.endpoints else None,
        allowed_ips=member.allowed_ips,
        keepalive=network.keepalive,
    )
