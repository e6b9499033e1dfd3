"""Automatic relays in a lab: a host joins with its direct paths to two peers blocked, reaches them
through an auto-relay gateway, and goes direct again when the block is lifted.

The scenario of issue 10 (e2e scenario 3) that ``tests/e2e/test_autorelay.py`` and
``bench/autorelay.py`` share::

    bridge 198.18.0.0/24:  cp (control plane), g1, g2 (gateways, auto-relays), g3 (a gateway
                           with auto_relay off), a, b (plain hosts), h1, h2, … (hosts that join)

A joining host's underlay link has a ``netdev`` table of ours that drops every packet from or to
``a``'s and ``b``'s underlay addresses (WireGuard and the underlay echo alike); everything else
(the control plane, the gateways) it reaches. The host pings ``a`` and ``b`` from the moment it
joins; *reach* is the time from the join until both answer (through the relay the control plane
chose on its report). *Direct again* is the time from lifting the block until ``a``'s and
``b``'s entries are back on its device with a handshake, and both answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .control_plane import ControlPlane
from .errors import LabError
from .mesh import LabAgent, diagnose, plain
from .netns import Lab, Node
from .wait import wait_until

__all__ = ["AutoRelayLab", "autorelay_lab", "BLOCK_TABLE", "PEERS", "RELAYS"]

NETWORK_V4 = "100.64.0.0/24"
CONVERGE = 60.0  # seconds for the lab's first configuration to reach every agent
BLOCK_TABLE = "smtest_autorelay"
RELAYS = ("g1", "g2")  # the auto-relay gateways
PEERS = ("a", "b")  # the peers a joining host cannot reach directly


def block(node: Node, *addresses: str) -> None:
    """On ``node``'s underlay link, drop every packet from or to these underlay addresses, in a
    table of our own (the namespace goes with the lab; :func:`unblock` lifts it).

    At the link (netdev ingress and egress), not in the IP stack's input and output hooks: a drop
    there fails the sender's ``sendmsg`` (EPERM), so WireGuard would count nothing sent, where a
    path blocked on the way (a remote firewall, a NAT) lets the host send and hears nothing."""
    listed = ", ".join(addresses)
    rules = "".join([
        f"table netdev {BLOCK_TABLE} {{\n",
        *(f'  chain {hook} {{ type filter hook {hook} device "eth0" priority -10; policy accept; '
          f"ip {field_} {{ {listed} }} drop; }}\n"
          for hook, field_ in (("ingress", "saddr"), ("egress", "daddr"))),
        "}\n"])
    node.run(["nft", "-f", "-"], input=rules, timeout=10, check=True)


def unblock(node: Node) -> None:
    node.run(["nft", "delete", "table", "netdev", BLOCK_TABLE], timeout=10, check=True)


@dataclass
class Joined:
    """One host that joined blocked: when (monotonic), and when each peer first answered it."""

    agent: LabAgent
    joined_at: float
    answered_at: dict[str, float]

    @property
    def reach(self) -> float:
        """Seconds from the join until every blocked peer answered."""
        return max(self.answered_at.values()) - self.joined_at


@dataclass
class AutoRelayLab:
    lab: Lab
    cp: ControlPlane
    network: dict[str, Any]
    key: dict[str, Any]
    agents: dict[str, LabAgent]  # g1, g2, g3, a, b, and the hosts that joined
    addresses: dict[str, list[str]]  # name → overlay addresses (IPv4, IPv6)
    done: set[str] = field(default_factory=set)  # the steps of a test module that passed

    def details(self) -> str:
        text = diagnose(self.agents.values(), log_lines=30)
        return text + "\n===== control plane\n" + self.cp.log_tail(30)

    def learn_addresses(self, name: str) -> None:
        host_id = self.agents[name].host_id
        assert host_id
        self.addresses[name] = [plain(x[k]) for x in self.cp.admin.host_addresses(host_id)
                                for k in ("ipv4", "ipv6")]

    def name_of(self, host_id: str) -> str:
        return next((n for n, a in self.agents.items() if a.host_id == host_id), host_id)

    def join_blocked(self, name: str, timeout: float) -> Joined:
        """A new host ``name`` blocked from ``a`` and ``b`` joins, starts, and pings both of them
        (IPv4 overlay) from the join on; returns when both answered. :class:`LabError` when one
        did not within ``timeout`` s of the join."""
        h = LabAgent(self.lab.add_node(name))
        self.agents[name] = h
        block(h.node, *(self.agents[p].node.ip for p in PEERS))
        answered: dict[str, float] = {}
        stop = threading.Event()

        def ping(peer: str) -> None:
            address = self.addresses[peer][0]
            while not stop.is_set():
                if h.node.ping(address, wait=0.5):
                    answered[peer] = time.monotonic()
                    return
                stop.wait(0.05)

        joined_at = time.monotonic()
        threads = [threading.Thread(target=ping, args=(p,), daemon=True) for p in PEERS]
        for t in threads:
            t.start()
        try:
            h.join(self.cp.api_url, self.key["token"])
            h.start()
            self.learn_addresses(name)
            wait_until(lambda: len(answered) == len(PEERS), timeout - (time.monotonic() - joined_at),
                       f"{name} to reach {', '.join(PEERS)} through a relay", interval=0.05,
                       details=self.details)
        finally:
            stop.set()
            for t in threads:
                t.join(5.0)
        return Joined(h, joined_at, answered)

    def pairs(self, name: str) -> dict[str, str]:
        """What host ``name``'s status shows of its relayed pairs: peer name → via name."""
        st = self.agents[name].status()
        return {self.name_of(p["id"]): self.name_of(p["via"])
                for n in st.get("networks", []) for p in n.get("relayed_pairs", [])}

    def shown_pairs(self, name: str, timeout: float = 10.0) -> dict[str, str]:
        """:meth:`pairs` once host ``name``'s status shows a pair with each of ``a`` and ``b`` (its
        status reads the state the agent saves a second after a change); :class:`LabError` (a
        timeout) when not within ``timeout`` s."""
        def shown() -> dict[str, str] | None:
            found = self.pairs(name)
            return found if set(found) == set(PEERS) else None

        out = wait_until(shown, timeout, f"{name}'s status to show its relayed pairs", interval=0.3,
                         details=self.details)
        assert out is not None  # wait_until returns a truthy value
        return out

    def direct_peers(self, name: str) -> set[str]:
        """The peers on host ``name``'s device it shook hands with (their own entries: direct)."""
        st = self.agents[name].status()
        return {self.name_of(p["host_id"]) for n in st.get("networks", []) for p in n.get("peers", [])
                if p.get("latest_handshake")}

    def direct_again(self, name: str, timeout: float) -> float:
        """Lift ``name``'s block; seconds until ``a`` and ``b`` are direct peers on its device again
        and answer it. :class:`LabError` (a timeout) when not within ``timeout`` s."""
        h = self.agents[name]
        unblock(h.node)
        lifted = time.monotonic()
        # handshakes need traffic: ping while waiting (through the relay, then directly)
        wait_until(lambda: set(PEERS) <= self.direct_peers(name) and not self.pairs(name)
                   and all(h.node.ping(self.addresses[p][0], wait=0.5) for p in PEERS),
                   timeout, f"{name}'s pairs with {', '.join(PEERS)} to go direct again", interval=0.2,
                   details=self.details)
        return time.monotonic() - lifted


@contextmanager
def autorelay_lab() -> Iterator[AutoRelayLab]:
    """The lab of the module docstring, converged (every plain host reaches every other one);
    everything removed at exit."""
    with Lab() as lab:
        cp = ControlPlane(lab.add_node("cp"))
        cp.start()
        net = cp.admin.create_network("autorelay", NETWORK_V4)
        key = cp.admin.create_enrollment_key([net["id"]], uses=50)
        agents = {n: LabAgent(lab.add_node(n)) for n in ("g1", "g2", "g3", *PEERS)}
        for agent in agents.values():
            agent.join(cp.api_url, key["token"])
            agent.start()
        for name, agent in agents.items():
            if name.startswith("g"):
                assert agent.host_id
                cp.admin.put_gateway(net["id"], agent.host_id,  # a gateway must serve something
                                     {"remote_access": True, "auto_relay": name in RELAYS})
        w = AutoRelayLab(lab, cp, net, key, agents, {})
        for name in agents:
            w.learn_addresses(name)
        for src in agents:
            for dst in agents:
                if src != dst:
                    node, address = agents[src].node, w.addresses[dst][0]
                    wait_until(lambda n=node, a=address: n.ping(a, wait=1), CONVERGE,  # type: ignore[misc]
                               f"{src} to reach {dst}", interval=0.3, details=w.details)
        if any(not a.running for a in agents.values()):
            raise LabError(f"an agent stopped while the lab converged\n{w.details()}")
        yield w
