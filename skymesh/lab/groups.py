"""A gateway group with real agents: three members share a floating address, a phone streams
through it to the mesh and to a LAN, the active member dies (issue 11, end to end).

The scenario that ``tests/e2e/test_group_failover.py`` and ``bench/floating_failover.py`` share::

    bridge 198.18.0.0/24:  cp (control plane), m1, m2, m3 (members), h (a mesh host), p (the phone);
                           the floating address 198.18.0.200:51900 on whichever member is active
    lan    198.19.8.0/24:  behind every member (m1 is .2, m2 .3, m3 .4): a UDP echo at .1

Every member is a remote-access gateway with the LAN as egress (the same on every member) and a
member of one group, in priority order m1, m2, m3; the agents make the group's key and elect the
active member themselves. The phone's wg-quick file is the one ``POST …/clients`` answered for a
client of the group (its hash is kept: it is never touched); the phone brings it up with the real
``wg-quick up`` and sends a datagram every 10 ms to an echo on ``h``'s overlay address and to one
on the LAN (:class:`~skymesh.lab.services.PacketStream`).

A *kill* is the active member's machine dying: its links go down, then its agent and every
wireguard-go it ran are killed (SIGKILL), so nothing of it answers and nothing cleans up; the
*gap* is the silence in each stream around it, until another member took over and the phone's
traffic flows through it (the phone untouched). :meth:`GroupLab.revive` is the machine booting:
the agent starts with the links still down (it removes what its crashed run left, the floating
address first), then the links come up.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client import ApiError
from .control_plane import ControlPlane
from .errors import LabError, LabTimeout
from .floating import FLOATING, PORT
from .iproute import ip
from .mesh import LabAgent, diagnose, plain
from .netns import Lab, Node
from .services import Gap, PacketStream, UdpEcho, WgQuickClient
from .wait import wait_until

__all__ = ["GroupLab", "group_lab", "LAN", "STREAMS", "FLOATING", "PORT"]

LAN = "198.19.8.0/24"
NETWORK_V4 = "100.64.0.0/24"
STREAMS = ("mesh", "lan")  # the phone's streams: to h's overlay address, to the LAN behind the members
KEY = 90.0  # seconds for the members to make the group's key once the group exists
CONVERGE = 90.0  # seconds for the phone's first streams to flow (agents converge, the election runs)
CLEAN = 30.0  # seconds for a rebooted member's agent to remove the floating address its crashed run left


@dataclass
class GroupLab:
    """The lab of the module docstring, converged and streaming."""

    lab: Lab
    cp: ControlPlane
    network: dict[str, Any]
    group: dict[str, Any]
    members: dict[str, LabAgent]  # m1, m2, m3 in priority order
    host: LabAgent
    lan: Node
    phone: Node
    wgq: WgQuickClient
    config_sha256: str
    streams: dict[str, PacketStream] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)

    # --- what is seen ----------------------------------------------------------------
    def details(self) -> str:
        text = diagnose([*self.members.values(), self.host], log_lines=30)
        for name, agent in self.members.items():
            text += f"\n===== {name}: ip -br addr\n" + _out(agent.node, "ip", "-br", "addr")
            text += f"\n===== {name}: wg show all\n" + agent.node.run(
                agent.on_machine(["wg", "show", "all"]), timeout=10).stdout
        text += f"\n===== phone: wg show\n{self.wgq.show()}"
        text += "\n===== phone: ip neigh\n" + _out(self.phone, "ip", "neigh", "show", FLOATING)
        return text + ("\n===== control plane\n" + self.cp.log_tail(20) if self.cp.running else "")

    def holds(self, name: str) -> bool:
        """Whether member ``name``'s uplink carries the floating address (a dead one's link is down)."""
        return f" {FLOATING}/" in _out(self.members[name].node, "ip", "-4", "-o", "addr", "show", "eth0")

    def holders(self) -> list[str]:
        """The live members whose uplink carries the floating address now."""
        return [name for name in self.members if name not in self.dead and self.holds(name)]

    def active(self) -> str | None:
        """The one member holding the floating address (None: none, or more than one)."""
        found = self.holders()
        return found[0] if len(found) == 1 else None

    def name_of(self, host_id: str | None) -> str | None:
        return next((n for n, a in self.members.items() if a.host_id == host_id), None)

    def recorded(self) -> str | None:
        """The member the control plane records as active (it must be running)."""
        return self.name_of(self.cp.admin.get_group(self.network["id"], self.group["id"]).get("active"))

    def config_intact(self) -> bool:
        """Whether the phone's wg-quick file is byte for byte the one the API answered."""
        return hashlib.sha256(Path(self.wgq.path).read_bytes()).hexdigest() == self.config_sha256

    def phone_endpoint(self) -> str:
        """The endpoint the phone's interface sends the group to now."""
        out = self.phone.run(["wg", "show", self.wgq.ifname, "endpoints"], timeout=10, check=True).stdout
        return out.split("\t")[1].strip() if "\t" in out else ""

    def probe(self, name: str) -> str | None:
        """What ``h``'s probes say of member ``name`` now: up, down, unknown (None: not probed)."""
        host_id = self.members[name].host_id
        return next((p.get("probe") for n in self.host.status().get("networks", []) for p in n["peers"]
                     if p["host_id"] == host_id), None)

    # --- what is done ----------------------------------------------------------------
    def _links(self, name: str, state: str) -> None:
        node = self.members[name].node
        for line in _out(node, "ip", "-o", "link", "show", "type", "veth").splitlines():
            ip("link", "set", line.split(":")[1].strip().split("@")[0], state, ns=node.netns)

    def _tuns(self, name: str) -> int:
        return len(_out(self.members[name].node, "ip", "-o", "link", "show", "type", "tun").splitlines())

    def kill(self, name: str) -> float:
        """Member ``name``'s machine dies: its links down, then its agent and every wireguard-go in
        it killed; returns when its links went down (time.monotonic()), once its processes are gone."""
        agent = self.members[name]
        self._links(name, "down")
        at = time.monotonic()
        self.dead.add(name)
        for pid in agent.node.pids():  # the agent, its wireguard-go and anything else of this machine
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if agent.proc is not None:
            agent.proc.wait(10)
        # a killed wireguard-go is gone when its TUN link is (its sockets outlive its leader thread)
        wait_until(lambda: not agent.node.pids() and self._tuns(name) == 0, 10.0,
                   f"{name}'s processes and TUN links to be gone", interval=0.05)
        return at

    def revive(self, name: str, timeout: float = 60.0) -> None:
        """Member ``name``'s machine boots: its agent starts with the links still down and removes
        the floating address its crashed run left (bounded), then the links come up, and this waits
        until ``h``'s probes see it up and it has its group interface again (as a standby)."""
        agent = self.members[name]
        agent.start()
        wait_until(lambda: not self.holds(name), CLEAN,
                   f"{name}'s agent to remove the floating address its crashed run left",
                   interval=0.1, details=self.details)
        self._links(name, "up")
        self.dead.discard(name)
        wait_until(lambda: self.probe(name) == "up" and self._tuns(name) >= 2, timeout,
                   f"{name} back: h's probes see it up, and it has its mesh and group interfaces",
                   interval=0.2, details=self.details)

    def failover(self, timeout: float = 30.0) -> tuple[str, str | None, dict[str, Gap]]:
        """Kill the active member and measure each stream's gap; returns (killed, now active, gaps).
        :class:`LabTimeout` when a stream does not come back within ``timeout`` s of the kill."""
        was = wait_until(self.active, 30.0, "one member to hold the floating address", details=self.details)
        assert was is not None  # wait_until returns a truthy value
        at = self.kill(was)
        gaps: dict[str, Gap] = {}
        for what, stream in self.streams.items():
            gap = stream.gap_after(at, max(0.1, at + timeout - time.monotonic()))
            if gap is None:
                raise LabTimeout(f"the phone's stream to the {what} did not come back within {timeout:g}s of "
                                 f"killing {was}\n{self.details()}")
            gaps[what] = gap
        return was, self.active(), gaps


def _out(node: Node, *argv: str) -> str:
    """The output of a short command in ``node`` (bounded; :class:`LabError` if it fails)."""
    return node.run(argv, timeout=10, check=True).stdout


def _created_client(cp: ControlPlane, network_id: str, group_id: str, details: Any) -> dict[str, Any]:
    """``POST …/clients`` for the group once its members made its key (409 group_key_missing before)."""
    def attempt() -> dict[str, Any]:
        try:
            return cp.admin.create_client(network_id, {"name": "phone", "gateway": group_id})
        except ApiError as e:
            if e.code == "group_key_missing":
                return {}
            raise
    return wait_until(attempt, KEY, f"the members to make group {group_id}'s key (a client file needs it)",
                      interval=0.5, details=details)


@contextlib.contextmanager
def group_lab(members: int = 3, *, streams: tuple[str, ...] = STREAMS,
              probe_interval: float | None = None) -> Iterator[GroupLab]:
    """The lab of the module docstring with ``members`` members (2 to 4), the phone's ``streams``
    (of :data:`STREAMS`) flowing; everything removed at exit. ``probe_interval``: the agents'
    ``--probe-interval``."""
    if not 2 <= members <= 4:
        raise LabError("a gateway group has 2 to 4 members")
    if not streams or set(streams) - set(STREAMS):
        raise LabError(f"streams: some of {', '.join(STREAMS)}")
    with Lab() as lab:
        cp = ControlPlane(lab.add_node("cp"))
        cp.start()
        net = cp.admin.create_network("groups", NETWORK_V4)
        key = cp.admin.create_enrollment_key([net["id"]], uses=members + 1)
        extra = () if probe_interval is None else ("--probe-interval", f"{probe_interval:g}")
        # each member has a /run/wireguard of its own: the group interface has one name on all of them
        ms = {f"m{i}": LabAgent(lab.add_node(f"m{i}"), run_args=extra, own_run_dir=True)
              for i in range(1, members + 1)}
        host = LabAgent(lab.add_node("h"), run_args=extra)
        phone = lab.add_node("p")
        lan = lab.add_node_behind("lan", [m.node for m in ms.values()], LAN)
        UdpEcho(lan, lan.ip)
        for agent in (*ms.values(), host):
            agent.join(cp.api_url, key["token"])
            agent.start()
        for m in ms.values():
            assert m.host_id
            cp.admin.put_gateway(net["id"], m.host_id, {"remote_access": True, "egress": [LAN]})
        group = cp.admin.create_group(net["id"], {"name": "phones",
                                                  "members": [m.host_id for m in ms.values()],
                                                  "floating_endpoint": f"{FLOATING}:{PORT}"})

        def early_details() -> str:
            return diagnose([*ms.values(), host], log_lines=30) + "\n===== control plane\n" + cp.log_tail(20)

        made = _created_client(cp, net["id"], group["id"], early_details)
        text = made["config"]
        wgq = WgQuickClient(phone, lab.ifname("c1"), text)
        sha = hashlib.sha256(Path(wgq.path).read_bytes()).hexdigest()
        assert host.host_id
        h_addr = plain(cp.admin.host_addresses(host.host_id)[0]["ipv4"])
        gl = GroupLab(lab, cp, net, group, ms, host, lan, phone, wgq, sha)
        try:
            wait_until(lambda: h_addr in _out(host.node, "ip", "-4", "-o", "addr", "show", host.interface),
                       CONVERGE, f"h's overlay address {h_addr} on its interface", interval=0.2,
                       details=early_details)
            UdpEcho(host.node, h_addr)
            wgq.up()
            targets = {"mesh": h_addr, "lan": lan.ip}
            gl.streams = {what: PacketStream(phone, targets[what]) for what in streams}
            deadline = time.monotonic() + CONVERGE
            for what, stream in gl.streams.items():
                if not stream.flowing(max(0.0, deadline - time.monotonic())):
                    raise LabTimeout(f"the phone's stream to the {what} did not flow within {CONVERGE:g}s\n"
                                     f"{gl.details()}")
            yield gl
        finally:
            for stream in gl.streams.values():
                stream.stop()
