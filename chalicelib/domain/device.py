"""The device model: what one host's WireGuard device should look like, and the per-peer
diff to get there.

Pure code, no I/O. The :class:`~chalicelib.domain.plan.HostView` of each of a host's
networks fold into one :class:`DeviceConfig` (one interface, one key, one listen port
for all networks, like ``wg0`` under wg-quick) — the control plane and the agent with
the same code, so ``/config`` shows exactly the device the host configures — and the
agent's backend applies only what differs from the device, peer by peer.

The names of a peer, one per concept, the same in every layer:

- ``Peer`` (``domain.plan``; API shape ``api.schemas.Peer``): a member as a peer of one
  host in one network, as the plan computes it.
- ``PeerConfig`` (here): a peer as configured on the device, merged over networks.
- ``PeerDiff`` (here): the peers to upsert and the keys to remove to reach a device.
- ``DevicePeer`` (``agent.wg.base``): a peer as the device reports it, read raw by a
  backend: its configuration, current endpoint, handshake time and byte counters.
- ``PeerStatus`` (``domain.models``; API shape ``api.schemas.PeerStatus``): what a host
  reports of one peer it talks to: handshake age and byte counters.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import ConflictError
from .models import DEFAULT_MTU
from .plan import HostView, Peer

__all__ = ["PeerConfig", "DeviceConfig", "PeerDiff", "AllowedIpConflictError", "merge_peer", "merge_views",
           "peer_diff", "DEFAULT_MTU"]


class AllowedIpConflictError(ConflictError):
    """Two peers of one device claim the same allowed IP.

    WireGuard would silently give the prefix to whichever peer was set last, so a plan
    that asks for it is refused instead.
    """

    code = "allowed_ip_conflict"


def _sorted_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    return _canonical(tuple(prefixes))


@functools.lru_cache(maxsize=1 << 16)
def _canonical(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """Sorted, deduplicated, canonical prefixes (cached: a device read re-parses the same ones)."""
    nets = {ipaddress.ip_network(p, strict=False) for p in prefixes}
    return tuple(str(n) for n in sorted(nets, key=lambda n: (n.version, n)))


@dataclass(frozen=True)
class PeerConfig:
    """One WireGuard peer as configured (keys base64, allowed IPs canonical and sorted)."""

    public_key: str
    endpoint: str | None = None
    allowed_ips: tuple[str, ...] = ()
    keepalive: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_ips", _sorted_prefixes(self.allowed_ips))


@dataclass(frozen=True)
class DeviceConfig:
    """The whole interface: listen port, MTU, addresses, routes and peers by public key, and
    what the host does for others (forwarding, masquerading) or asks of them (full tunnel)."""

    listen_port: int
    mtu: int = DEFAULT_MTU
    addresses: tuple[str, ...] = ()  # interface addresses with host prefix, e.g. 100.64.0.7/32
    routes: tuple[str, ...] = ()  # ranges routed into the interface, e.g. 100.64.0.0/16
    peers: Mapping[str, PeerConfig] = field(default_factory=dict)
    forwards: tuple[str, ...] = ()  # ranges forwarded to and from the tunnel (a gateway)
    nat: tuple[str, ...] = ()  # destinations masqueraded for traffic from the tunnel (egress, internet)
    full_tunnel: bool = False  # everything else into the tunnel by policy routing (wg-quick's way)


@dataclass(frozen=True)
class PeerDiff:
    """The per-peer change from one device to another: peers to add or change, keys to drop."""

    upsert: tuple[PeerConfig, ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.upsert or self.remove)


def merge_peer(old: PeerConfig | None, p: Peer) -> PeerConfig:
    """Fold one network's view of a peer into what other networks said of the same key.

    Networks are folded in network-id order: the first endpoint known wins, allowed
    IPs are the union, the keepalive the largest asked for.
    """
    return PeerConfig(
        public_key=p.public_key,
        endpoint=(old.endpoint if old and old.endpoint else p.endpoint),
        allowed_ips=(old.allowed_ips if old else ()) + p.allowed_ips,
        keepalive=max(p.keepalive, old.keepalive if old else 0),
    )


def merge_views(views: Iterable[HostView], listen_port: int) -> DeviceConfig:
    """One device for all the host's networks.

    A peer that shares several networks with this host is one WireGuard peer whose
    allowed IPs are the union; its endpoint is the first one known. The MTU is the
    smallest any network asks for, the routes are every network's.

    Raises :class:`AllowedIpConflictError` when two peers (two keys) claim one allowed IP.
    """
    peers: dict[str, PeerConfig] = {}
    addresses: list[str] = []
    routes: list[str] = []
    forwards: list[str] = []
    nat: list[str] = []
    full_tunnel = False
    mtu: int | None = None
    for view in sorted(views, key=lambda v: v.network_id):
        mtu = view.interface.mtu if mtu is None else min(mtu, view.interface.mtu)
        for a in view.interface.addresses:
            ip = ipaddress.ip_interface(a)
            addresses.append(f"{ip.ip}/{ip.max_prefixlen}")
        routes.extend(view.routes)
        forwards.extend(view.forwards)
        nat.extend(view.nat)
        full_tunnel = full_tunnel or view.full_tunnel
        for p in view.peers:
            peers[p.public_key] = merge_peer(peers.get(p.public_key), p)
    _check_allowed_ips(peers.values())
    return DeviceConfig(
        listen_port=listen_port,
        mtu=DEFAULT_MTU if mtu is None else mtu,
        addresses=_sorted_prefixes(addresses),
        routes=_sorted_prefixes(routes),
        peers=peers,
        forwards=_sorted_prefixes(forwards),
        nat=_sorted_prefixes(nat),
        full_tunnel=full_tunnel,
    )


def _check_allowed_ips(peers: Iterable[PeerConfig]) -> None:
    owner: dict[str, str] = {}
    for p in peers:
        for prefix in p.allowed_ips:  # canonical, so equal prefixes are equal strings
            other = owner.setdefault(prefix, p.public_key)
            if other != p.public_key:
                a, b = sorted((other, p.public_key))
                raise AllowedIpConflictError(f"peers {a} and {b} both claim {prefix}; a prefix can be "
                                             "routed to one peer only")


def peer_diff(current: Mapping[str, PeerConfig], desired: Mapping[str, PeerConfig],
              applied: Mapping[str, PeerConfig] | None = None) -> PeerDiff:
    """The peers to set and to remove so that ``current`` becomes ``desired``.

    ``current`` is read from the device. Its endpoints are where WireGuard last
    heard from each peer (they roam behind NAT), so endpoints are compared with
    ``applied``, what this agent last set, when that is known; allowed IPs and
    keepalive are compared with the device itself.
    """
    applied = current if applied is None else applied
    upsert = []
    for key, want in desired.items():
        have = current.get(key)
        if have is None or have.allowed_ips != want.allowed_ips or have.keepalive != want.keepalive:
            upsert.append(want)
            continue
        we_moved_it = key not in applied or applied[key].endpoint != want.endpoint
        if want.endpoint is not None and have.endpoint != want.endpoint and we_moved_it:
            upsert.append(want)
    remove = tuple(sorted(k for k in current if k not in desired))
    return PeerDiff(upsert=tuple(sorted(upsert, key=lambda p: p.public_key)), remove=remove)
