"""One HA gateway group's data plane on one member: the group interface and the floating address.

Every member of a group (issue 11) keeps a WireGuard interface of its own for the group
(:class:`GroupDataPlane`): the group's private key, the floating port as listen port, and
every client of the group as a peer with its allowed IPs. All members have it at all times, so
a takeover only moves what the *active* member adds on :meth:`GroupDataPlane.activate`:

- the floating address on the uplink (``/32`` or ``/128``, preferred lifetime 0 so the host
  never picks it as the source of its own connections nor offers it as an endpoint candidate,
  and IPv6 without duplicate address detection so it is usable at once), announced with a
  gratuitous ARP (IPv4) or an unsolicited neighbour advertisement with the override flag
  (IPv6), so the neighbours' caches point at this member at once;
- a source rewrite in our own nftables table (``skymesh_<ifname>_float``): packets the group
  port starts (the handshakes below) would leave from the uplink's own address, and a client
  behind a NAT drops them (its mapping is for the floating address), while one without a NAT
  would roam its endpoint to this member's own address and be stuck when the next member
  takes over. The rewrite is stateless (``ip saddr set``), not a conntrack SNAT: the clients'
  datagrams already reached the floating port here, and SNAT onto a tuple conntrack knows
  from them would pick another source port. Answers to the client's own packets leave from
  the floating address anyway (WireGuard replies from the address a packet came to);
- routes of the clients' allowed IPs into the group interface (``proto static``, through
  :class:`~agent.netconf.NetConf`, which owns exactly those on the interface);
- the clients' last endpoints (what the active member saw, handed over by
  :meth:`GroupDataPlane.learn_endpoints`) and a handshake started to each at once: turning a
  peer's persistent keepalive on (0 → n) makes both wireguard-go (``device/uapi.go``,
  ``pkaOn`` → ``SendKeepalive``) and the kernel (``netlink.c``, ``send_keepalive``) send a
  keepalive right away, and with no session that is a handshake initiation. The keepalive is
  then put back (``keepalive``, 0 by default: phones should not be woken every 25 s).

:meth:`GroupDataPlane.deactivate` removes exactly what ``activate`` added (an address that was
there before is not ours and stays) and re-creates the peers without endpoints, so a standby
never talks to a client (a keepalive from its own address would make the client roam to it).
The address we add carries our mark (``IFA_PROTO`` :data:`ADDR_PROTO`), so the first
:meth:`GroupDataPlane.ensure` of a restarted agent that is not active removes what a run that
crashed while active left: that address, our table, the endpoints (two members answering ARP
for the floating address would split the clients between them).

Everything acts in the calling thread's network namespace (the agent's), through pyroute2,
``nft`` and raw sockets; nothing here blocks for more than one bounded nft call.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import json
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from chalicelib.domain.device import PeerConfig
from chalicelib.domain.models import DEFAULT_MTU

from .gateway import nft_tables, run_nft, table_name
from .netconf import RT_TABLE_MAIN, NetConf, NetConfError
from .wg import make_backend
from .wg.base import Backend, BackendError

__all__ = ["GroupDataPlane", "FloatingError", "snat_table", "snat_ruleset", "garp_frame",
           "neighbour_advertisement"]

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02
ADDR_PROTO = 0x73  # IFA_PROTO of the floating addresses we add: how a restarted agent knows its own
ETH_P_ARP = 0x0806
PULSE = 25  # the keepalive that starts a handshake (any n > 0 does; 25 s if it were left on)
FOREVER = 0xFFFFFFFF


class FloatingError(RuntimeError):
    """The group interface or the floating address could not be set up or removed; says why."""


def snat_table(ifname: str) -> str:
    """Our nftables table for group interface ``ifname`` (beside :func:`agent.gateway.table_name`'s)."""
    return table_name(ifname) + "_float"


def snat_ruleset(ifname: str, port: int, floating_ip: str | None) -> dict[str, Any]:
    """The ``nft -j -f`` document that replaces our table with a rewrite of the source of UDP
    from ``port`` to ``floating_ip`` (None: only removes the table). Pure; the table::

        table inet skymesh_IF_float {
          chain postrouting { type filter hook postrouting priority srcnat + 10; policy accept;
            udp sport PORT ip saddr != FLOATING ip saddr set FLOATING } }      (ip6 for IPv6)
    """
    table = {"family": "inet", "name": snat_table(ifname)}
    cmds: list[dict[str, Any]] = [{"metainfo": {"json_schema_version": 1}},
                                  {"add": {"table": dict(table)}}, {"delete": {"table": dict(table)}}]
    if floating_ip is None:
        return {"nftables": cmds}
    ip = ipaddress.ip_address(floating_ip)
    fam = "ip" if ip.version == 4 else "ip6"
    saddr = {"payload": {"protocol": fam, "field": "saddr"}}
    where = {"family": "inet", "table": snat_table(ifname)}
    cmds += [
        {"add": {"table": dict(table)}},
        {"add": {"chain": {**where, "name": "postrouting", "type": "filter", "hook": "postrouting",
                           "prio": 110, "policy": "accept"}}},
        {"add": {"rule": {**where, "chain": "postrouting", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}},
                       "right": port}},
            {"match": {"op": "!=", "left": saddr, "right": str(ip)}},
            {"mangle": {"key": saddr, "value": str(ip)}}]}}},
    ]
    return {"nftables": cmds}


def garp_frame(mac: bytes, ip: str) -> bytes:
    """A gratuitous ARP request (broadcast; sender = target = ``ip``) from ``mac``."""
    addr = ipaddress.IPv4Address(ip).packed
    return (b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + addr + b"\x00" * 6 + addr)


def neighbour_advertisement(mac: bytes, ip: str) -> bytes:
    """The ICMPv6 body of an unsolicited neighbour advertisement of ``ip`` at ``mac``: override
    set, solicited clear, with the target link-layer address option (the kernel fills in the
    checksum of a raw ICMPv6 socket)."""
    target = ipaddress.IPv6Address(ip).packed
    return struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target + struct.pack("!BB", 2, 1) + mac


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """``method`` run holding its object's lock."""
    @functools.wraps(method)
    def run(self: GroupDataPlane, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return cast(_F, run)


def _ours(ipr: Any, ip: str, index: int | None = None) -> list[tuple[int, int]]:
    """(link index, prefix length) of each copy of address ``ip`` we added (marked
    :data:`ADDR_PROTO`), on link ``index`` or any."""
    want = ipaddress.ip_address(ip)
    return [(int(m["index"]), int(m["prefixlen"])) for m in ipr.get_addr()
            if (index is None or m["index"] == index) and m.get_attr("IFA_PROTO") == ADDR_PROTO
            and ipaddress.ip_address(m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")) == want]


def _mac(ipr: Any, index: int) -> bytes:
    return bytes.fromhex(str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")).replace(":", ""))


def _mac_of(ifname: str) -> bytes:
    """The hardware address of link ``ifname`` in the caller's namespace (``OSError`` if none)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise OSError(errno.ENODEV, f"no link {ifname}")
        return _mac(ipr, int(idx[0]))


@dataclass(frozen=True)
class _Active:
    """What one :meth:`GroupDataPlane.activate` added, to remove exactly that."""

    uplink: str
    address: str | None  # "ip/len" we added; None when it was there already (not ours)
    floating_ip: str


class GroupDataPlane:
    """The group interface ``ifname`` of one group on this member, and, while active, the floating
    address and what goes with it (see the module docstring).

    ``backend``: a :func:`agent.wg.make_backend` kind (``auto``: kernel WireGuard where the module
    is, else wireguard-go). ``uplink``: the link that carries the floating address (None: the
    link of the main table's most specific route to it). ``keepalive``: the persistent keepalive
    towards clients while active (0: only the one that starts the handshake).
    """

    def __init__(self, ifname: str, *, backend: str = "auto", uplink: str | None = None,
                 keepalive: int = 0, mtu: int = DEFAULT_MTU, nft: str = "nft") -> None:
        self.ifname = ifname
        self.uplink = uplink
        self.keepalive = keepalive
        self.mtu = mtu
        self.nft = nft
        self._backend_kind = backend
        self._wg: Backend | None = None
        self._swept = False
        self._port: int | None = None
        self._floating: str | None = None
        self._clients: dict[str, tuple[str, ...]] = {}
        self._endpoints: dict[str, str] = {}
        self._active: _Active | None = None
        # the election loop (activate, deactivate, learn_endpoints) and the runner (ensure) call in
        # from different threads: one change at a time
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"GroupDataPlane({self.ifname}{', active' if self._active else ''})"

    @property
    def is_active(self) -> bool:
        """Whether :meth:`activate` holds (and :meth:`deactivate` has not undone it)."""
        return self._active is not None

    # --- the interface (every member) --------------------------------------------------------
    @_locked
    def ensure(self, group_private_key: str, clients: Mapping[str, Iterable[str]], listen_port: int,
               floating_ip: str) -> None:
        """The group interface exists with this key and port and exactly ``clients`` (public key →
        allowed IPs: the client's addresses and extra addresses) as peers; the link is up.

        Idempotent; changes only what differs. While active it also follows: a moved floating
        address or port moves (deactivate, activate), routes follow the clients, and a new client whose
        endpoint is known gets a handshake at once. Raises :class:`FloatingError`.
        """
        ip = str(ipaddress.ip_address(floating_ip))
        want = {k: PeerConfig(public_key=k, allowed_ips=tuple(v)).allowed_ips for k, v in clients.items()}
        if self._active is not None and (ip, listen_port) != (self._floating, self._port):
            self.deactivate()  # the address and the rewrite (which names the port) move
            moved = True
        else:
            moved = False
        wg = self._device()
        try:
            created = wg.ensure_device(group_private_key, listen_port)
            have = wg.peers()
        except BackendError as e:
            raise FloatingError(f"{self.ifname}: {e}") from None
        self._port, self._floating = listen_port, ip
        upsert = [PeerConfig(public_key=k, allowed_ips=ips) for k, ips in want.items()
                  if k not in have or have[k].allowed_ips != ips]
        remove = [k for k in have if k not in want]
        new = [k for k in want if k not in have]
        self._clients = want
        self._endpoints = {k: v for k, v in self._endpoints.items() if k in want}
        try:
            wg.apply_peers(upsert, remove)
        except BackendError as e:
            raise FloatingError(f"{self.ifname}: {e}") from None
        self._netconf()
        if not self._swept and self._active is None:
            self._sweep()  # only now: it needs the floating address and the device
        if moved:
            self.activate()
        elif self._active is not None:
            # a re-created device lost every session: start them all again
            self._start_handshakes(list(want) if created else new)

    @_locked
    def client_endpoints(self) -> dict[str, str]:
        """Each client's endpoint as the interface has it now (``ip:port``, ``[ip6]:port``); clients
        with none are left out, and so is everything when the interface is gone. What it returns is
        also remembered: a device re-created while active starts its handshakes from it."""
        if self._wg is None:
            return {}
        try:
            seen = {k: p.endpoint for k, p in self._wg.stats().items() if p.endpoint and k in self._clients}
        except BackendError:
            return {}
        self._endpoints.update(seen)
        return seen

    @_locked
    def learn_endpoints(self, endpoints: Mapping[str, str]) -> None:
        """Remember the clients' endpoints another member saw, for :meth:`activate` (a standby
        never sets them on its interface: it must not talk to clients). Those of keys that are not
        clients are ignored."""
        self._endpoints.update(endpoints)

    # --- the active member's part -------------------------------------------------------------
    @_locked
    def activate(self) -> None:
        """Take the floating address, announce it, rewrite the group port's source to it, route the
        clients into the interface, and start a handshake to every client with a known endpoint.

        Idempotent. Call :meth:`ensure` first. Raises :class:`FloatingError`; what was added
        before the failure stays recorded, so :meth:`deactivate` removes it.
        """
        if self._active is not None:
            return
        if self._floating is None or self._port is None:
            raise FloatingError(f"{self.ifname}: activate() before ensure(): no floating address yet")
        ip = ipaddress.ip_address(self._floating)
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        with IPRoute() as ipr:
            uplink, idx = self._find_uplink(ipr, ip)
            prefix = f"{ip}/{ip.max_prefixlen}"
            try:
                ipr.addr("add", index=idx, address=str(ip), prefixlen=ip.max_prefixlen,
                         flags=IFA_F_NODAD if ip.version == 6 else 0, IFA_PROTO=ADDR_PROTO,
                         IFA_CACHEINFO={"ifa_preferred": 0, "ifa_valid": FOREVER, "cstamp": 0, "tstamp": 0})
                added: str | None = prefix
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise FloatingError(f"{self.ifname}: adding the floating address {prefix} to {uplink}: "
                                        f"{e.args[-1] if e.args else e}") from None
                added = prefix if _ours(ipr, str(ip), idx) else None
                if added is None:  # someone else put it there: not ours to remove
                    log.warning("%s: the floating address %s was on %s already; it is left there on "
                                "deactivate", self.ifname, prefix, uplink)
            mac = _mac(ipr, idx)
        self._active = _Active(uplink, added, str(ip))
        self.announce(uplink, mac)
        run_nft(["-j", "-f", "-"], json.dumps(snat_ruleset(self.ifname, self._port, str(ip))), nft=self.nft,
                who=self.ifname, purpose="this host is a member of a gateway group")
        self._netconf()
        self._start_handshakes(list(self._clients))

    @_locked
    def announce(self, uplink: str | None = None, mac: bytes | None = None) -> None:
        """Tell the uplink's neighbours the floating address is here: a gratuitous ARP (IPv4) or an
        unsolicited neighbour advertisement to all nodes (IPv6). Only while active; a send that
        fails is logged (the neighbours then learn it on their next resolution)."""
        if self._active is None:
            return
        uplink = uplink or self._active.uplink
        ip = ipaddress.ip_address(self._active.floating_ip)
        try:
            if mac is None:
                mac = _mac_of(uplink)
            if ip.version == 4:
                with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
                    s.bind((uplink, 0))
                    s.send(garp_frame(mac, str(ip)))
            else:
                index = socket.if_nametoindex(uplink)
                with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                    s.sendto(neighbour_advertisement(mac, str(ip)), ("ff02::1", 0, 0, index))
        except OSError as e:
            log.warning("%s: announcing %s on %s failed: %s", self.ifname, ip, uplink, e)

    @_locked
    def deactivate(self) -> None:
        """Undo :meth:`activate`: drop the address it added, our nftables table and the routes, and
        re-create the peers without endpoints (the endpoints seen so far are kept for a later
        :meth:`activate`). Idempotent; works when the interface is gone. Every step is tried;
        :class:`FloatingError` lists those that failed."""
        errors: list[str] = []
        self.learn_endpoints(self.client_endpoints())
        active, self._active = self._active, None
        if active is not None and active.address is not None:
            errors += self._remove_address(active.uplink, active.address)
        try:
            if snat_table(self.ifname) in nft_tables("inet", nft=self.nft, who=self.ifname):
                run_nft(["-j", "-f", "-"], json.dumps(snat_ruleset(self.ifname, 0, None)), nft=self.nft,
                        who=self.ifname)
        except NetConfError as e:
            errors.append(str(e))
        if self._wg is not None and self._wg.exists():
            try:
                self._netconf()
                keys = list(self._clients)
                self._wg.apply_peers([], keys)
                self._wg.apply_peers([PeerConfig(public_key=k, allowed_ips=self._clients[k])
                                      for k in keys], [])
            except (BackendError, FloatingError) as e:
                errors.append(str(e))
        if errors:
            raise FloatingError(f"{self.ifname}: " + "; ".join(errors))

    @_locked
    def close(self) -> None:
        """Remove everything: :meth:`deactivate`, then the group interface itself."""
        try:
            self.deactivate()
        finally:
            try:
                (self._wg or make_backend(self._backend_kind, self.ifname)).delete()
            except BackendError as e:
                raise FloatingError(f"{self.ifname}: {e}") from None
            self._wg = None

    # --- helpers ------------------------------------------------------------------------------
    def _device(self) -> Backend:
        if self._wg is None:
            try:
                self._wg = make_backend(self._backend_kind, self.ifname)
            except BackendError as e:
                raise FloatingError(f"{self.ifname}: {e}") from None
        return self._wg

    def _netconf(self) -> None:
        """The link up with our MTU, carrying the clients' routes while active and none otherwise."""
        routes = sorted({p for ips in self._clients.values() for p in ips}) if self._active else []
        try:
            NetConf(self.ifname).apply((), tuple(routes), self.mtu)
        except NetConfError as e:
            raise FloatingError(str(e)) from None

    def _start_handshakes(self, keys: list[str]) -> None:
        """Set the known endpoint of each of ``keys`` and turn the keepalive 0 → on (a handshake now),
        then back to :attr:`keepalive`."""
        peers = [(k, self._endpoints[k]) for k in keys if k in self._endpoints and k in self._clients]
        if not peers:
            return
        wg = self._device()

        def cfg(k: str, ep: str | None, ka: int) -> PeerConfig:
            return PeerConfig(public_key=k, endpoint=ep, allowed_ips=self._clients[k], keepalive=ka)

        try:
            wg.apply_peers([cfg(k, ep, 0) for k, ep in peers], [])
            wg.apply_peers([cfg(k, None, self.keepalive or PULSE) for k, _ in peers], [])
            if not self.keepalive:
                wg.apply_peers([cfg(k, None, 0) for k, _ in peers], [])
        except BackendError as e:
            raise FloatingError(f"{self.ifname}: starting handshakes: {e}") from None

    def _find_uplink(self, ipr: Any, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, int]:
        """The uplink's (name, index): the given one, else the link of the most specific main-table
        route that contains ``ip`` (not the group interface, not a local route)."""
        if self.uplink is not None:
            idx = ipr.link_lookup(ifname=self.uplink)
            if not idx:
                raise FloatingError(f"{self.ifname}: the uplink {self.uplink} does not exist")
            return self.uplink, int(idx[0])
        own = ipr.link_lookup(ifname=self.ifname)
        best: tuple[int, int] | None = None
        for msg in ipr.get_routes(family=socket.AF_INET if ip.version == 4 else socket.AF_INET6):
            table = msg.get_attr("RTA_TABLE") or msg["table"]
            oif = msg.get_attr("RTA_OIF")
            if table != RT_TABLE_MAIN or oif is None or oif in own or msg["type"] != 1:
                continue
            dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if ip.version == 4 else "::")
            net = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)
            if ip in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, int(oif))
        if best is None:
            raise FloatingError(f"{self.ifname}: no route to the floating address {ip}: give the uplink "
                                "or add the address's subnet to an interface")
        return str(ipr.get_links(best[1])[0].get_attr("IFLA_IFNAME")), best[1]

    def _sweep(self) -> None:
        """Remove what a run of this plane that crashed while active left (a standby must hold
        none of it): the floating address where we marked it ours, our table, the endpoints."""
        from pyroute2 import IPRoute

        assert self._floating is not None
        with IPRoute() as ipr:
            found = [(str(ipr.get_links(i)[0].get_attr("IFLA_IFNAME")), n)
                     for i, n in _ours(ipr, self._floating)]
        for link, prefixlen in found:
            log.info("%s: removing the floating address %s a previous run left on %s", self.ifname,
                     self._floating, link)
            errors = self._remove_address(link, f"{self._floating}/{prefixlen}")
            if errors:
                raise FloatingError(f"{self.ifname}: " + "; ".join(errors))
        self.deactivate()
        self._swept = True

    @staticmethod
    def _remove_address(uplink: str, address: str) -> list[str]:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        iface = ipaddress.ip_interface(address)
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=uplink)
            if not idx:
                return []  # the link is gone, and the address with it
            try:
                ipr.addr("del", index=idx[0], address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except NetlinkError as e:
                if e.code != errno.EADDRNOTAVAIL:
                    return [f"removing the floating address {address} from {uplink}: "
                            f"{e.args[-1] if e.args else e}"]
        return []
