"""Addresses, MTU, link state and routes of the WireGuard interface, through rtnetlink (pyroute2).

:class:`NetConf` makes the interface carry exactly the addresses and routes it is
given, changing only what differs. The routes it owns are the main-table routes
on the interface with ``proto static`` (the protocol it adds them with), so routes
someone else put there with another protocol are left alone.
:func:`local_addresses` lists the host's own addresses to offer as endpoints.
pyroute2 is imported on first use.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["NetConf", "NetConfError", "NetChanges", "local_addresses"]

RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
UAPI_SOCKET_DIR = Path("/var/run/wireguard")


class NetConfError(RuntimeError):
    """The interface is missing or the kernel refused a change; the message lists what failed."""


@dataclass(frozen=True)
class NetChanges:
    """What one :meth:`NetConf.apply` (or :meth:`NetConf.clear`) changed."""

    addresses_added: tuple[str, ...] = ()
    addresses_removed: tuple[str, ...] = ()
    routes_added: tuple[str, ...] = ()
    routes_removed: tuple[str, ...] = ()
    mtu: int | None = None  # the new MTU when it was changed
    brought_up: bool = False

    def __bool__(self) -> bool:
        return bool(self.addresses_added or self.addresses_removed or self.routes_added
                    or self.routes_removed or self.mtu is not None or self.brought_up)


def _ipr(netns: str | None) -> Any:
    from pyroute2 import IPRoute

    try:
        return IPRoute(netns=netns, flags=0) if netns else IPRoute()  # flags=0: never create the netns
    except FileNotFoundError:
        raise NetConfError(f"network namespace {netns!r} does not exist") from None


def _local(msg: Any) -> str:
    """The address itself (on point-to-point links IFA_ADDRESS can be the peer's)."""
    return str(msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS"))


def _canonical(prefixes: Iterable[str], host: bool) -> set[str]:
    if host:
        return {str(ipaddress.ip_interface(p)) for p in prefixes}
    return {str(ipaddress.ip_network(p, strict=False)) for p in prefixes}


def _family_sorted(prefixes: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(prefixes, key=lambda p: (":" in p, p)))


class NetConf:
    """The addresses, MTU, up state and routes of link ``ifname`` (in ``netns`` when given)."""

    def __init__(self, ifname: str, netns: str | None = None) -> None:
        self.ifname = ifname
        self.netns = netns

    def __repr__(self) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        return f"NetConf({self.ifname}{where})"

    def _index(self, ipr: Any) -> int:
        idx = ipr.link_lookup(ifname=self.ifname)
        if not idx:
            where = f" in network namespace {self.netns}" if self.netns else ""
            raise NetConfError(f"interface {self.ifname} does not exist{where}")
        return int(idx[0])

    @staticmethod
    def _addresses(ipr: Any, idx: int) -> dict[str, Any]:
        """Global and site addresses on the link (not link-local), ``ip/prefixlen`` → message."""
        out = {}
        for msg in ipr.get_addr(index=idx):
            if msg["index"] != idx:
                continue
            iface = ipaddress.ip_interface(f"{_local(msg)}/{msg['prefixlen']}")
            if iface.ip.is_link_local:
                continue
            out[str(iface)] = msg
        return out

    @staticmethod
    def _routes(ipr: Any, idx: int) -> tuple[set[str], dict[str, Any]]:
        """Main-table unicast routes via the link: (all destinations, ours = proto static → message)."""
        present: set[str] = set()
        ours: dict[str, Any] = {}
        for msg in ipr.get_routes(oif=idx):
            table = msg.get_attr("RTA_TABLE") or msg["table"]
            if table != RT_TABLE_MAIN or msg["type"] != RTN_UNICAST or msg.get_attr("RTA_OIF") != idx:
                continue
            dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if msg["family"] == 2 else "::")
            net = str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False))
            present.add(net)
            if msg["proto"] == RTPROT_STATIC:
                ours[net] = msg
        return present, ours

    def apply(self, addresses: tuple[str, ...], routes: tuple[str, ...], mtu: int) -> NetChanges:
        """Make the link carry exactly ``addresses`` and our ``routes``, with ``mtu``, and up.

        ``addresses`` are interface addresses (``100.64.0.7/32``, ``fd5a::7/128``),
        ``routes`` ranges routed into the link (``100.64.0.0/16``). Only what
        differs is changed. Every change is tried; :class:`NetConfError` then
        lists those the kernel refused.
        """
        from pyroute2.netlink.exceptions import NetlinkError

        want_addrs = _canonical(addresses, host=True)
        want_routes = _canonical(routes, host=False)
        errors: list[str] = []
        added_a, removed_a, added_r, removed_r = [], [], [], []
        new_mtu, brought_up = None, False
        with _ipr(self.netns) as ipr:
            idx = self._index(ipr)
            link = ipr.get_links(idx)[0]
            if link.get_attr("IFLA_MTU") != mtu:
                try:
                    ipr.link("set", index=idx, mtu=mtu)
                    new_mtu = mtu
                except NetlinkError as e:
                    errors.append(f"setting MTU {mtu}: {e.args[-1] if e.args else e}")
            if not link["flags"] & IFF_UP:
                try:
                    ipr.link("set", index=idx, state="up")
                    brought_up = True
                except NetlinkError as e:
                    errors.append(f"bringing the link up: {e.args[-1] if e.args else e}")

            # Add before removing: an interface that loses its last IPv4 address loses
            # every IPv4 route through it, ours and others'.
            have_addrs = self._addresses(ipr, idx)
            to_remove = set(have_addrs) - want_addrs
            for a in sorted(want_addrs - set(have_addrs)):
                same_ip = sorted(o for o in to_remove if o.split("/")[0] == a.split("/")[0])
                err = self._addr(ipr, idx, a, "add")
                if err and same_ip:  # the same address with another prefix length is in the way
                    for o in same_ip:
                        to_remove.discard(o)
                        o_err = self._addr(ipr, idx, o, "del")
                        if o_err:
                            errors.append(o_err)
                        else:
                            removed_a.append(o)
                    err = self._addr(ipr, idx, a, "add")
                if err:
                    errors.append(err)
                else:
                    added_a.append(a)
            for a in sorted(to_remove):
                err = self._addr(ipr, idx, a, "del")
                if err:
                    errors.append(err)
                else:
                    removed_a.append(a)

            present, ours = self._routes(ipr, idx)
            for r in sorted(set(ours) - want_routes):
                err = self._del_route(ipr, idx, r, ours[r])
                if err:
                    errors.append(err)
                else:
                    removed_r.append(r)
            for r in sorted(want_routes - present):
                net = ipaddress.ip_network(r)
                kwargs: dict[str, Any] = {"dst": r, "oif": idx, "proto": "static", "table": RT_TABLE_MAIN}
                if net.version == 4:
                    kwargs["scope"] = RT_SCOPE_LINK  # like `ip route add R dev IF`
                try:
                    ipr.route("add", **kwargs)
                    added_r.append(r)
                except NetlinkError as e:
                    if e.code == errno.EEXIST:
                        errors.append(f"adding route {r}: a route to {r} already exists on another "
                                      "interface (remove it or use another range)")
                    else:
                        errors.append(f"adding route {r}: {e.args[-1] if e.args else e}")
        if errors:
            raise NetConfError(f"{self.ifname}: " + "; ".join(errors))
        return NetChanges(addresses_added=_family_sorted(added_a),
                          addresses_removed=_family_sorted(removed_a),
                          routes_added=_family_sorted(added_r), routes_removed=_family_sorted(removed_r),
                          mtu=new_mtu, brought_up=brought_up)

    @staticmethod
    def _addr(ipr: Any, idx: int, a: str, op: str) -> str | None:
        """Add (``op="add"``) or delete (``"del"``) address ``a``; an error message, or None.

        Deleting an address that is not there is fine.
        """
        from pyroute2.netlink.exceptions import NetlinkError

        iface = ipaddress.ip_interface(a)
        try:
            ipr.addr(op, index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as e:
            if op == "add" or e.code != errno.EADDRNOTAVAIL:
                return f"{'adding' if op == 'add' else 'removing'} address {a}: {e.args[-1] if e.args else e}"
        return None

    @staticmethod
    def _del_route(ipr: Any, idx: int, r: str, msg: Any) -> str | None:
        """Delete route ``r`` as the kernel listed it (``msg``): same scope, metric and table."""
        from pyroute2.netlink.exceptions import NetlinkError

        kwargs: dict[str, Any] = {"dst": r, "oif": idx, "proto": msg["proto"], "scope": msg["scope"],
                                  "table": RT_TABLE_MAIN}
        if msg.get_attr("RTA_PRIORITY") is not None:
            kwargs["priority"] = msg.get_attr("RTA_PRIORITY")
        try:
            ipr.route("del", **kwargs)
        except NetlinkError as e:
            if e.code != errno.ESRCH:
                return f"removing route {r}: {e.args[-1] if e.args else e}"
        return None

    def clear(self) -> NetChanges:
        """Remove our routes (proto static via the link) and the link's addresses; a missing link is fine.

        The link itself stays (its backend deletes it). Note that the kernel drops
        every IPv4 route through a link once its last IPv4 address is gone.
        """

        errors: list[str] = []
        removed_a, removed_r = [], []
        with _ipr(self.netns) as ipr:
            try:
                idx = self._index(ipr)
            except NetConfError:
                return NetChanges()
            for r, msg in sorted(self._routes(ipr, idx)[1].items()):
                err = self._del_route(ipr, idx, r, msg)
                if err:
                    errors.append(err)
                else:
                    removed_r.append(r)
            for a in sorted(self._addresses(ipr, idx)):
                err = self._addr(ipr, idx, a, "del")
                if err:
                    errors.append(err)
                else:
                    removed_a.append(a)
        if errors:
            raise NetConfError(f"{self.ifname}: " + "; ".join(errors))
        return NetChanges(addresses_removed=_family_sorted(removed_a),
                          routes_removed=_family_sorted(removed_r))


def local_addresses(exclude_ifnames: Iterable[str] = (), netns: str | None = None) -> list[str]:
    """The host's usable unicast addresses on other interfaces, as endpoint candidates.

    Leaves out loopback, link-local, multicast and tentative/deprecated/duplicate
    addresses, links that are down, links named in ``exclude_ifnames``, kernel
    WireGuard links and wireguard-go links (those with a UAPI socket). IPv4 first,
    then IPv6, each in link order; no prefix length (``198.18.10.1``).
    """
    excluded = set(exclude_ifnames)
    with _ipr(netns) as ipr:
        usable: set[int] = set()
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            if (name in excluded or kind == "wireguard" or link["flags"] & IFF_LOOPBACK
                    or not link["flags"] & IFF_UP or (UAPI_SOCKET_DIR / f"{name}.sock").exists()):
                continue
            usable.add(link["index"])
        found: list[tuple[int, int, str]] = []
        for msg in ipr.get_addr():
            if msg["index"] not in usable:
                continue
            flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
            if flags & (IFA_F_TENTATIVE | IFA_F_DEPRECATED | IFA_F_DADFAILED):
                continue
            ip = ipaddress.ip_address(_local(msg))
            if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
                continue
            found.append((ip.version, len(found), str(ip)))
    return list(dict.fromkeys(ip for _, _, ip in sorted(found)))
