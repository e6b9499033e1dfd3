"""Internet access as an HA group through the API, on DynamoDB Local: members with
``internet_gateway: "auto"`` use any internet gateway of the network; each member's ``/config``
sends its full tunnel (``0.0.0.0/0`` and ``::/0``) to exactly one of them; a pin (``0.0.0.0/0``)
holds it to one; what cannot work is refused with the rule's code; the failover functions place
a member whose internet gateway is down on a live one, written on its role."""

from __future__ import annotations

from typing import Any

import pytest

import app as app_module
from chalicelib.domain import protocol
from chalicelib.service import Service

from .conftest import Api
from .test_gateways import Net, _config, _error, _id, _join, _network

V4, V6 = "0.0.0.0/0", "::/0"
NOW = 1_800_000_000


@pytest.fixture
def net(api: Api) -> Net:
    """A network with an enrollment key for the 13 hosts of ``hosts``."""
    created = api.ok("POST", "/v1/networks", {"name": "office", "ipv4_cidr": "100.64.0.0/16"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [created["id"]], "uses": 13})
    return Net(created["id"], key["token"])


@pytest.fixture
def hosts(api: Api, net: Net) -> dict[str, dict[str, Any]]:
    """Internet gateways i1, i2, i3; members u0 … u8 using any of them with a full tunnel; x, nothing."""
    out = {n: _join(api, net.key, n) for n in ("i1", "i2", "i3", "x", *(f"u{i}" for i in range(9)))}
    for g in ("i1", "i2", "i3"):
        api.ok("PUT", net.path(f"/gateways/{_id(out, g)}"), {"internet": True})
    for u in (f"u{i}" for i in range(9)):
        m = api.ok("PATCH", net.path(f"/members/{_id(out, u)}"),
                   {"internet_gateway": "auto", "full_tunnel": True})
        assert (m["internet_gateway"], m["full_tunnel"]) == ("auto", True)
    return out


def _carriers(network: dict[str, Any]) -> list[str]:
    v4 = [p["host_id"] for p in network["peers"] if V4 in p["allowed_ips"]]
    assert v4 == [p["host_id"] for p in network["peers"] if V6 in p["allowed_ips"]], "both routes go together"
    return v4


def test_every_auto_member_sends_its_full_tunnel_to_exactly_one_internet_gateway_and_they_spread(
        api, net, hosts):
    gateways = {_id(hosts, g) for g in ("i1", "i2", "i3")}
    chosen: dict[str, int] = {}
    for name, host in hosts.items():
        network = _config(api, host)
        if not name.startswith("u"):
            assert _carriers(network) == [], name
            continue
        (carrier,) = _carriers(network)
        assert carrier in gateways
        chosen[carrier] = chosen.get(carrier, 0) + 1
    assert len(chosen) >= 2, f"9 members all on one of 3 internet gateways: {chosen}"  # by chance: 3 in 3^9


def test_a_pin_holds_an_auto_member_on_one_internet_gateway_and_auto_sets_it_free(api, net, hosts):
    u = _id(hosts, "u0")
    for g in ("i1", "i2", "i3"):
        m = api.ok("PATCH", net.path(f"/members/{u}"), {"pinned": {V4: _id(hosts, g)}})
        assert m["pinned"] == {V4: _id(hosts, g)} and m["internet_gateway"] == "auto"
        assert _carriers(_config(api, hosts["u0"])) == [_id(hosts, g)]
    assert api.ok("PATCH", net.path(f"/members/{u}"), {"pinned": {V4: None}})["pinned"] == {}
    assert len(_carriers(_config(api, hosts["u0"]))) == 1


def test_what_cannot_work_is_refused_naming_the_rule(api, net, hosts):
    u0, x, i1 = _id(hosts, "u0"), _id(hosts, "x"), _id(hosts, "i1")
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{u0}"), {"pinned": {V4: x}})
    assert (code, err) == (409, "not_a_gateway_of_range") and x in msg and i1 in msg, msg
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{u0}"), {"pinned": {V6: i1}})
    assert code == 400 and V4 in msg, msg
    code, _, msg = _error(api, "PATCH", net.path(f"/members/{u0}"), {"internet_gateway": "automatic"})
    assert code == 400, msg
    api.ok("PATCH", net.path(f"/members/{_id(hosts, 'u1')}"), {"internet_gateway": i1})
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{_id(hosts, 'u1')}"), {"pinned": {V4: i1}})
    assert (code, err) == (409, "internet_gateway_not_auto"), msg
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{i1}"), {"internet_gateway": "auto",
                                                                      "full_tunnel": True})
    assert (code, err) == (409, "internet_gateway_chain"), msg
    code, err, msg = _error(api, "PUT", net.path(f"/relays/{x}"), {"relayed": [u0]})
    assert (code, err) == (409, "relayed_full_tunnel") and x in msg, msg
    assert api.ok("PATCH", net.path(f"/members/{u0}"), {})["internet_gateway"] == "auto"  # nothing written


def test_auto_in_a_network_without_internet_gateways_is_409(api):
    net = _network(api, "lab", "100.64.0.0/16")
    u = _join(api, net.key, "u")
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{u['host']['id']}"),
                            {"internet_gateway": "auto", "full_tunnel": True})
    assert (code, err) == (409, "no_internet_gateways"), msg


def test_an_internet_gateway_may_go_while_another_is_left_but_not_the_last_one_auto_members_use(
        api, net, hosts):
    for g in ("i1", "i2"):
        api.ok("PUT", net.path(f"/gateways/{_id(hosts, g)}"), {"internet": False, "remote_access": True})
    users = [f"u{i}" for i in range(9)]
    assert all(_carriers(_config(api, hosts[u])) == [_id(hosts, "i3")] for u in users)
    i3 = _id(hosts, "i3")
    code, err, msg = _error(api, "PUT", net.path(f"/gateways/{i3}"),
                            {"internet": False, "remote_access": True})
    assert (code, err) == (409, "gateway_in_use") and _id(hosts, "u0") in msg, msg
    code, err, msg = _error(api, "DELETE", net.path(f"/gateways/{i3}"))
    assert (code, err) == (409, "gateway_in_use"), msg
    api.ok("DELETE", net.path(f"/gateways/{i3}?force=true"))
    m = api.ok("PATCH", net.path(f"/members/{_id(hosts, 'u0')}"), {})
    assert (m["internet_gateway"], m["full_tunnel"]) == (None, False)
    assert _carriers(_config(api, hosts["u0"])) == []


def _report(ids: dict[str, str], host: str, rtts: dict[str, float | None]) -> int:
    rows = [{"host": ids[g], "rtt": rtt, "loss": 0 if rtt is not None else 100, "up": rtt is not None}
            for g, rtt in rtts.items()]
    sent = {"v": protocol.VERSION, "type": "status", "agent_version": "1.0", "host_id": ids[host],
            **({"latency": rows} if rows else {})}
    assert app_module.host_report(sent, None) == {"recorded": True}
    return int(app_module.failover_report(sent, None)["moved"]) if rows else 0


def test_failover_places_an_auto_member_whose_internet_gateway_is_down_on_the_best_live_one(
        api, net, hosts, service: Service, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(service.deps.clock, "now", lambda: NOW)
    ids = {n: h["host"]["id"] for n, h in hosts.items()}
    name = {hid: n for n, hid in ids.items()}
    for g in ("i1", "i2", "i3"):
        _report(ids, g, {})  # the gateways report: none is silent
    (was,) = _carriers(_config(api, hosts["u0"]))
    others = sorted(g for g in ("i1", "i2", "i3") if ids[g] != was)
    before = len(service.deps.publisher.on(protocol.network_topic(net.id)))
    assert _report(ids, "u0", {name[was]: None, others[0]: 40.0, others[1]: 8.0}) == 1
    assert api.ok("PATCH", net.path(f"/members/{ids['u0']}"), {})["placed"] == {V4: ids[others[1]]}
    assert _carriers(_config(api, hosts["u0"])) == [ids[others[1]]]
    sent = service.deps.publisher.on(protocol.network_topic(net.id))[before:]
    (delta,) = [protocol.decode(p) for p in sent]
    assert [m.host_id for m in delta.upsert] == [ids["u0"]]  # its role, in one broadcast
    assert _report(ids, "u0", {name[was]: 7.0, others[0]: 40.0, others[1]: 8.0}) == 0  # back: no flap


def test_auto_members_left_without_internet_gateways_block_no_later_change(api, net, hosts):
    for g in ("i1", "i2", "i3"):
        api.ok("DELETE", f"/v1/hosts/{_id(hosts, g)}")  # the hosts are gone, their users keep "auto"
    assert api.ok("PATCH", net.path(f"/members/{_id(hosts, 'u0')}"), {})["internet_gateway"] == "auto"
    assert _carriers(_config(api, hosts["u0"])) == []
    api.ok("PUT", net.path(f"/gateways/{_id(hosts, 'x')}"), {"egress": ["10.40.0.0/16"]})
    api.ok("PATCH", net.path(f"/members/{_id(hosts, 'u1')}"), {"internet_gateway": None})


def test_an_agent_of_schema_3_is_told_to_upgrade_once_its_network_uses_auto(api, net, hosts):
    """A schema-3 agent would read "auto" as no member: a split tunnel where a full one was asked."""
    u0 = hosts["u0"]
    path = f"/v1/hosts/{u0['host']['id']}/config"
    code, out = api.call("GET", f"{path}?v=3", token=u0["host_token"])
    assert code == 400 and out["error"]["code"] == "agent_outdated", out
    assert "automatic internet gateways, which need schema 4" in out["error"]["message"]
    assert api.ok("GET", f"{path}?v={protocol.VERSION}", token=u0["host_token"])["networks"]
