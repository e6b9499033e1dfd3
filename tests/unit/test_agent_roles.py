"""What the agent does for gateways and full tunnel, with an in-memory device.

The rules, routes and nftables table themselves are made by real adapters in
tests/integration/test_agent_roles.py; here the loop's decisions are pinned: when the
device gets its fwmark, when full tunnel and forwarding are turned on and off, what a
status report says of peers' endpoints, what a broadcast of a newer schema does, and
what ``/config`` and the cache carry.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest

from agent import keys
from agent.api import ApiClient
from agent.gateway import MARK, Forwarding, ruleset, table_name
from agent.mqtt import Connected, Received
from agent.netconf import NetConfError
from agent.state import StateDir
from agent.wg.uapi import parse_get
from chalicelib.domain import protocol
from chalicelib.domain.ids import ClientId, HostId, NetworkId
from chalicelib.domain.models import Client, Gateway, MemberRole
from tests.unit.test_agent_runner import NET, ScriptedApi, make_agent, member, snapshot


class RecordingRouting:
    """Full tunnel as the runner drives it: the sequence of on/off it asked for."""

    table = 51820

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[bool] = []
        self.on = False
        self.fail = fail

    def apply(self, on: bool, bypass: Sequence[str] = ()) -> bool:
        self.calls.append(on)
        self.bypass = tuple(bypass)
        if self.fail:
            raise NetConfError("sm0 full tunnel: adding IPv4 rule: Operation not permitted")
        changed, self.on = self.on != on, on
        return changed


class RecordingForwarding:
    def __init__(self) -> None:
        self.state: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        self.mark = 0

    def apply(self, forwards: tuple[str, ...], nat: tuple[str, ...], *, full_tunnel_mark: int = 0,
              addresses: tuple[str, ...] = ()) -> bool:
        changed, self.state = self.state != (forwards, nat), (forwards, nat)
        self.mark = full_tunnel_mark
        return changed


def with_roles(agent, routing=None, forwarding=None):  # noqa: ANN001, ANN201
    agent.routing, agent.forwarding = routing, forwarding
    return agent


def internet_members(full_tunnel: bool, ms=None):  # noqa: ANN001, ANN201
    """host_1 (this agent) uses host_2, an internet gateway; host_3 is a plain member."""
    m1, m2, m3 = ms or (member(1), member(2), member(3))
    m2 = replace(m2, role=MemberRole(gateway=Gateway(internet=True)))
    m1 = replace(m1, role=MemberRole(internet_gateway=HostId("host_2"), full_tunnel=full_tunnel))
    return [m1, m2, m3]


def test_full_tunnel_marks_the_device_routes_by_policy_and_undoes_both(tmp_path):
    ms = [member(1), member(2), member(3)]
    api = ScriptedApi([snapshot(7, internet_members(True, ms))])
    agent, backend, _ = make_agent(tmp_path, api)
    routing = RecordingRouting()
    with_roles(agent, routing)
    agent.boot()
    agent.resync()
    assert routing.on and backend.fwmark() == routing.table  # the tunnel's own packets stay on main
    assert routing.bypass == ("198.18.0.1",)  # the API and the broker (make_agent: both there) too
    assert {"0.0.0.0/0", "::/0"} <= set(backend.peers()[ms[1].public_key].allowed_ips)
    api.answer = [snapshot(8, internet_members(False, ms))]
    agent.resync()
    assert not routing.on and backend.fwmark() == 0


def test_a_host_without_full_tunnel_never_gets_rules_nor_a_mark(tmp_path):
    api = ScriptedApi([snapshot(7, [member(1), member(2)])])
    agent, backend, _ = make_agent(tmp_path, api)
    routing = RecordingRouting()
    with_roles(agent, routing)
    agent.boot()
    agent.resync()
    assert set(routing.calls) == {False} and backend.fwmark() == 0


def test_a_policy_routing_failure_is_reported_and_retried_with_the_peers_in_place(tmp_path):
    api = ScriptedApi([snapshot(7, internet_members(full_tunnel=True))])
    agent, backend, _ = make_agent(tmp_path, api)
    routing = RecordingRouting(fail=True)
    with_roles(agent, routing)
    agent.boot()
    agent.resync()
    assert agent.error and "cannot configure sm0" in agent.error and "Operation not permitted" in agent.error
    assert agent._apply_timer.pending  # retried
    assert len(backend.peers()) == 2  # the mesh works meanwhile
    assert agent.dir.load_runtime()["error"] == agent.error  # `skymesh-agent status` shows it
    routing.fail = False
    agent.apply()
    assert agent.error is None and routing.on


def test_a_gateway_forwards_and_masquerades_its_egress_and_stops_when_the_role_ends(tmp_path):
    m1, m2 = member(1), member(2)
    gw = replace(m1, role=MemberRole(gateway=Gateway(egress=("10.20.0.0/24",))))
    api = ScriptedApi([snapshot(7, [gw, m2])])
    agent, _, _ = make_agent(tmp_path, api)
    fwd = RecordingForwarding()
    with_roles(agent, forwarding=fwd)
    agent.boot()
    agent.resync()
    forwards, nat = fwd.state
    assert {"100.64.0.0/16", "fd00:1::/64", "10.20.0.0/24"} <= set(forwards)
    assert nat == ("10.20.0.0/24",)
    api.answer = [snapshot(8, [m1, m2])]
    agent.resync()
    assert fwd.state == ((), ())


def test_the_ruleset_masquerades_only_what_came_from_the_tunnel_for_the_nat_ranges():
    doc = ruleset("sm0", ("100.64.0.0/16", "100.64.3.0/24", "10.20.0.0/24", "fd00:1::/64"), ("10.20.0.0/24",))
    cmds = doc["nftables"]
    assert cmds[1:3] == [{"add": {"table": {"family": "inet", "name": "skymesh_sm0"}}},
                         {"delete": {"table": {"family": "inet", "name": "skymesh_sm0"}}}]  # replaced whole
    tables = {c[op][kind].get("table", c[op][kind].get("name"))
              for c in cmds[1:] for op in c for kind in c[op]}
    assert tables == {"skymesh_sm0"}  # no other table is named
    nat_rules = [c["add"]["rule"]["expr"] for c in cmds
                 if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == "postrouting"]
    (expr,) = nat_rules  # IPv4 only: there is no IPv6 egress
    assert {"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, MARK]}, "right": MARK}} in expr
    assert {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "sm0"}} in expr
    assert {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                      "right": {"set": [{"prefix": {"addr": "10.20.0.0", "len": 24}}]}}} in expr
    forward = json.dumps([c for c in cmds if c.get("add", {}).get("rule", {}).get("chain") == "forward"])
    assert "100.64.3.0" not in forward  # nested ranges merged: an interval set refuses overlaps
    assert ruleset("sm0", (), ()) == {"nftables": cmds[:3]}  # no role: only the removal
    assert table_name("wg.office-1") == "skymesh_wg_office_1"


def test_an_internet_gateway_masquerades_any_destination_of_both_families():
    doc = ruleset("sm0", ("100.64.0.0/16", "fd00:1::/64", "0.0.0.0/0", "::/0"), ("0.0.0.0/0", "::/0"))
    nat = [c["add"]["rule"]["expr"] for c in doc["nftables"]
           if c.get("add", {}).get("rule", {}).get("chain") == "postrouting"]
    families = [e["match"]["right"] for expr in nat for e in expr
                if "match" in e and e["match"]["left"] == {"meta": {"key": "nfproto"}}]
    assert families == ["ipv4", "ipv6"] and all({"masquerade": None} in expr for expr in nat)


def test_full_tunnel_keeps_the_tunnels_own_flows_marked_the_way_wg_quick_does():
    doc = ruleset("sm0", (), (), full_tunnel_mark=51820, addresses=("100.64.0.7/32", "fd00:1::7/128"))
    rules = {}
    for c in doc["nftables"]:
        if "rule" in c.get("add", {}):
            rules.setdefault(c["add"]["rule"]["chain"], []).append(c["add"]["rule"]["expr"])
    assert set(rules) == {"preraw", "premangle", "postmangle"}  # no forwarding, no NAT
    assert [e[1]["match"]["right"] for e in rules["preraw"]] == ["100.64.0.7", "fd00:1::7"]
    (restore,) = rules["premangle"]
    assert {"match": {"op": "==", "left": {"ct": {"key": "mark"}}, "right": 51820}} in restore
    assert {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"ct": {"key": "mark"}}}} in restore
    (save,) = rules["postmangle"]
    assert {"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"meta": {"key": "mark"}}}} in save


def test_the_full_tunnel_asks_for_its_mark_in_the_table_and_drops_it_when_it_ends(tmp_path):
    ms = [member(1), member(2), member(3)]
    api = ScriptedApi([snapshot(7, internet_members(True, ms))])
    agent, _, _ = make_agent(tmp_path, api)
    fwd = RecordingForwarding()
    with_roles(agent, RecordingRouting(), fwd)
    agent.boot()
    agent.resync()
    assert fwd.mark == RecordingRouting.table
    api.answer = [snapshot(8, internet_members(False, ms))]
    agent.resync()
    assert fwd.mark == 0


def test_status_reports_carry_each_peers_current_endpoint_within_the_protocols_bounds(tmp_path):
    ms = [member(1), member(2), member(3)]
    agent, backend, link = make_agent(tmp_path, ScriptedApi([snapshot(7, ms)]))
    agent.boot()
    agent.handle(Connected())
    backend.record_traffic(ms[1].public_key, handshake=int(time.time()), rx_bytes=5, tx_bytes=6)
    backend.record_traffic(ms[2].public_key, handshake=int(time.time()), rx_bytes=1, tx_bytes=1)
    backend.roam(ms[1].public_key, "203.0.113.9:40000")  # a client behind NAT, as WireGuard heard it
    backend.roam(ms[2].public_key, "[fe80::1%eth0]:51820")  # the protocol refuses a zone: left out
    report = protocol.decode_status(protocol.encode(agent.status_report()))
    by_key = {p.public_key: p for p in report.peers}
    assert by_key[ms[1].public_key].endpoint == "203.0.113.9:40000"
    assert by_key[ms[2].public_key].endpoint is None and by_key[ms[2].public_key].rx_bytes == 1
    agent.report_status()
    sent = len(link.published)
    backend.roam(ms[1].public_key, "203.0.113.9:40001")  # it moved: worth a report before the heartbeat
    agent.report_status()
    assert len(link.published) == sent + 1


def test_a_broadcast_of_a_newer_schema_asks_for_an_upgrade_and_resyncs_at_a_bounded_rate(tmp_path, caplog):
    ms = [member(1), member(2)]
    api = ScriptedApi([snapshot(7, ms)])
    agent, backend, _ = make_agent(tmp_path, api)
    agent.boot()
    agent.handle(Connected())
    assert api.calls == 1
    newer = json.dumps({"v": protocol.VERSION + 1, "type": "delta", "network": NET, "seq": 8}).encode()
    api.answer = [snapshot(8, [*ms, member(3)])]  # what that broadcast changed, over HTTPS
    agent.handle(Received("sm/n/net_a", newer))
    agent.timers.run_due(time.monotonic())
    assert api.calls == 2 and agent.tracker.seq(NET) == 8 and len(backend.peers()) == 2
    msg = (f"the control plane speaks schema {protocol.VERSION + 1}, this agent {protocol.VERSION}: "
           "upgrade skymesh-agent")
    assert msg in caplog.text and agent.error == msg  # and `status` shows it
    for _ in range(20):  # a burst of unreadable broadcasts: at most one more resync per resync_max
        agent.handle(Received("sm/n/net_a", newer))
        agent.timers.run_due(time.monotonic())
    assert api.calls == 2 and agent._resync_timer.pending
    assert caplog.text.count("upgrade skymesh-agent") == 1  # said once, not per message


def test_an_older_schema_broadcast_is_ignored_without_a_resync(tmp_path):
    api = ScriptedApi([snapshot(7, [member(1), member(2)])])
    agent, _, _ = make_agent(tmp_path, api)
    agent.boot()
    agent.handle(Connected())
    older = json.dumps({"v": 1, "type": "delta", "network": NET, "seq": 8}).encode()
    agent.handle(Received("sm/n/net_a", older))
    agent.timers.run_due(time.monotonic())
    assert api.calls == 1 and agent.error is None and not agent._resync_timer.pending


def a_client(gateway: str = "host_2") -> Client:
    return Client(id=ClientId("cli_phone"), network_id=NetworkId(NET), name="phone",
                  public_key=keys.wireguard_public_key(keys.new_wireguard_key()), ipv4="100.64.0.50",
                  ipv6="fd00:1::50", gateway=HostId(gateway), extra_addresses=("10.30.0.0/24",))


def test_the_cache_keeps_clients_and_roles(tmp_path):
    ms = internet_members(full_tunnel=True)
    ms[1] = replace(ms[1], role=MemberRole(gateway=Gateway(remote_access=True, internet=True,
                                                           egress=("10.20.0.0/24",))))
    snap = replace(snapshot(7, ms), clients=(a_client(),))
    sd = StateDir(tmp_path / "s")
    sd.create()
    sd.save_cache([snap])
    assert sd.load_cache() == [snap]


@pytest.fixture
def config_server() -> Iterator[tuple[str, list[str], dict]]:
    """A loopback HTTP server answering /config with ``answer`` and recording each request path."""
    paths: list[str] = []
    answer: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            paths.append(self.path)
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None: ...

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths, answer
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def test_config_names_the_schema_it_reads_and_parses_clients(config_server):
    url, paths, answer = config_server
    snap = replace(snapshot(7, internet_members(True)), clients=(a_client(),))
    wire = protocol.to_wire(snap)
    answer.update({"host_id": "host_1", "networks": [
        {"network": wire["network"], "seq": 7, "members": wire["members"], "clients": wire["clients"]}]})
    cfg = ApiClient(url, "t").config("host_1", {NET: 5})
    assert cfg.snapshots == (snap,)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(paths[-1]).query)
    assert query == {"v": [str(protocol.VERSION)], "known": [f"{NET}:5"]}


def test_parse_get_reads_the_fwmark():
    assert parse_get("private_key=" + "11" * 32 + "\nlisten_port=51820\nfwmark=51820\n").fwmark == 51820
    assert parse_get("listen_port=51820\n").fwmark == 0


@pytest.fixture
def fake_nft(tmp_path):  # noqa: ANN001, ANN201
    """An ``nft`` that keeps the tables of the documents it is given in a file (and lists them)."""
    state = tmp_path / "nft-tables.json"
    state.write_text("[]")
    script = tmp_path / "nft"
    script.write_text(f"""#!{sys.executable}
import json, sys
tables = set(json.load(open({str(state)!r})))
if sys.argv[1:] == ["-j", "-f", "-"]:
    for cmd in json.load(sys.stdin)["nftables"]:
        for op, obj in cmd.items():
            if "table" in obj and op in ("add", "delete"):
                (tables.add if op == "add" else tables.discard)(obj["table"]["name"])
    json.dump(sorted(tables), open({str(state)!r}, "w"))
else:
    print(json.dumps({{"nftables": [{{"table": {{"family": "inet", "name": t}}}} for t in sorted(tables)]}}))
""")
    script.chmod(0o755)
    return script, state


def test_forwarding_on_a_host_without_ipv6_forwards_ipv4_and_puts_back_what_it_changed(tmp_path, fake_nft):
    nft, tables = fake_nft
    root = tmp_path / "sys"
    (root / "net/ipv4").mkdir(parents=True)
    (root / "net/ipv4/ip_forward").write_text("0\n")  # no net/ipv6: IPv6 is disabled here
    memo = tmp_path / "forwarding.json"
    fwd = Forwarding("sm0", memo, nft=str(nft), sysctl_root=root)
    assert fwd.apply(("100.64.0.0/16", "10.20.0.0/24"), ("10.20.0.0/24",)) is True
    assert json.loads(tables.read_text()) == ["skymesh_sm0"]
    assert (root / "net/ipv4/ip_forward").read_text().strip() == "1"
    assert fwd.apply(("100.64.0.0/16", "10.20.0.0/24"), ("10.20.0.0/24",)) is False  # nothing to do
    # a restarted agent (a fresh object) that is no longer a gateway still undoes what was done
    assert Forwarding("sm0", memo, nft=str(nft), sysctl_root=root).apply((), ()) is True
    assert json.loads(tables.read_text()) == [] and not memo.exists()
    assert (root / "net/ipv4/ip_forward").read_text().strip() == "0"


def test_a_host_that_never_was_a_gateway_needs_no_nft(tmp_path):
    fwd = Forwarding("sm0", tmp_path / "forwarding.json", nft=str(tmp_path / "no-such-nft"),
                     sysctl_root=tmp_path)
    assert fwd.apply((), ()) is False
    with pytest.raises(NetConfError, match="not installed"):
        fwd.apply(("100.64.0.0/16",), ())
