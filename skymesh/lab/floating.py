"""A gateway group's data plane in a lab: two members share a floating address, a phone streams.

The scenario that ``tests/e2e/test_floating.py`` and ``bench/floating_dataplane.py`` share (the
data plane of issue 11 without the election: the test decides who is active)::

    bridge 198.18.0.0/24:  a, b (members; the floating address 198.18.0.200), c (the phone)
    on a and b:            the same service address 100.64.9.1 on lo, a UDP echo on it
    (behind_nat)           c is not on the bridge but behind r, which masquerades 198.19.7.0/24

Each member has a :class:`~agent.floating.GroupDataPlane` with the same group key (run in the
member's namespace through :meth:`~skymesh.lab.netns.Node.call`, as the agent runs in it). The
phone brings up a wg-quick file with ``Endpoint = 198.18.0.200:51900`` and the group's public key,
never touched afterwards, and sends a datagram every 10 ms to the echo through the tunnel. A
*switch* makes the other member active (the old one deactivated, its underlay link down, or its
wireguard-go killed first); the *gap* is the silence in the echoes around it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agent.floating import GroupDataPlane
from chalicelib import wgkeys

from .errors import LabError, LabTimeout
from .iproute import ip
from .netns import Lab, Node
from .services import Gap, PacketStream, UdpEcho, WgQuickClient
from .wait import wait_until

__all__ = ["FloatingLab", "floating_lab", "FLOATING", "PORT", "SERVICE", "CLIENT", "HOW", "NAT_LAN"]

T = TypeVar("T")

FLOATING = "198.18.0.200"
PORT = 51900
SERVICE = "100.64.9.1"  # on every member: what the phone streams to
CLIENT = "100.64.0.9/32"  # the phone's address (its allowed IP at the members)
HOW = ("deactivate", "link", "kill")  # how the active member stops before the other takes over
START = 30.0  # seconds for the first stream to flow
NAT_LAN = "198.19.7.0/24"  # behind_nat: the phone's home network (the phone .1, its router .2)


@dataclass
class FloatingLab:
    """The lab of the module docstring: its members, their planes, the phone and its stream."""

    lab: Lab
    members: dict[str, Node]
    planes: dict[str, GroupDataPlane]
    phone: Node
    wgq: WgQuickClient
    group_key: str = field(repr=False)  # the group's private key
    clients: dict[str, list[str]] = field(repr=False)
    stream: PacketStream | None = None
    pristine: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # before the planes
    standby: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # ensured, not active
    active: str | None = None
    dead: set[str] = field(default_factory=set)

    def call(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` inside member ``name``'s namespace."""
        return self.members[name].call(fn, *args, timeout=60.0)

    def ensure(self, name: str) -> None:
        self.call(name, self.planes[name].ensure, self.group_key, self.clients, PORT, FLOATING)

    def activate(self, name: str) -> None:
        self.call(name, self.planes[name].activate)
        self.active = name

    def deactivate(self, name: str) -> None:
        self.call(name, self.planes[name].deactivate)
        if self.active == name:
            self.active = None

    def hand_over(self, src: str, dst: str) -> None:
        """What the election's messages carry: ``dst`` learns the endpoints ``src`` sees."""
        self.call(dst, self.planes[dst].learn_endpoints, self.call(src, self.planes[src].client_endpoints))

    def stop(self, name: str, how: str) -> None:
        """Member ``name`` stops serving: ``deactivate`` (it hands over cleanly), ``link`` (its
        underlay link goes down) or ``kill`` (its wireguard-go is killed)."""
        if how == "deactivate":
            self.deactivate(name)
        elif how == "link":
            ip("link", "set", "eth0", "down", ns=self.members[name].netns)
            self.dead.add(name)
        elif how == "kill":
            ifname = self.planes[name].ifname
            pids = [p for p in self.members[name].pids() if _serves(p, ifname)]
            if not pids:
                raise LabError(f"no wireguard-go serves {ifname} in {name}")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            # gone = its TUN link gone: its leader thread turns zombie while other threads still
            # hold its files (the UAPI socket would still accept a connection for a moment)
            node = self.members[name]
            wait_until(lambda: node.run(["ip", "link", "show", "dev", ifname], timeout=10).returncode != 0,
                       5.0, f"the killed wireguard-go of {name} to be gone", interval=0.001)
            self.dead.add(name)
        else:
            raise LabError(f"unknown way to stop a member: {how!r} (one of {', '.join(HOW)})")

    def recover(self, name: str) -> None:
        """A stopped member comes back as a standby: deactivated (what its agent does on seeing
        itself standby, before its link is back), link up, interface ensured again."""
        self.deactivate(name)
        ip("link", "set", "eth0", "up", ns=self.members[name].netns)
        self.ensure(name)
        self.dead.discard(name)

    def switch(self, how: str = "deactivate", timeout: float = 30.0) -> tuple[str, str, Gap]:
        """The active member stops (``how``), the other one activates; the gap in the phone's
        stream (a silence shorter than the stream's threshold counts as the threshold). The stopped
        member is then recovered as a standby. :class:`LabTimeout` when the
        stream does not come back within ``timeout`` s."""
        was = self.active
        if was is None or self.stream is None:
            raise LabError("no member is active, or no stream")
        now = next(n for n in self.members if n != was)
        self.hand_over(was, now)
        self.stop(was, how)
        at = time.monotonic()  # nobody serves the phone now: this moment is inside the silence
        self.activate(now)
        gap = self.stream.silence_around(at, timeout)
        if was in self.dead or how == "deactivate":
            self.recover(was)
        if gap is None:
            raise LabTimeout(f"the phone's stream did not come back within {timeout:g}s of {how} on {was}"
                             f"\n{self.details()}")
        return was, now, gap

    def phone_endpoint(self) -> str:
        """The endpoint the phone's interface sends the group to now."""
        out = self.phone.run(["wg", "show", self.wgq.ifname, "endpoints"], timeout=10, check=True).stdout
        return out.split("\t")[1].strip() if "\t" in out else ""

    def footprint(self, name: str) -> dict[str, list[str]]:
        """Member ``name``'s addresses, nftables tables and routes of every table (IPv4 and IPv6,
        link-local left out: the kernel adds those on its own)."""
        node = self.members[name]
        out: dict[str, list[str]] = {}
        for fam in ("-4", "-6"):
            out[f"addr{fam}"] = sorted(line.strip() for line in node.run(
                ["ip", fam, "-o", "addr", "show"], timeout=10, check=True).stdout.splitlines()
                if "fe80:" not in line)
            out[f"route{fam}"] = sorted(r for r in node.run(
                ["ip", fam, "route", "show", "table", "all"], timeout=10, check=True).stdout.splitlines()
                if "fe80:" not in r)
        out["nft"] = sorted(node.run(["nft", "list", "tables"], timeout=10, check=True).stdout.splitlines())
        return out

    def details(self) -> str:
        text = f"===== phone: wg show\n{self.wgq.show()}"
        for name, node in self.members.items():
            text += (f"\n===== {name}: wg show\n"
                     + node.run(["wg", "show", self.planes[name].ifname], timeout=10).stdout)
            text += f"\n===== {name}: ip addr\n" + node.run(["ip", "-br", "addr"], timeout=10).stdout
        for node in self.lab.nodes.values():  # who the bridge's neighbours think has the address
            if node.name not in self.members and node.router_ip is None:
                text += (f"\n===== {node.name}: ip neigh\n"
                         + node.run(["ip", "neigh", "show", FLOATING], timeout=10).stdout)
        return text


def _serves(pid: int, ifname: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and os.path.basename(argv[0]) == b"wireguard-go" and ifname.encode() in argv[1:]


@contextlib.contextmanager
def floating_lab(*, backend: str = "auto", threshold: float = 0.03, behind_nat: bool = False,
                 ) -> Iterator[FloatingLab]:
    """The lab of the module docstring with ``a`` active and the phone's stream flowing; everything
    removed at exit (the planes closed first, so their own cleanup runs). ``threshold``: the
    shortest silence in the echoes that counts as a gap (the stream sends every 10 ms).
    ``behind_nat``: the phone sits behind a router ``r`` on the bridge that masquerades it (as a
    phone on a home or mobile network), in :data:`NAT_LAN`."""
    with Lab() as lab:
        members = {n: lab.add_node(n) for n in ("a", "b")}
        if behind_nat:
            router = lab.add_node("r")
            phone = lab.add_node_behind("c", router, NAT_LAN)
            ip("route", "add", str(lab.subnet), "via", str(phone.router_ip), ns=phone.netns)
            router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], timeout=10, check=True)
            router.run(["nft", "-f", "-"], timeout=10, check=True, input=(
                "table ip nat {\n chain postrouting {\n  type nat hook postrouting priority srcnat;\n"
                f"  ip saddr {NAT_LAN} oifname eth0 masquerade\n }}\n}}\n"))
        else:
            phone = lab.add_node("c")
        group, client = wgkeys.new_key_pair(), wgkeys.new_key_pair()
        clients = {client.public_key: [CLIENT]}
        planes = {n: GroupDataPlane(lab.ifname(f"g{i}"), backend=backend)
                  for i, n in enumerate(members, start=1)}
        for node in members.values():
            ip("addr", "add", f"{SERVICE}/32", "dev", "lo", ns=node.netns)
            UdpEcho(node, SERVICE)
        text = (f"[Interface]\nPrivateKey = {client.private_key}\nAddress = {CLIENT}\n\n"
                f"[Peer]\nPublicKey = {group.public_key}\nAllowedIPs = {SERVICE}/32\n"
                f"Endpoint = {FLOATING}:{PORT}\n")
        wgq = WgQuickClient(phone, lab.ifname("c1"), text)
        fl = FloatingLab(lab, members, planes, phone, wgq, group.private_key, clients)
        try:
            for name in members:
                fl.pristine[name] = fl.footprint(name)
                fl.ensure(name)
                fl.standby[name] = fl.footprint(name)
            fl.activate("a")
            wgq.up()
            fl.stream = PacketStream(phone, SERVICE, threshold=threshold)
            if not fl.stream.flowing(START):
                raise LabTimeout(f"the phone's stream did not flow within {START:g}s\n{fl.details()}")
            yield fl
        finally:
            if fl.stream is not None:
                fl.stream.stop()
            for name, plane in planes.items():
                with contextlib.suppress(Exception):
                    fl.call(name, plane.close)
