"""Gateways end to end: real agents (wireguard-go) in network namespaces, a phone brought up
with the real ``wg-quick`` from the file the API made, a LAN behind a gateway, and an
"internet" behind its uplink.

Lab (all underlay in 198.18.0.0/15; nothing leaves the machine)::

    bridge 198.18.0.0/24:  cp (control plane), g (gateway), a, b (hosts), p (the phone)
    lan   198.19.1.0/24:   behind g only (g is .2): a WhoAmI service at .1
    inet  198.19.2.0/24:   behind g's "uplink" only (g is .2): a WhoAmI service at .1

``g`` is a remote-access gateway with egress ``198.19.1.0/24`` and an internet gateway. The
LAN and the internet have no route beyond their own subnet: they answer only what g
masquerades. The steps build on each other on one lab, in order (run the whole module).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from skymesh.lab import wait_until
from skymesh.lab.mesh import LabAgent, diagnose, plain
from skymesh.lab.netns import Node
from skymesh.lab.services import WgQuickClient, WhoAmI, ask

from .conftest import Steps, lab_with_control_plane

pytestmark = [pytest.mark.root, pytest.mark.slow]

CONVERGE = 45.0  # seconds for a change to reach the agents (broadcast, or resync)
REPORT = 75.0  # a status report goes out when a peer's handshake appears; a heartbeat at the latest
NETWORK_V4 = "100.64.0.0/24"
LAN = "198.19.1.0/24"
INET = "198.19.2.0/24"


@dataclass
class World(Steps):
    lan: Node
    inet: Node
    phone: Node
    client: dict[str, Any] = field(default_factory=dict)
    wgq: WgQuickClient | None = None

    def details(self) -> str:
        text = diagnose(self.agents.values())
        if self.wgq is not None:
            text += f"\n===== phone: wg show\n{self.wgq.show()}"
        return text + "\n===== control plane\n" + self.cp.log_tail(20)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with lab_with_control_plane() as (lab, cp):
        net = cp.admin.create_network("gw", NETWORK_V4)
        key = cp.admin.create_enrollment_key([net["id"]], uses=10)
        agents = {n: LabAgent(lab.add_node(n)) for n in ("g", "a", "b")}
        phone = lab.add_node("p")
        lan = lab.add_node_behind("lan", agents["g"].node, LAN)
        inet = lab.add_node_behind("inet", agents["g"].node, INET)
        WhoAmI(lan, lan.ip)
        WhoAmI(inet, inet.ip)
        for agent in agents.values():
            agent.join(cp.api_url, key["token"])
            agent.start()
        w = World(lab, cp, net, agents, lan, inet, phone)
        for name, agent in agents.items():
            assert agent.host_id
            w.addresses[name] = [plain(x[k]) for x in cp.admin.host_addresses(agent.host_id)
                                 for k in ("ipv4", "ipv6")]
        yield w


def reach(w: World, src: Node, address: str, timeout: float = CONVERGE) -> None:
    wait_until(lambda: src.ping(address, wait=1), timeout, f"{src.name} to ping {address}",
               interval=0.3, details=w.details)


def silent(src: Node, address: str) -> bool:
    """Nothing answers 3 pings (a second each)."""
    return not src.ping(address, count=3, wait=1)


# --- the steps, in order -------------------------------------------------------------------------


def test_gateway_role_is_set_and_every_host_routes_through_it(world: World) -> None:
    g = world.agents["g"]
    out = world.api("PUT", f"/gateways/{g.host_id}",
                    {"remote_access": True, "egress": [LAN], "internet": True})
    assert out["remote_access"] and out["internet"] and out["egress"] == [LAN], out
    for name in ("a", "b"):
        for addr in world.addresses["g"] + world.addresses["a" if name == "b" else "b"]:
            reach(world, world.agents[name].node, addr)
    world.done.add("gateway")


def test_1_a_client_file_brought_up_with_wg_quick_reaches_every_host_and_is_reached(world: World) -> None:
    world.need("gateway")
    g = world.agents["g"]
    made = world.api("POST", "/clients", {"name": "phone", "gateway": g.host_id})
    world.client = made["client"]
    text = made["config"]
    assert "PrivateKey" in text and "PostUp" not in text, text
    world.wgq = WgQuickClient(world.phone, world.lab.ifname("c1"), text)
    world.wgq.up()
    client_addrs = [plain(world.client["ipv4"]), plain(world.client["ipv6"])]
    for name in ("g", "a", "b"):  # the phone reaches every host, through the gateway
        for addr in world.addresses[name]:
            reach(world, world.phone, addr)
    for name in ("g", "a", "b"):  # and every host reaches the phone
        for addr in client_addrs:
            reach(world, world.agents[name].node, addr)
    world.done.add("client")


def test_4_the_api_shows_the_connected_client_within_a_report(world: World) -> None:
    world.need("client")
    cid = world.client["id"]

    def connected() -> bool:
        c = world.api("GET", f"/clients/{cid}")
        return bool(c.get("connected")) and (c.get("rx_bytes") or 0) > 0 and (c.get("tx_bytes") or 0) > 0

    world.phone.ping(world.addresses["a"][0], count=3, wait=1)  # traffic now
    wait_until(connected, REPORT, "the API to show the phone connected, with bytes", interval=1.0,
               details=world.details)
    c = world.api("GET", f"/clients/{cid}")
    assert c["latest_handshake"] and c["endpoint"].startswith(world.phone.ip + ":"), c
    listed = {x["id"]: x for x in world.api("GET", "/clients")["clients"]}
    assert listed[cid]["connected"] is True, listed


def test_1b_a_disabled_client_loses_the_network_and_gets_it_back_when_enabled(world: World) -> None:
    world.need("client")
    cid, a_v4 = world.client["id"], world.addresses["a"][0]
    world.api("PATCH", f"/clients/{cid}", {"enabled": False})
    wait_until(lambda: silent(world.phone, a_v4), CONVERGE, "the disabled phone's traffic to stop",
               interval=0.5, details=world.details)
    world.api("PATCH", f"/clients/{cid}", {"enabled": True})
    reach(world, world.phone, a_v4)


def test_2_egress_every_host_reaches_the_lan_and_the_lan_sees_the_gateway(world: World) -> None:
    world.need("gateway")
    g = world.agents["g"]
    for name in ("a", "b"):
        wait_until(lambda n=name: ask(world.agents[n].node, world.lan.ip) is not None, CONVERGE,
                   f"{name} to reach the LAN service at {world.lan.ip}", interval=0.5, details=world.details)
        assert ask(world.agents[name].node, world.lan.ip) == world.lan.router_ip, g.wg_show()


def _routing(node: Node) -> dict[str, list[str]]:
    """The namespace's rules and routes of every table, both families (what full tunnel changes).

    Link-local routes (``fe80::``) are left out: the kernel adds them on its own once an
    interface's link-local address has passed duplicate address detection, at a moment of
    its choosing, and nothing of ours makes or removes them.
    """
    out = {}
    for fam in ("-4", "-6"):
        out[f"rule{fam}"] = node.run(["ip", fam, "rule", "show"], timeout=10, check=True).stdout.splitlines()
        routes = node.run(["ip", fam, "route", "show", "table", "all"], timeout=10, check=True).stdout
        out[f"route{fam}"] = sorted(r for r in routes.splitlines() if "fe80:" not in r)
    return out


def test_3_internet_gateway_full_tunnel_goes_through_it_split_tunnel_does_not(world: World) -> None:
    world.need("gateway")
    g, a, b = (world.agents[n] for n in ("g", "a", "b"))
    before = _routing(a.node)
    assert ask(a.node, world.inet.ip, timeout=1) is None  # nothing but g reaches the internet

    world.api("PATCH", f"/members/{a.host_id}", {"internet_gateway": g.host_id, "full_tunnel": True})
    world.api("PATCH", f"/members/{b.host_id}", {"internet_gateway": g.host_id, "full_tunnel": False})
    wait_until(lambda: ask(a.node, world.inet.ip) is not None, CONVERGE,
               "the full-tunnel host to reach the internet through g", interval=0.5, details=world.details)
    assert ask(a.node, world.inet.ip) == world.inet.router_ip  # masqueraded out of g's uplink
    # No loop: a still reaches its peers over the overlay, and the control plane over the underlay.
    for addr in world.addresses["b"] + world.addresses["g"]:
        reach(world, a.node, addr, timeout=10)
    status, _ = a.node.http("GET", world.cp.api_url + "/v1/health")
    assert status == 200
    # Split tunnel: b has no way to the internet, and does not send it to g.
    assert ask(b.node, world.inet.ip, timeout=1) is None
    route = b.node.run(["ip", "-4", "route", "get", world.inet.ip], timeout=10)
    assert b.interface not in route.stdout, route.stdout + route.stderr

    world.api("PATCH", f"/members/{a.host_id}", {"internet_gateway": None, "full_tunnel": False})
    wait_until(lambda: _routing(a.node) == before, CONVERGE,
               "the host's rules and routes to be exactly as before full tunnel", interval=0.5,
               details=lambda: f"before: {before}\nnow: {_routing(a.node)}\n{world.details()}")
    assert ask(a.node, world.inet.ip, timeout=1) is None


def test_1c_a_deleted_client_is_gone(world: World) -> None:
    world.need("client")
    cid, a_v4 = world.client["id"], world.addresses["a"][0]
    world.api("DELETE", f"/clients/{cid}")
    wait_until(lambda: silent(world.phone, a_v4), CONVERGE, "the deleted phone's traffic to stop",
               interval=0.5, details=world.details)
    key = world.client["public_key"]
    wait_until(lambda: key not in world.agents["g"].wg_show(), CONVERGE,
               "the gateway to drop the deleted client's peer", interval=0.5, details=world.details)
