"""Relays through the API, on DynamoDB Local: every route and refusal, the one broadcast a change
makes, what ``/config`` shows the relayed host, its relay and the others, relays at enrollment,
and a relay that is deleted or leaves releasing its hosts."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain import protocol
from chalicelib.service import Service

from .conftest import Api, host_body
from .test_gateways import _config, _error

V4, V6 = "100.64.0.0/16", "fd00:64::/64"


@pytest.fixture
def net(api: Api) -> dict[str, Any]:
    out = api.ok("POST", "/v1/networks", {"name": "office", "ipv4_cidr": V4, "ipv6_cidr": V6})
    out["token"] = api.ok("POST", "/v1/enrollment-keys", {"networks": [out["id"]], "uses": 20})["token"]
    return out


def _join(api: Api, token: str, name: str) -> dict[str, Any]:
    return api.ok("POST", "/v1/hosts", host_body(name), token=token)


@pytest.fixture
def hosts(api: Api, net: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Members r (the relay), a, b and c."""
    return {n: _join(api, net["token"], n) for n in ("r", "a", "b", "c")}


def _id(hosts: dict[str, dict[str, Any]], name: str) -> str:
    return hosts[name]["host"]["id"]


def _path(net: dict[str, Any], tail: str = "") -> str:
    return f"/v1/networks/{net['id']}{tail}"


def _peers(api: Api, host: dict[str, Any]) -> dict[str, list[str]]:
    return {p["host_id"]: p["allowed_ips"] for p in _config(api, host)["peers"]}


def _broadcasts(service: Service, net: dict[str, Any]) -> list[Any]:
    return [protocol.decode(p) for p in service.deps.publisher.on(protocol.network_topic(net["id"]))]


def _addresses(host: dict[str, Any]) -> list[str]:
    (a,) = host["host"]["addresses"]
    return [f"{a['ipv4']}/32", f"{a['ipv6']}/128"]


def test_put_relays_hosts_in_one_broadcast_and_config_routes_them_through_the_relay(api, service, net, hosts):
    r, a, b, c = (_id(hosts, n) for n in "rabc")
    before = len(_broadcasts(service, net))
    out = api.ok("PUT", _path(net, f"/relays/{r}"), {"relayed": [a, b]})
    assert out["host_id"] == r and [m["host_id"] for m in out["relayed"]] == sorted([a, b])
    (delta,) = _broadcasts(service, net)[before:]
    assert {m.host_id: m.role.relayed_by for m in delta.upsert} == {r: None, a: r, b: r}

    assert _peers(api, hosts["a"]) == {r: [V4, V6]}, "a relayed host peers with its relay alone"
    at_c = _peers(api, hosts["c"])
    assert set(at_c) == {r}, "the others reach a and b through the relay's entry"
    assert at_c[r][:2] == _addresses(hosts["r"])
    assert set(at_c[r]) == {*_addresses(hosts["r"]), *_addresses(hosts["a"]), *_addresses(hosts["b"])}
    at_r = _peers(api, hosts["r"])
    assert at_r[a] == _addresses(hosts["a"]) and at_r[c] == _addresses(hosts["c"])

    listed = api.ok("GET", _path(net, "/relays"))
    assert listed == {"relays": [out], "pairs": []}

    # The same again: nothing written, nothing sent. Exactly b now: a is direct again.
    api.ok("PUT", _path(net, f"/relays/{r}"), {"relayed": [b, a]})
    assert len(_broadcasts(service, net)) == before + 1
    api.ok("PUT", _path(net, f"/relays/{r}"), {"relayed": [b]})
    (delta,) = _broadcasts(service, net)[before + 1:]
    assert {m.host_id: m.role.relayed_by for m in delta.upsert} == {r: None, a: None}
    assert set(_peers(api, hosts["a"])) == {r, c}, "no longer relayed: it peers with everyone but b"

    api.ok("DELETE", _path(net, f"/relays/{r}"))
    assert api.ok("GET", _path(net, "/relays")) == {"relays": [], "pairs": []}
    assert set(_peers(api, hosts["b"])) == {r, a, c}
    code, err, msg = _error(api, "DELETE", _path(net, f"/relays/{r}"))
    assert (code, err) == (404, "not_found") and f"host {r} relays no host of network {net['id']}" in msg


def test_what_a_relay_cannot_do_is_refused_naming_the_rule_and_writes_nothing(api, service, net, hosts):
    r, a, b, c = (_id(hosts, n) for n in "rabc")
    api.ok("PUT", _path(net, f"/relays/{r}"), {"relayed": [a]})
    before = len(_broadcasts(service, net))
    cases = [
        (f"/relays/{a}", [b], 409, "relay_chain", f"host {a} cannot relay {b}: it is relayed itself"),
        (f"/relays/{b}", [b], 409, "relay_itself", f"host {b} cannot relay itself"),
        (f"/relays/{b}", [r], 409, "relay_chain",
         f"host {r} cannot relay {a}: it is relayed itself (by {b})"),
        ("/relays/host_000000000000", [b], 404, "not_found", "host host_000000000000 does not exist"),
        (f"/relays/{b}", ["host_000000000000"], 404, "not_found", "host host_000000000000 does not exist"),
        (f"/relays/{b}", ["nope"], 400, "invalid_input", "relayed"),
    ]
    for tail, relayed, status, code, words in cases:
        got = _error(api, "PUT", _path(net, tail), {"relayed": relayed})
        assert got[:2] == (status, code) and words in got[2], (tail, relayed, got)
    api.ok("PUT", _path(net, f"/gateways/{c}"), {"remote_access": True})
    got = _error(api, "PUT", _path(net, f"/relays/{r}"), {"relayed": [a, c]})
    assert got[:2] == (409, "relayed_gateway")
    assert f"host {c} is a gateway for remote-access clients" in got[2]
    assert len(_broadcasts(service, net)) == before + 1  # the gateway only
    assert api.ok("GET", _path(net, "/relays"))["relays"][0]["relayed"][0]["host_id"] == a

    other = api.ok("POST", "/v1/networks", {"name": "other", "ipv4_cidr": "100.65.0.0/16"})
    got = _error(api, "PUT", f"/v1/networks/{other['id']}/relays/{r}", {"relayed": []})
    assert got[:2] == (409, "not_a_member") and f"host {r} is not a member of network {other['id']}" in got[2]
    too_many = [f"host_{i:012d}" for i in range(48)]
    got = _error(api, "PUT", _path(net, f"/relays/{r}"), {"relayed": too_many})
    assert got[0] == 400 and "47" in got[2]


def test_an_agent_of_schema_2_is_told_to_upgrade_once_its_network_uses_relays(api, net, hosts):
    a = hosts["a"]
    path = f"/v1/hosts/{a['host']['id']}/config?v=2"
    api.ok("PUT", _path(net, f"/gateways/{_id(hosts, 'c')}"), {"egress": ["10.20.0.0/16"]})
    assert api.ok("GET", path, token=a["host_token"])["catch_ups"] == []  # gateways: schema 2 is enough
    api.ok("PUT", _path(net, f"/relays/{_id(hosts, 'r')}"), {"relayed": [_id(hosts, "b")]})
    code, out = api.call("GET", path, token=a["host_token"])
    assert code == 400 and out["error"]["code"] == "agent_outdated", out
    assert "use relays, which need schema 3: upgrade skymesh-agent" in out["error"]["message"]


def test_a_host_joining_with_a_relay_key_is_relayed_from_its_first_config(api, service, net, hosts):
    r = _id(hosts, "r")
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 2, "relay": r})
    assert key["relay"] == r and api.ok("GET", f"/v1/enrollment-keys/{key['id']}")["relay"] == r
    before = len(_broadcasts(service, net))
    joined = _join(api, key["token"], "behind-nat")
    (delta,) = _broadcasts(service, net)[before:]
    assert [(m.host_id, m.role.relayed_by) for m in delta.upsert] == [(joined["host"]["id"], r)]
    assert _peers(api, joined) == {r: [V4, V6]}
    assert joined["host"]["id"] not in _peers(api, hosts["a"])
    assert set(_addresses(joined)) <= set(_peers(api, hosts["a"])[r])

    # The relay leaves the network: its hosts go direct in the same write, and the key refuses.
    api.ok("DELETE", f"/v1/hosts/{r}")
    assert set(_peers(api, joined)) == {_id(hosts, n) for n in "abc"}
    assert api.ok("GET", _path(net, "/relays")) == {"relays": [], "pairs": []}
    code, out = api.call("POST", "/v1/hosts", host_body("late"), token=key["token"])
    assert code == 409 and out["error"]["code"] == "relay_gone", out
    assert f"the relay {r} of this enrollment key is no longer a member of network {net['id']}" in \
        out["error"]["message"]
    assert api.ok("GET", f"/v1/enrollment-keys/{key['id']}")["uses_left"] == 1, "nothing half written"


def test_a_relay_key_is_refused_when_its_relay_is_not_in_every_network(api, net, hosts):
    other = api.ok("POST", "/v1/networks", {"name": "other", "ipv4_cidr": "100.65.0.0/16"})
    r = _id(hosts, "r")
    code, out = api.call("POST", "/v1/enrollment-keys", {"networks": [net["id"], other["id"]], "uses": 1,
                                                          "relay": r})
    assert code == 409 and out["error"]["code"] == "not_a_member", out
    assert f"relay {r} is not a member of network {other['id']}" in out["error"]["message"]
    code, out = api.call("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 1,
                                                          "relay": "host_000000000000"})
    assert code == 404 and "relay host_000000000000 does not exist" in out["error"]["message"]


def test_a_relay_leaving_the_network_releases_its_hosts_in_one_broadcast(api, service, net, hosts):
    r, a, b = (_id(hosts, n) for n in "rab")
    api.ok("PUT", _path(net, f"/relays/{r}"), {"relayed": [a, b]})
    before = len(_broadcasts(service, net))
    service.hosts.leave_network(net["id"], [r])
    (delta,) = _broadcasts(service, net)[before:]
    assert delta.remove == (r,) and {m.host_id: m.role.relayed_by for m in delta.upsert} == {a: None, b: None}
    assert set(_peers(api, hosts["a"])) == {b, _id(hosts, "c")}


def test_a_catch_up_over_deltas_logged_in_an_older_schema_is_a_full_snapshot(api, service, net, hosts):
    """After an upgrade the delta log still holds deltas of the schema before: an agent that
    catches up over them gets the full snapshot, never an error."""
    a = hosts["a"]
    seq = api.ok("GET", _path(net))["seq"]
    api.ok("PUT", _path(net, f"/relays/{_id(hosts, 'r')}"), {"relayed": [_id(hosts, "b")]})
    (_, payload), = service.deps.store.deltas_since(net["id"], seq, limit=1)
    old = payload.replace(b'"v":%d' % protocol.VERSION, b'"v":%d' % (protocol.VERSION - 1))
    service.deps.store.log_delta(net["id"], seq + 1, old, expires_at=2**40, keep=100)
    cfg = api.ok("GET", f"/v1/hosts/{a['host']['id']}/config?v={protocol.VERSION}&known={net['id']}:{seq}",
                 token=a["host_token"])
    assert cfg["catch_ups"] == [] and [n["seq"] for n in cfg["networks"]] == [seq + 1]


def test_a_gateways_auto_relay_is_stored_shown_and_sent(api, service, net, hosts):
    g = _id(hosts, "c")
    out = api.ok("PUT", _path(net, f"/gateways/{g}"), {"egress": ["10.20.0.0/16"]})
    assert out["auto_relay"] is True, "every gateway is an auto-relay unless turned off"
    before = len(_broadcasts(service, net))
    out = api.ok("PUT", _path(net, f"/gateways/{g}"), {"auto_relay": False})
    assert out["auto_relay"] is False and out["egress"] == ["10.20.0.0/16"]
    assert api.ok("GET", _path(net, f"/gateways/{g}"))["auto_relay"] is False
    (delta,) = _broadcasts(service, net)[before:]
    (member,) = delta.upsert
    assert member.role.gateway is not None and member.role.gateway.auto_relay is False
    (record,) = [m for m in _config(api, hosts["a"])["members"] if m["host"] == g]
    assert record["role"]["gateway"]["auto_relay"] is False
