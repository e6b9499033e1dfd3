"""Relays end to end: real agents (wireguard-go) in network namespaces, hosts that can reach only
their relay's underlay address (and the control plane's), blocked with nftables in their own
namespaces.

Lab (all underlay in 198.18.0.0/24; nothing leaves the machine)::

    cp (control plane), r (the relay), a (a plain host), t and u (behind a strict firewall)

``t`` and ``u`` each have an ``inet`` table of ours that drops every packet on their underlay
link from or to any address but r's and cp's (the agent must reach the API and the broker),
IPv6 included. ``t`` joins like any host and is relayed by r through the API (scenario 1);
``u`` joins with an enrollment key whose relay is r and must work from its first config
(scenario 2). The steps build on each other on one lab, in order (run the whole module).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from skymesh.lab import wait_until
from skymesh.lab.mesh import LabAgent, diagnose, plain
from skymesh.lab.netns import Node

from .conftest import Steps, lab_with_control_plane

pytestmark = [pytest.mark.root, pytest.mark.slow]

CONVERGE = 45.0  # seconds for a change to reach the agents (broadcast, or resync)
NETWORK_V4 = "100.64.0.0/24"
BLOCK_TABLE = "smtest_block"


@dataclass
class World(Steps):
    def details(self) -> str:
        return diagnose(self.agents.values()) + "\n===== control plane\n" + self.cp.log_tail(20)

    def learn_addresses(self, name: str) -> None:
        host_id = self.agents[name].host_id
        assert host_id
        self.addresses[name] = [plain(x[k]) for x in self.cp.admin.host_addresses(host_id)
                                for k in ("ipv4", "ipv6")]


def block_all_but(node: Node, *allowed: str) -> None:
    """On ``node``'s underlay link, drop every packet from or to an address not in ``allowed``
    (IPv6 altogether): a strict firewall, in a table of our own (the namespace goes with the lab)."""
    keep = {"set": list(allowed)}
    doc: list[dict[str, Any]] = [{"add": {"table": {"family": "inet", "name": BLOCK_TABLE}}}]
    for name, hook, way, field_ in (("in", "input", "iifname", "saddr"),
                                    ("out", "output", "oifname", "daddr")):
        doc.append({"add": {"chain": {"family": "inet", "table": BLOCK_TABLE, "name": name, "type": "filter",
                                      "hook": hook, "prio": -10, "policy": "accept"}}})
        on_link = {"match": {"op": "==", "left": {"meta": {"key": way}}, "right": "eth0"}}
        for expr in ([{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": field_}},
                                 "right": keep}}],
                     [{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}]):
            doc.append({"add": {"rule": {"family": "inet", "table": BLOCK_TABLE, "chain": name,
                                         "expr": [on_link, *expr, {"drop": None}]}}})
    node.run(["nft", "-j", "-f", "-"], input=json.dumps({"nftables": doc}), timeout=10, check=True)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with lab_with_control_plane() as (lab, cp):
        net = cp.admin.create_network("relays", NETWORK_V4)
        key = cp.admin.create_enrollment_key([net["id"]], uses=10)
        agents = {n: LabAgent(lab.add_node(n)) for n in ("r", "a", "t", "u")}
        for n in ("t", "u"):
            block_all_but(agents[n].node, agents["r"].node.ip, cp.node.ip)
        for n in ("r", "a", "t"):
            agents[n].join(cp.api_url, key["token"])
            agents[n].start()
        w = World(lab, cp, net, agents)
        for n in ("r", "a", "t"):
            w.learn_addresses(n)
        yield w


def reach(w: World, src: str, dst: str, timeout: float = CONVERGE) -> None:
    """``src`` pings both overlay addresses (IPv4, IPv6) of ``dst``, within ``timeout``."""
    node = w.agents[src].node
    for address in w.addresses[dst]:
        wait_until(lambda a=address: node.ping(a, wait=1), timeout, f"{src} to ping {dst} at {address}",
                   interval=0.3, details=w.details)


# --- the steps, in order -------------------------------------------------------------------------


def test_a_host_behind_a_strict_firewall_reaches_nobody_directly(world: World) -> None:
    """The block works: t is a member, yet no tunnel to a comes up (a control for what follows)."""
    reach(world, "a", "r")
    reach(world, "t", "r")  # its one open path
    assert not world.agents["t"].node.ping(world.addresses["a"][0], count=3, wait=1), \
        f"t reached a directly through the block\n{world.details()}"
    world.done.add("blocked")


def test_1_a_manually_relayed_host_reaches_every_host_and_is_reached_both_ways(world: World) -> None:
    world.need("blocked")
    r, t = world.agents["r"], world.agents["t"]
    out = world.api("PUT", f"/relays/{r.host_id}", {"relayed": [t.host_id]})
    assert [m["host_id"] for m in out["relayed"]] == [t.host_id], out
    for src, dst in (("t", "a"), ("a", "t"), ("t", "r"), ("r", "t")):
        reach(world, src, dst)
    # what the agents show (their status reads the state they save a moment after a change)
    wait_until(lambda: t.peer_ids() == {r.host_id}, CONVERGE, "t to show its relay as its one peer",
               interval=0.3, details=world.details)
    wait_until(lambda: [x["id"] for x in r.status()["networks"][0]["relays"]] == [t.host_id], CONVERGE,
               "r to show that it relays t", interval=0.3, details=world.details)
    assert t.host_id not in world.agents["a"].peer_ids()
    world.done.add("relay")


def test_2_a_host_joined_with_a_relay_key_works_from_its_first_config(world: World) -> None:
    world.need("relay")
    r, u = world.agents["r"], world.agents["u"]
    key = world.cp.admin.create_enrollment_key([world.network["id"]], uses=1, relay=r.host_id)
    assert key["relay"] == r.host_id
    u.join(world.cp.api_url, key["token"])
    first = u.status()  # the config join fetched, before the agent ever ran
    assert u.peer_ids(first) == {r.host_id}, f"its first config has its relay as its one peer: {first}"
    u.start()
    world.learn_addresses("u")
    for src, dst in (("u", "a"), ("a", "u"), ("u", "r"), ("r", "u"), ("u", "t"), ("t", "u")):
        reach(world, src, dst)
