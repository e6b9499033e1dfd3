"""Full tunnel and gateway forwarding with real wireguard-go, rtnetlink and nftables, in a lab.

Two hosts, ``h`` and ``g``, on the lab bridge (198.18.0.0/24) with wireguard-go devices
(overlay 100.64.9.0/24 and fd00:9::/64). Behind ``g`` a third namespace, ``lan``, on a
link of its own (198.19.1.0/24): reachable from ``g`` only, and with no route back to the
overlay, so it answers overlay hosts only through ``g``'s masquerade. ``g`` also holds an
"internet" address (198.19.0.1, fdff::1) on its loopback, which ``h`` has no route to.

Lab rules: underlay 198.18.0.0/15 only (198.19.x is the lab's "outside", inside lab
namespaces), overlay 100.64.0.0/10 and fd00::/8, no route out of the lab, everything
removed at the end also on failure (the lab deletes its namespaces, links and sockets),
and every wait bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from agent import cli, keys
from agent.api import ApiClient
from agent.fulltunnel import FullTunnel, table_for
from agent.gateway import Forwarding, table_name
from agent.netconf import NetConf
from agent.runner import Agent
from agent.state import AgentState, StateDir
from agent.wg.uapi import UapiBackend
from chalicelib.domain import protocol
from chalicelib.domain.device import PeerConfig
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.domain.models import Gateway, Member, MemberRole, Network
from skymesh.lab.iproute import ip
from skymesh.lab.netns import Lab, Node
from skymesh.lab.wait import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("wireguard-go") is None or shutil.which("nft") is None
    or not os.path.exists("/dev/net/tun"), reason="needs root, wireguard-go, nft and /dev/net/tun")]

WAIT = 15.0
PORT = 51820
TABLE = table_for(PORT)
INTERNET4, INTERNET6 = "198.19.0.1", "fdff::1"
LAN_NET, LAN_GW, LAN_HOST = "198.19.1.0/24", "198.19.1.1", "198.19.1.2"
OVERLAY = ("100.64.9.0/24", "fd00:9::/64")
CONTROL_PLANE, CONTROL_PLANE6 = "198.19.8.8", "fdff:8::8"  # addresses only, nothing answers there


@dataclass
class Host:
    node: Node
    wg: UapiBackend
    private_key: str
    overlay4: str
    overlay6: str

    @property
    def ifname(self) -> str:
        return self.wg.ifname

    @property
    def public_key(self) -> str:
        return keys.wireguard_public_key(self.private_key)


def source_seen(server: Node, addr: str, client: Node) -> str:
    """The source address ``server`` sees on a TCP connection from ``client`` to ``addr`` (bounded)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    listener = server.call(lambda: socket.socket(family, socket.SOCK_STREAM))
    with listener:
        listener.settimeout(WAIT)
        listener.bind((addr, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with client.call(socket.create_connection, (addr, port), WAIT):
            conn, peer = listener.accept()
            conn.close()
    return str(peer[0])


def dump(node: Node) -> str:
    """Every rule and route of the namespace, as `ip` prints them, once no IPv6 address is still
    tentative (the kernel adds its local route only when duplicate address detection is done)."""
    wait_until(lambda: "tentative" not in ip("-6", "addr", ns=node.netns).stdout, WAIT,
               f"IPv6 addresses of {node.name} to settle")
    out = []
    for args in (("-4", "rule"), ("-6", "rule"), ("-4", "route", "show", "table", "all"),
                 ("-6", "route", "show", "table", "all")):
        out.append(ip(*args, ns=node.netns).stdout)
    return "\n".join(out)


def ours(node: Node, family: str) -> list[str]:
    """The rules we made (proto static), as `ip` prints them."""
    return [line.split(":", 1)[1].strip() for line in ip(family, "rule", ns=node.netns).stdout.splitlines()
            if "proto static" in line]


@pytest.fixture
def lab() -> Iterator[tuple[Lab, Host, Host, Node]]:
    with Lab() as lab:
        hosts = []
        for i, name in ((1, "h"), (2, "g")):
            node = lab.add_node(name)
            priv = keys.new_wireguard_key()
            wg = UapiBackend(node.wg_ifname(), netns=node.netns)
            wg.ensure_device(priv, PORT)
            hosts.append(Host(node, wg, priv, f"100.64.9.{i}", f"fd00:9::{i}"))
        h, g = hosts
        NetConf(h.ifname, netns=h.node.netns).apply((f"{h.overlay4}/24", f"{h.overlay6}/64"), (LAN_NET,),
                                                    1420)
        NetConf(g.ifname, netns=g.node.netns).apply((f"{g.overlay4}/24", f"{g.overlay6}/64"), (), 1420)
        to_g = (f"{g.overlay4}/32", f"{g.overlay6}/128", LAN_NET, "0.0.0.0/0", "::/0")  # g: h's internet
        h.wg.apply_peers([PeerConfig(g.public_key, f"{g.node.ip}:{PORT}", to_g)], [])
        to_h = (f"{h.overlay4}/32", f"{h.overlay6}/128")
        g.wg.apply_peers([PeerConfig(h.public_key, f"{h.node.ip}:{PORT}", to_h)], [])
        # g's "internet" addresses, and a LAN behind it that knows no way to the overlay
        ip("addr", "add", f"{INTERNET4}/32", "dev", "lo", ns=g.node.netns)
        ip("addr", "add", f"{INTERNET6}/128", "dev", "lo", ns=g.node.netns)
        lan = lab.add_node("lan")
        ip("link", "add", lab.ifname("e1"), "type", "veth", "peer", "name", "lan0", "netns", lan.netns,
           ns=g.node.netns)
        ip("addr", "add", f"{LAN_GW}/24", "dev", lab.ifname("e1"), ns=g.node.netns)
        ip("link", "set", lab.ifname("e1"), "up", ns=g.node.netns)
        ip("addr", "add", f"{LAN_HOST}/24", "dev", "lan0", ns=lan.netns)
        ip("link", "set", "lan0", "up", ns=lan.netns)
        wait_until(lambda: h.node.ping(g.overlay4), WAIT, "the tunnel between h and g")
        yield lab, h, g, lan


def test_full_tunnel_routes_everything_through_the_tunnel_the_way_wg_quick_does_and_undoes_exactly_that(lab):
    _, h, g, _ = lab
    # Someone else's rules: one of another program, and one just like wg-quick's (no proto)
    ip("rule", "add", "fwmark", "0x99", "lookup", "100", "priority", "1000", ns=h.node.netns)
    ip("-6", "rule", "add", "table", "main", "suppress_prefixlength", "0", ns=h.node.netns)
    # …and one even made the way we make ours (proto static), for another table: still not ours
    ip("rule", "add", "table", "main", "suppress_prefixlength", "0", "protocol", "static", "priority", "500",
       ns=h.node.netns)
    ip("rule", "add", "not", "fwmark", "7", "table", "7", "protocol", "static", "priority", "501",
       ns=h.node.netns)
    ip("route", "add", "198.19.7.0/24", "dev", "eth0", "table", "100", ns=h.node.netns)
    # main's default route, as on a host with an uplink: here a veth whose other end is in h
    # itself (which does not forward), so nothing sent there leaves h (lab rules)
    ip("link", "add", "nowhere0", "type", "veth", "peer", "name", "nowhere1", ns=h.node.netns)
    for link in ("nowhere0", "nowhere1"):  # no link-local addresses appearing while we compare
        ip("link", "set", link, "addrgenmode", "none", "up", ns=h.node.netns)
    h.node.run(["sysctl", "-w", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"], check=True)
    ip("route", "add", "default", "dev", "nowhere0", ns=h.node.netns)
    ip("-6", "route", "add", "default", "dev", "nowhere0", ns=h.node.netns)
    before = dump(h.node)
    assert not h.node.ping(INTERNET4)  # no route there

    h.wg.set_fwmark(TABLE)
    ft = FullTunnel(h.ifname, TABLE, netns=h.node.netns)
    ft.apply(True, bypass=(CONTROL_PLANE, CONTROL_PLANE6))

    assert h.wg.fwmark() == TABLE
    foreign = ["from all lookup main suppress_prefixlength 0 proto static",
               "not from all fwmark 0x7 lookup 7 proto static"]
    for family, cp, theirs in (("-4", CONTROL_PLANE, foreign), ("-6", CONTROL_PLANE6, [])):
        # wg-quick's two rules, the suppress rule first, where `ip rule add` puts them; before them
        # the control plane's address stays on main
        made = [f"from all to {cp} lookup main proto static",
                "from all lookup main suppress_prefixlength 0 proto static",
                f"not from all fwmark {TABLE:#x} lookup {TABLE} proto static"]
        assert ours(h.node, family) == [*made, *theirs]
    assert ip("-4", "route", "show", "table", str(TABLE), ns=h.node.netns).stdout.split() == \
        ["default", "dev", h.ifname, "proto", "static", "scope", "link"]
    assert ip("-6", "route", "show", "table", str(TABLE), ns=h.node.netns).stdout.split()[:5] == \
        ["default", "dev", h.ifname, "proto", "static"]
    # the "internet" is reached through the tunnel; the tunnel's own packets and the underlay stay on main
    assert f"dev {h.ifname} table {TABLE}" in ip("route", "get", INTERNET4, ns=h.node.netns).stdout
    assert "dev eth0" in ip("route", "get", g.node.ip, "mark", str(TABLE), ns=h.node.netns).stdout
    assert "dev eth0" in ip("route", "get", g.node.ip, ns=h.node.netns).stdout  # a control plane nearby
    # a control plane reached by the default route keeps it
    assert "dev nowhere0" in ip("route", "get", CONTROL_PLANE, ns=h.node.netns).stdout
    assert "dev nowhere0" in ip("-6", "route", "get", CONTROL_PLANE6, ns=h.node.netns).stdout
    assert f"dev {h.ifname} table {TABLE}" in ip("route", "get", "198.19.8.9", ns=h.node.netns).stdout
    assert ft.apply(True, bypass=()) is True  # the control plane moved: only its rules change
    assert f"dev {h.ifname} table {TABLE}" in ip("route", "get", CONTROL_PLANE, ns=h.node.netns).stdout
    assert not [r for r in ours(h.node, "-4") if r.startswith("from all to ")]
    tx = h.wg.stats()[g.public_key].tx_bytes
    wait_until(lambda: h.node.ping(INTERNET4), WAIT, f"{INTERNET4} through the tunnel")
    assert h.node.ping(INTERNET6) and h.node.ping(g.overlay4)  # IPv6 too, and the peers still
    assert h.wg.stats()[g.public_key].tx_bytes > tx

    ft.apply(True, bypass=(CONTROL_PLANE, CONTROL_PLANE6))
    ft.apply(False)
    h.wg.set_fwmark(0)

    assert dump(h.node) == before  # exactly as before: someone else's rules and routes kept
    assert h.wg.fwmark() == 0 and not h.node.ping(INTERNET4)
    assert h.node.ping(g.overlay4)


def test_a_gateway_forwards_and_masquerades_its_egress_and_removes_exactly_that(lab, tmp_path):
    the_lab, h, g, lan = lab
    for key, value in (("net.ipv4.ip_forward", "0"), ("net.ipv6.conf.all.forwarding", "1")):
        g.node.run(["sysctl", "-w", f"{key}={value}"], check=True)  # IPv6 was on already: left so
    g.node.run(["nft", "add", "table", "inet", "foreign"], check=True)
    g.node.run(["nft", "add", "chain", "inet", "foreign", "passthrough",
                "{ type filter hook forward priority 10 ; }"], check=True)
    foreign = g.node.run(["nft", "-j", "list", "table", "inet", "foreign"], check=True).stdout
    assert not h.node.ping(LAN_HOST)  # g does not forward yet
    # the gateway's agent keeps its memo in its state directory (here: a temp dir of the lab)
    sd = StateDir(the_lab.tempdir("gstate"))
    fwd = Forwarding(g.ifname, sd.forwarding_memo)

    assert g.node.call(fwd.apply, (*OVERLAY, LAN_NET), (LAN_NET,)) is True

    ruleset = json.loads(g.node.run(["nft", "-j", "list", "ruleset"], check=True).stdout)["nftables"]
    tables = {t["table"]["name"] for t in ruleset if "table" in t}
    assert tables == {table_name(g.ifname), "foreign"}
    assert g.node.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    wait_until(lambda: h.node.ping(LAN_HOST), WAIT, "the LAN behind g from h")
    # the LAN has no way back to the overlay: it sees (and answers) g's own address
    assert ip("route", "get", h.overlay4, ns=lan.netns, check=False).returncode != 0
    assert source_seen(lan, LAN_HOST, h.node) == LAN_GW
    assert g.node.call(fwd.apply, (*OVERLAY, LAN_NET), (LAN_NET,)) is False  # nothing to change

    # `leave` (or the role ending): our table goes, the sysctl we changed comes back, nothing else moves
    state = AgentState(server="http://198.18.0.1:1", host_id="host_g", name="g", host_token="t",
                       interface=g.ifname, backend="uapi", listen_port=PORT, mqtt_endpoint="198.18.0.1",
                       mqtt_port=1, client_id="host_g")
    g.node.call(cli._remove_roles, sd, state)

    listed = json.loads(g.node.run(["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    tables = {t["table"]["name"] for t in listed if "table" in t}
    assert tables == {"foreign"}
    assert g.node.run(["nft", "-j", "list", "table", "inet", "foreign"]).stdout == foreign
    assert g.node.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    assert g.node.run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "1"
    assert not Path(sd.forwarding_memo).exists()
    assert not h.node.ping(LAN_HOST)


def test_a_full_tunnel_host_reaches_the_internet_through_its_internet_gateway_with_the_gateways_address(lab):
    the_lab, h, g, lan = lab
    # "the internet": addresses beyond the LAN namespace, routed by g only (IPv4 and IPv6)
    far4, far6 = "198.19.3.2", "fdff:3::2"
    ip("addr", "add", "fdff:1::1/64", "dev", the_lab.ifname("e1"), "nodad", ns=g.node.netns)
    ip("addr", "add", "fdff:1::2/64", "dev", "lan0", "nodad", ns=lan.netns)
    ip("addr", "add", f"{far4}/32", "dev", "lo", ns=lan.netns)
    ip("addr", "add", f"{far6}/128", "dev", "lo", ns=lan.netns)
    ip("route", "add", "198.19.3.0/24", "via", LAN_HOST, ns=g.node.netns)
    ip("-6", "route", "add", "fdff:3::/64", "via", "fdff:1::2", ns=g.node.netns)
    g.node.run(["sysctl", "-w", "net.ipv4.ip_forward=0"], check=True)
    sd = StateDir(the_lab.tempdir("gstate"))
    fwd = Forwarding(g.ifname, sd.forwarding_memo)
    g.node.call(fwd.apply, (*OVERLAY, "0.0.0.0/0", "::/0"), ("0.0.0.0/0", "::/0"))
    before = dump(h.node)
    assert not h.node.ping(far4)

    h.wg.set_fwmark(TABLE)
    FullTunnel(h.ifname, TABLE, netns=h.node.netns).apply(True)

    wait_until(lambda: h.node.ping(far4), WAIT, f"{far4} through the internet gateway")
    assert h.node.ping(far6)
    assert h.node.ping(g.overlay4) and h.node.ping(g.node.ip)  # peers and the underlay: no loop
    # the far side sees the gateway's uplink address, not h's overlay one
    assert source_seen(lan, far4, h.node) == LAN_GW
    assert source_seen(lan, far6, h.node) == "fdff:1::1"

    FullTunnel(h.ifname, TABLE, netns=h.node.netns).apply(False)
    h.wg.set_fwmark(0)
    assert dump(h.node) == before and not h.node.ping(far4)
    g.node.call(fwd.clear)


# --- the agent itself: its plan applied by the real adapters ---------------------------------


def agent_for(lab: Lab, node: Node, host_id: str, private_key: str,
              snapshots: list[protocol.Snapshot]) -> Agent:
    """An agent of ``node`` booting from a cache of ``snapshots`` (no control plane is asked)."""
    sd = StateDir(lab.tempdir(f"state{node.name}"))
    ifname = node.wg_ifname()
    sd.save(AgentState(server="http://198.18.0.1:1", host_id=host_id, name=node.name, host_token="t",
                       interface=ifname, backend="uapi", listen_port=PORT, mqtt_endpoint="198.18.0.1",
                       mqtt_port=1, client_id=host_id))
    sd.save_secrets(wg_key=private_key, tls_key=keys.new_tls_key())
    sd.save_cache(snapshots)
    return Agent(sd, backend=UapiBackend(ifname, netns=node.netns),
                 netsetup=NetConf(ifname, netns=node.netns), api=ApiClient("http://198.18.0.1:1"),
                 routing=FullTunnel(ifname, TABLE, netns=node.netns),
                 forwarding=Forwarding(ifname, sd.forwarding_memo))


def test_agents_route_a_full_tunnel_host_through_its_internet_gateway_and_undo_it_when_the_role_ends():
    with Lab() as lab:
        h, g, far = lab.add_node("h"), lab.add_node("g"), lab.add_node("far")
        # "the internet" beyond g only: far's second link, which h has no route to
        ip("link", "add", lab.ifname("e1"), "type", "veth", "peer", "name", "up0", "netns", far.netns,
           ns=g.netns)
        ip("addr", "add", f"{LAN_GW}/24", "dev", lab.ifname("e1"), ns=g.netns)
        ip("link", "set", lab.ifname("e1"), "up", ns=g.netns)
        ip("addr", "add", f"{LAN_HOST}/24", "dev", "up0", ns=far.netns)
        ip("link", "set", "up0", "up", ns=far.netns)
        g.run(["sysctl", "-w", "net.ipv4.ip_forward=0"], check=True)
        h.run(["sysctl", "-w", "net.ipv4.conf.all.src_valid_mark=0"], check=True)
        ip("route", "add", "100.64.9.1/32", "via", h.ip, ns=far.netns)  # a spoofer next to h
        rules_before = ip("-4", "rule", ns=h.netns).stdout + ip("-6", "rule", ns=h.netns).stdout
        kh, kg = keys.new_wireguard_key(), keys.new_wireguard_key()
        net = Network(id=NetworkId("net_x"), name="x", ipv4_cidr=OVERLAY[0], ipv6_cidr=OVERLAY[1], seq=1)

        def members(roles: bool) -> tuple[Member, ...]:
            mh = Member(net.id, HostId("host_h"), "h", keys.wireguard_public_key(kh), "100.64.9.1",
                        "fd00:9::1", PORT, (f"{h.ip}:{PORT}",))
            mg = Member(net.id, HostId("host_g"), "g", keys.wireguard_public_key(kg), "100.64.9.2",
                        "fd00:9::2", PORT, (f"{g.ip}:{PORT}",))
            if roles:
                mh = replace(mh, role=MemberRole(internet_gateway=HostId("host_g"), full_tunnel=True))
                mg = replace(mg, role=MemberRole(gateway=Gateway(internet=True)))
            return (mh, mg)

        on = protocol.Snapshot(net, members(roles=True))
        agent_h = agent_for(lab, h, "host_h", kh, [on])
        agent_g = agent_for(lab, g, "host_g", kg, [on])
        g.call(agent_g.boot)
        h.call(agent_h.boot)
        assert agent_g.error is None and agent_h.error is None

        wait_until(lambda: h.ping(LAN_HOST), WAIT, "the internet through g")
        assert source_seen(far, LAN_HOST, h) == LAN_GW  # masqueraded out of g's uplink
        assert h.ping("100.64.9.2") and h.ping(g.ip)  # the peer and the underlay: no loop
        assert g.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
        # wg-quick's companions of the rules: the tunnel's flows keep their mark for the reverse-path
        # filter, and the tunnel's address is not reachable from another interface
        assert h.run(["sysctl", "-n", "net.ipv4.conf.all.src_valid_mark"]).stdout.strip() == "1"
        chains = {c["chain"]["name"] for c in json.loads(h.run(
            ["nft", "-j", "list", "table", "inet", table_name(h.wg_ifname())], check=True).stdout)["nftables"]
            if "chain" in c}
        assert chains == {"preraw", "premangle", "postmangle"}
        assert not far.ping("100.64.9.1")

        off = protocol.Snapshot(replace(net, seq=2), members(roles=False))
        for node, agent in ((h, agent_h), (g, agent_g)):
            agent.tracker.replace([off])
            node.call(agent.apply)
            assert agent.error is None
        assert ip("-4", "rule", ns=h.netns).stdout + ip("-6", "rule", ns=h.netns).stdout == rules_before
        assert ip("-4", "route", "show", "table", str(TABLE), ns=h.netns).stdout == ""
        assert agent_h.backend.fwmark() == 0
        assert not h.ping(LAN_HOST)
        assert g.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
        assert table_name(g.wg_ifname()) not in g.run(["nft", "list", "tables"]).stdout
        assert table_name(h.wg_ifname()) not in h.run(["nft", "list", "tables"]).stdout
        assert h.run(["sysctl", "-n", "net.ipv4.conf.all.src_valid_mark"]).stdout.strip() == "0"
        assert far.ping("100.64.9.1")  # what the full tunnel's drop stopped
