"""HA gateways in a lab: several gateways serve one LAN, a host streams to it, a gateway dies.

The scenario of issue 10 that ``tests/e2e/test_ha.py`` and ``bench/failover.py`` share::

    bridge 198.18.0.0/24:  cp (control plane), g1 … gN (gateways), h (the host)
    lan    198.19.5.0/24:  behind every gateway (g1 is .2, g2 .3, …): a UDP echo at .1

Every gateway has ``198.19.5.0/24`` as egress; ``h`` sends a datagram every 10 ms to the echo
through whichever gateway its plan makes active (:class:`~skymesh.lab.services.PacketStream`).
A *kill* takes the active gateway's underlay link down (its tunnels die, as when a machine
dies; its process and state stay, so :meth:`HaLab.revive` brings it back); the *gap* is the
silence in the echoes around it: how long ``h`` had no path to the LAN.

With ``internet=True`` the gateways are internet gateways instead, ``h`` uses any of them
(``internet_gateway: auto``) with a full tunnel, and the echo is "on the internet" at
``198.19.6.1`` (:data:`INTERNET`: behind every gateway, in no egress range): ``h`` reaches it
through the default routes its plan gives the active internet gateway, which masquerades.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .control_plane import ControlPlane
from .errors import LabError, LabTimeout
from .iproute import ip
from .mesh import LabAgent, diagnose
from .netns import Lab, Node
from .services import Gap, PacketStream, UdpEcho
from .wait import wait_until

__all__ = ["HaLab", "LAN", "INTERNET", "ha_lab"]

LAN = "198.19.5.0/24"
INTERNET = "198.19.6.0/24"  # "the internet" of an internet-gateway lab: routed to nobody but the gateways
NETWORK_V4 = "100.64.0.0/24"
CONVERGE = 60.0  # seconds for the lab's first configuration to reach every agent


@dataclass
class HaLab:
    lab: Lab
    cp: ControlPlane
    network: dict[str, Any]
    gateways: dict[str, LabAgent]
    host: LabAgent
    lan: Node
    stream: PacketStream
    keys: dict[str, str] = field(default_factory=dict)  # gateway name → its WireGuard public key
    dead: set[str] = field(default_factory=set)
    carried: str = LAN  # the allowed IP that says which gateway is active (internet: 0.0.0.0/0)

    def details(self) -> str:
        text = diagnose([self.host, *self.gateways.values()], log_lines=30)
        return text + ("\n===== control plane\n" + self.cp.log_tail(20) if self.cp.running else "")

    def carriers(self) -> list[str]:
        """The gateways ``h``'s device sends the LAN (or the internet) to now (``wg show … allowed-ips``)."""
        res = self.host.node.run(["wg", "show", self.host.interface, "allowed-ips"], timeout=10)
        out: list[str] = []
        for line in res.stdout.splitlines():
            key, _, prefixes = line.partition("\t")
            if self.carried in prefixes.split():
                out.extend(n for n, k in self.keys.items() if k == key)
        return out

    def active(self) -> str | None:
        """The gateway ``h``'s device sends the LAN (or the internet) to now."""
        found = self.carriers()
        return found[0] if found else None

    def kill(self, name: str) -> float:
        """Take gateway ``name``'s underlay link down; returns when (time.monotonic())."""
        ip("link", "set", "eth0", "down", ns=self.gateways[name].node.netns)
        self.dead.add(name)
        return time.monotonic()

    def revive(self, name: str) -> None:
        ip("link", "set", "eth0", "up", ns=self.gateways[name].node.netns)
        self.dead.discard(name)

    def probe(self, name: str) -> str | None:
        """What ``h``'s probes say of gateway ``name`` now (``skymesh-agent status``): up, down,
        unknown; None when it does not probe it."""
        host_id = self.gateways[name].host_id
        return next((p.get("probe") for n in self.host.status().get("networks", []) for p in n["peers"]
                     if p["host_id"] == host_id), None)

    def until_live(self, name: str, timeout: float = 30.0) -> None:
        """Wait until ``h``'s probes see gateway ``name`` up again."""
        wait_until(lambda: self.probe(name) == "up", timeout, f"h's probes to see gateway {name} up again",
                   interval=0.2, details=self.details)

    def failover(self, timeout: float = 30.0) -> tuple[str, str | None, Gap]:
        """Kill the active gateway and measure the gap; returns (killed, now active, gap).
        :class:`LabTimeout` when the stream does not come back within ``timeout`` s."""
        was = wait_until(self.active, 10.0, "h to have an active gateway for the LAN", details=self.details)
        assert was is not None  # wait_until returns a truthy value
        at = self.kill(was)
        gap = self.stream.gap_after(at, timeout)
        if gap is None:
            raise LabTimeout(f"the stream to the LAN did not come back within {timeout:g}s of killing "
                             f"{was}\n{self.details()}")
        return was, self.active(), gap


@contextmanager
def ha_lab(gateways: int = 3, *, probe_interval: float | None = None,
           probe_slow_interval: float | None = None, internet: bool = False) -> Iterator[HaLab]:
    """The lab of the module docstring (``internet``: with internet gateways), converged and
    streaming; everything removed at exit. ``probe_interval``/``probe_slow_interval``: the agents'
    ``--probe-interval`` (the gateways a host routes through) and ``--probe-slow-interval`` (the
    others); None: their defaults."""
    if not 2 <= gateways <= 6:
        raise LabError("an HA lab has 2 to 6 gateways")
    with Lab() as lab:
        cp = ControlPlane(lab.add_node("cp"))
        cp.start()
        net = cp.admin.create_network("ha", NETWORK_V4)
        key = cp.admin.create_enrollment_key([net["id"]], uses=gateways + 1)
        extra = (*(() if probe_interval is None else ("--probe-interval", f"{probe_interval:g}")),
                 *(() if probe_slow_interval is None
                   else ("--probe-slow-interval", f"{probe_slow_interval:g}")))
        gws = {f"g{i}": LabAgent(lab.add_node(f"g{i}"), run_args=extra) for i in range(1, gateways + 1)}
        host = LabAgent(lab.add_node("h"), run_args=extra)
        lan = lab.add_node_behind("inet" if internet else "lan", [g.node for g in gws.values()],
                                  INTERNET if internet else LAN)
        UdpEcho(lan, lan.ip)
        for agent in (*gws.values(), host):
            agent.join(cp.api_url, key["token"])
            agent.start()
        keys = {}
        for name, g in gws.items():
            assert g.host_id
            cp.admin.put_gateway(net["id"], g.host_id, {"internet": True} if internet else {"egress": [LAN]})
            keys[name] = cp.admin.get_host(g.host_id)["wg_public_key"]
        if internet:
            assert host.host_id
            cp.admin.update_member(net["id"], host.host_id, {"internet_gateway": "auto", "full_tunnel": True})
        stream = PacketStream(host.node, lan.ip)
        ha = HaLab(lab, cp, net, gws, host, lan, stream, keys, carried="0.0.0.0/0" if internet else LAN)
        try:
            if not stream.flowing(CONVERGE):
                raise LabTimeout(f"h's stream to the LAN did not flow within {CONVERGE:g}s\n{ha.details()}")
            yield ha
        finally:
            stream.stop()
