"""``GET /v1/networks/{id}/topology`` (issue 12: the dashboard's graph) on DynamoDB Local: what the plan
makes of a network, for a person. Gateways g1 and g2 serve one LAN (HA; g1 also takes remote-access
clients), u1 and u2 use it, r relays t. Every answer is checked against what the hosts' own
``/config`` says (the plan, as the control plane serves it), and against the agents' view when a
report finds a gateway down."""

from __future__ import annotations

from typing import Any

import pytest

import app as app_module
from chalicelib.domain import protocol
from chalicelib.service import Service

from .conftest import Api, host_body
from .test_gateways import LAN, _config

NOW = 1_800_000_000


@pytest.fixture
def world(api: Api, service: Service, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    net = api.ok("POST", "/v1/networks", {"name": "office", "ipv4_cidr": "100.64.0.0/24"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 10})
    hosts = {h: api.ok("POST", "/v1/hosts", host_body(h), token=key["token"])
             for h in ("g1", "g2", "u1", "u2", "r", "t")}
    ids = {h: v["host"]["id"] for h, v in hosts.items()}
    base = f"/v1/networks/{net['id']}"
    api.ok("PUT", f"{base}/gateways/{ids['g1']}", {"egress": [LAN], "remote_access": True})
    api.ok("PUT", f"{base}/gateways/{ids['g2']}", {"egress": [LAN]})
    api.ok("PUT", f"{base}/relays/{ids['r']}", {"relayed": [ids["t"]]})
    phone = api.ok("POST", f"{base}/clients", {"name": "phone", "gateway": ids["g1"]})["client"]
    clock = {"now": NOW}
    monkeypatch.setattr(service.deps.clock, "now", lambda: clock["now"])
    return {"net": net["id"], "base": base, "hosts": hosts, "ids": ids, "phone": phone, "clock": clock}


def report(w: dict[str, Any], host: str, down: tuple[str, ...] = ()) -> None:
    """``host``'s agent reports (as the IoT rule hands it over); the hosts in ``down`` did not answer."""
    rows = [{"host": w["ids"][d], "rtt": None, "loss": 100, "up": False} for d in down]
    sent = {"v": protocol.VERSION, "type": "status", "agent_version": "1.0", "host_id": w["ids"][host],
            **({"latency": rows} if rows else {})}
    assert app_module.host_report(sent, None) == {"recorded": True}


def topology(api: Api, w: dict[str, Any]) -> dict[str, dict[str, Any]]:
    got = api.ok("GET", f"{w['base']}/topology")
    assert got["network_id"] == w["net"]
    return {h["name"]: h for h in got["hosts"]} | {"": got}


def lan_route(host: dict[str, Any]) -> dict[str, Any]:
    (route,) = [r for r in host["routes"] if r["destination"] == LAN]
    return route


def carrier(api: Api, w: dict[str, Any], name: str, prefix: str) -> str:
    """The peer whose entry carries ``prefix`` in ``name``'s own /config."""
    (to,) = [p["host_id"] for p in _config(api, w["hosts"][name])["peers"] if prefix in p["allowed_ips"]]
    return str(to)


def test_it_shows_each_hosts_peers_gateway_and_relay_as_the_plan_configures_them(api, world):
    w, ids = world, world["ids"]
    top = topology(api, w)
    names = {v: k for k, v in ids.items()}
    for name in ("u1", "u2"):
        route = lan_route(top[name])
        # the gateway its own /config sends the LAN to, first of the two it may use
        assert route["next_hop"] == route["gateway"] == carrier(api, w, name, LAN)
        assert sorted(route["candidates"]) == sorted([ids["g1"], ids["g2"]])
        assert route["candidates"][0] == route["gateway"]
        # peers: as many as in its /config, every other member but t, which it reaches through r
        assert top[name]["peer_count"] == len(_config(api, w["hosts"][name])["peers"]) == len(ids) - 2
        assert top[name]["via"] == [{"to": ids["t"], "next_hop": ids["r"]}]
    # t peers with r alone; its LAN goes through r to the gateway r itself uses
    t = top["t"]
    assert t["relayed_by"] == ids["r"] and t["peer_count"] == 1 and top["r"]["relays"] == [ids["t"]]
    assert t["via"] == [{"to": ids[n], "next_hop": ids["r"]} for n in sorted(ids, key=ids.get)
                        if n not in ("r", "t")]
    assert lan_route(t)["next_hop"] == ids["r"] and lan_route(t)["candidates"] == []
    assert lan_route(t)["gateway"] == lan_route(top["r"])["gateway"] == carrier(api, w, "r", LAN)
    # the gateways send nothing of the LAN into the tunnel; g1's role and its client are there
    assert [r["destination"] for r in top["g1"]["routes"]] == []
    assert top["g1"]["gateway"] == {"remote_access": True, "egress": [LAN], "internet": False,
                                    "auto_relay": True}  # (the default)
    assert top["u1"]["gateway"] is None
    assert top[""]["clients"] == [{"id": w["phone"]["id"], "name": "phone", "gateway": ids["g1"],
                                   "served": True}]
    assert top[""]["pairs"] == [] and top[""]["down_links"] == []
    assert {names[h["host_id"]]: h["online"] for h in top[""]["hosts"]} == dict.fromkeys(ids, False)


def test_a_gateway_a_host_found_down_shows_where_its_agent_sends_the_range_now_and_the_down_link(
        api, world):
    w, ids = world, world["ids"]
    was = lan_route(topology(api, w)["u1"])["gateway"]
    other = ids["g2"] if was == ids["g1"] else ids["g1"]
    w["clock"]["now"] = NOW + 5
    report(w, "u1", down=(next(n for n, i in ids.items() if i == was),))
    w["clock"]["now"] = NOW + 8
    top = topology(api, w)
    # u1's agent skips the gateway its probes found down: the map says where the LAN goes now
    assert lan_route(top["u1"])["gateway"] == lan_route(top["u1"])["next_hop"] == other
    assert top["u1"]["down"] == [was] and top["u1"]["online"] is True
    assert top["u1"]["last_seen"] is not None
    assert top[""]["down_links"] == [{"from": ids["u1"], "to": was, "loss_pct": 100, "age_s": 3}]
    # nobody else's choice moved on u1's word
    assert lan_route(top["u2"])["gateway"] == carrier(api, w, "u2", LAN)

    # the failover places u1 on the other gateway (on the roles): first in its ranking from now on
    app_module.failover_report({"v": protocol.VERSION, "type": "status", "agent_version": "1.0",
                                "host_id": ids["u1"], "latency": [
                                    {"host": was, "rtt": None, "loss": 100, "up": False},
                                    {"host": other, "rtt": 5.0, "loss": 0, "up": True}]}, None)
    report(w, "u1")  # and its next report finds everything up
    route = lan_route(topology(api, w)["u1"])
    assert route["candidates"][0] == route["gateway"] == other == carrier(api, w, "u1", LAN)


def test_unknown_networks_and_non_admins_get_the_one_error_shape(api, world):
    code, out = api.call("GET", "/v1/networks/net_doesnotexist/topology")
    assert code == 404 and out["error"]["code"] == "not_found"
    assert "net_doesnotexist" in out["error"]["message"]
    code, out = api.call("GET", f"{world['base']}/topology", token=None)
    assert code == 401 and set(out["error"]) == {"code", "message"}
    code, out = api.call("GET", f"{world['base']}/topology", token=world["hosts"]["u1"]["host_token"])
    assert code in (401, 403) and set(out) == {"error"}


def test_the_openapi_document_describes_it(api):
    doc = api.ok("GET", "/v1/openapi.json", token=None)
    op = doc["paths"]["/v1/networks/{network_id}/topology"]["get"]
    assert op["security"] == [{"adminKey": []}]
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    props = doc["components"]["schemas"][schema]["properties"]
    assert {"hosts", "clients", "pairs", "down_links"} <= set(props)
