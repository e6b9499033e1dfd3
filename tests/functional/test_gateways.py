"""Gateways and members' internet use through the API: every route and every refusal, the one
broadcast a change makes, and what another member's ``/config`` shows of a gateway."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

import pytest

from chalicelib.domain import ipam, plan, protocol
from chalicelib.domain.ids import ClientId, HostId, NetworkId, new_id
from chalicelib.domain.models import Client
from chalicelib.service import Service, topology

from .conftest import Api, host_body, wg_public_key

# About the API and the plan; tests/contract holds the in-memory store to DynamoDB's behaviour.
pytestmark = pytest.mark.memory_store

V4, OTHER_V4 = "100.64.0.0/16", "100.65.0.0/16"
LAN, LAN6 = "10.20.0.0/16", "fd12:3456::/48"


@dataclass
class Net:
    id: str
    key: str  # an enrollment token of this network

    def path(self, tail: str = "") -> str:
        return f"/v1/networks/{self.id}{tail}"


def _network(api: Api, name: str, v4: str) -> Net:
    net = api.ok("POST", "/v1/networks", {"name": name, "ipv4_cidr": v4})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 10})
    return Net(net["id"], key["token"])


def _join(api: Api, token: str, name: str) -> dict[str, Any]:
    """A registered host: its record (``host``) and its token (``host_token``)."""
    return api.ok("POST", "/v1/hosts", host_body(name), token=token)


@pytest.fixture
def net(api: Api) -> Net:
    return _network(api, "office", V4)


@pytest.fixture
def hosts(api: Api, net: Net) -> dict[str, dict[str, Any]]:
    """Members g (the gateway), a and b of ``net``."""
    return {n: _join(api, net.key, n) for n in ("g", "a", "b")}


def _id(hosts: dict[str, dict[str, Any]], name: str) -> str:
    return hosts[name]["host"]["id"]


def _error(api: Api, method: str, path: str, body: Any = None) -> tuple[int, str, str]:
    code, out = api.call(method, path, body)
    assert set(out) == {"error"} and set(out["error"]) == {"code", "message"}, out
    return code, out["error"]["code"], out["error"]["message"]


def _config(api: Api, host: dict[str, Any]) -> dict[str, Any]:
    """The host's one network in its ``/config`` (schema 2: gateways need it)."""
    cfg = api.ok("GET", f"/v1/hosts/{host['host']['id']}/config?v={protocol.VERSION}",
                 token=host["host_token"])
    (network,) = cfg["networks"]
    return network


def _peer(network: dict[str, Any], host_id: str) -> dict[str, Any]:
    return next(p for p in network["peers"] if p["host_id"] == host_id)


def _planned(service: Service, net: Net, viewer: dict[str, Any], target: str) -> tuple[str, ...]:
    """The allowed IPs of ``target`` at ``viewer`` in the plan of the stored records, clients
    included (what ``/config`` shows once it reads the clients too)."""
    records = topology.records(service.deps.store, net.id)
    assert records is not None
    found = plan.peer(records, HostId(viewer["host"]["id"]), target)
    assert found is not None
    return found.allowed_ips


def _broadcasts(service: Service, net: Net) -> list[Any]:
    return [protocol.decode(p) for p in service.deps.publisher.on(protocol.network_topic(net.id))]


def _client(service: Service, net: Net, gateway: str, name: str = "phone") -> Client:
    """A remote-access client of ``gateway``, written to the store as the clients' use case would."""
    store = service.deps.store
    network, members = store.network_snapshot(net.id)
    used = {a for m in members for a in (m.ipv4, m.ipv6)}
    rng = random.Random()
    client = Client(id=ClientId(new_id("client", rng)), network_id=NetworkId(net.id), name=name,
                    public_key=wg_public_key(), ipv4=ipam.allocate(network.ipv4_cidr, used, rng),
                    ipv6=ipam.allocate(network.ipv6_cidr, used, rng), gateway=HostId(gateway))
    change = replace(service.stream.new_changes([NetworkId(net.id)])[0], client_ids=(client.id,))
    store.create_client(client, change=change)
    service.stream.send([change])
    return client


# ------------------------------------------------------------------------------ the routes
def test_put_makes_a_member_a_gateway_and_get_and_list_show_it(api, net, hosts):
    g = hosts["g"]["host"]
    out = api.ok("PUT", net.path(f"/gateways/{g['id']}"),
                 {"remote_access": True, "egress": ["10.20.0.0/16", "FD12:3456:0::/48"]})
    assert out == {"network_id": net.id, "host_id": g["id"], "name": "g",
                   "ipv4": g["addresses"][0]["ipv4"], "ipv6": g["addresses"][0]["ipv6"],
                   "remote_access": True, "egress": [LAN, LAN6], "internet": False,
                   "endpoint": None, "effective_endpoint": g["endpoints"][0], "auto_relay": True}
    assert api.ok("GET", net.path(f"/gateways/{g['id']}")) == out
    assert api.ok("GET", net.path("/gateways")) == {"gateways": [out]}

    # PUT keeps what it is not given; an endpoint of its own, then back to the host's.
    out = api.ok("PUT", net.path(f"/gateways/{g['id']}"),
                 {"internet": True, "endpoint": "gw.example.com:443"})
    assert (out["remote_access"], out["egress"], out["internet"]) == (True, [LAN, LAN6], True)
    assert out["endpoint"] == out["effective_endpoint"] == "gw.example.com:443"
    out = api.ok("PUT", net.path(f"/gateways/{g['id']}"), {"endpoint": None, "egress": []})
    assert (out["endpoint"], out["effective_endpoint"], out["egress"]) == (None, g["endpoints"][0], [])

    api.ok("DELETE", net.path(f"/gateways/{g['id']}"))
    assert api.ok("GET", net.path("/gateways")) == {"gateways": []}
    code, err, msg = _error(api, "GET", net.path(f"/gateways/{g['id']}"))
    assert (code, err) == (404, "not_found") and f"host {g['id']} is not a gateway of network {net.id}" in msg


def test_a_put_is_one_broadcast_of_the_member_with_its_role_and_the_same_again_is_none(api, service, net,
                                                                                      hosts):
    g = _id(hosts, "g")
    before = len(_broadcasts(service, net))

    api.ok("PUT", net.path(f"/gateways/{g}"), {"egress": [LAN]})

    (delta,) = _broadcasts(service, net)[before:]
    assert isinstance(delta, protocol.Delta) and delta.remove == ()
    (member,) = delta.upsert
    assert member.host_id == g and member.role.gateway is not None and member.role.gateway.egress == (LAN,)
    assert delta.seq == api.ok("GET", net.path())["seq"]

    stored = service.deps.store.get_host(g)
    api.ok("PUT", net.path(f"/gateways/{g}"), {"egress": [LAN], "remote_access": False})
    assert len(_broadcasts(service, net)) == before + 1, "nothing changed: nothing sent"
    assert service.deps.store.get_host(g).revision == stored.revision, "and nothing written"


def test_another_members_config_routes_the_egress_through_the_gateway_until_it_is_unset(api, net, hosts):
    g = _id(hosts, "g")
    assert LAN not in _peer(_config(api, hosts["a"]), g)["allowed_ips"]

    api.ok("PUT", net.path(f"/gateways/{g}"), {"egress": [LAN, LAN6]})

    seen = _config(api, hosts["a"])
    assert _peer(seen, g)["allowed_ips"][-2:] == [LAN, LAN6]
    assert {LAN, LAN6} <= set(seen["routes"])
    assert LAN not in _peer(seen, _id(hosts, "b"))["allowed_ips"]
    assert LAN not in _config(api, hosts["g"])["routes"], "the gateway does not route its LAN into the tunnel"
    # The records the agent computes its device from carry the role too.
    (record,) = [m for m in seen["members"] if m["host"] == g]
    assert record["role"] == {"gateway": {"remote_access": False, "egress": [LAN, LAN6], "internet": False,
                                          "endpoint": None, "auto_relay": True}}

    api.ok("DELETE", net.path(f"/gateways/{g}"))

    seen = _config(api, hosts["a"])
    assert LAN not in _peer(seen, g)["allowed_ips"] and LAN not in seen["routes"]
    assert LAN6 not in seen["routes"]
    assert [m for m in seen["members"] if "role" in m] == []


def test_patch_member_chooses_an_internet_gateway_and_full_or_split_tunnel(api, service, net, hosts):
    g, a = _id(hosts, "g"), _id(hosts, "a")
    api.ok("PUT", net.path(f"/gateways/{g}"), {"internet": True})
    before = len(_broadcasts(service, net))

    out = api.ok("PATCH", net.path(f"/members/{a}"), {"internet_gateway": g, "full_tunnel": True})
    assert (out["host_id"], out["internet_gateway"], out["full_tunnel"], out["gateway"]) == (a, g, True, None)
    (delta,) = _broadcasts(service, net)[before:]
    assert [(m.host_id, m.role.internet_gateway, m.role.full_tunnel) for m in delta.upsert] == [(a, g, True)]
    assert "0.0.0.0/0" in _peer(_config(api, hosts["a"]), g)["allowed_ips"]
    assert "0.0.0.0/0" not in _peer(_config(api, hosts["b"]), g)["allowed_ips"]
    assert api.ok("PATCH", net.path(f"/members/{a}"), {"full_tunnel": True}) == out
    assert len(_broadcasts(service, net)) == before + 1, "the same again: nothing sent"

    out = api.ok("PATCH", net.path(f"/members/{a}"), {"full_tunnel": False})
    assert (out["internet_gateway"], out["full_tunnel"]) == (g, False)
    assert "0.0.0.0/0" not in _peer(_config(api, hosts["a"]), g)["allowed_ips"]
    out = api.ok("PATCH", net.path(f"/members/{a}"), {"internet_gateway": None})
    assert (out["internet_gateway"], out["full_tunnel"]) == (None, False)
    assert service.deps.store.get_host(a).roles == {}


# ------------------------------------------------------------------------------ refusals
def test_unknown_network_or_host_is_404(api, net, hosts):
    g = _id(hosts, "g")
    ghost_net, ghost_host = "net_doesnotexist0", "host_doesnotexist0"
    for method, path, body in (("PUT", f"/v1/networks/{ghost_net}/gateways/{g}", {"internet": True}),
                               ("GET", f"/v1/networks/{ghost_net}/gateways/{g}", None),
                               ("GET", f"/v1/networks/{ghost_net}/gateways", None),
                               ("DELETE", f"/v1/networks/{ghost_net}/gateways/{g}", None),
                               ("PATCH", f"/v1/networks/{ghost_net}/members/{g}", {"full_tunnel": False})):
        code, err, msg = _error(api, method, path, body)
        assert (code, err) == (404, "not_found"), (method, msg)
        assert f"network {ghost_net} does not exist" in msg, (method, msg)
    for method, path, body in (("PUT", net.path(f"/gateways/{ghost_host}"), {"internet": True}),
                               ("GET", net.path(f"/gateways/{ghost_host}"), None),
                               ("DELETE", net.path(f"/gateways/{ghost_host}"), None),
                               ("PATCH", net.path(f"/members/{ghost_host}"), {"full_tunnel": False})):
        code, err, msg = _error(api, method, path, body)
        assert (code, err) == (404, "not_found") and f"host {ghost_host} does not exist" in msg, (method, msg)
    code, err, _ = _error(api, "DELETE", net.path(f"/gateways/{g}"))
    assert (code, err) == (404, "not_found"), "g is no gateway"
    assert api.call("PUT", net.path(f"/gateways/{g}"), {"internet": True}, token=None)[0] == 401


def test_a_host_that_is_not_a_member_is_refused(api, net, hosts):
    other = _network(api, "lab", OTHER_V4)
    stranger = _join(api, other.key, "s")["host"]["id"]
    for method, path, body in (("PUT", net.path(f"/gateways/{stranger}"), {"internet": True}),
                               ("GET", net.path(f"/gateways/{stranger}"), None),
                               ("PATCH", net.path(f"/members/{stranger}"), {"full_tunnel": False})):
        code, err, msg = _error(api, method, path, body)
        assert (code, err) == (409, "not_a_member"), (method, code, msg)
        assert f"host {stranger} is not a member of network {net.id}" in msg


def test_a_gateway_that_does_nothing_is_refused_saying_what_a_gateway_can_do(api, net, hosts):
    g = _id(hosts, "g")
    for body in ({}, {"remote_access": False, "egress": [], "internet": False}):
        code, err, msg = _error(api, "PUT", net.path(f"/gateways/{g}"), body)
        assert (code, err) == (400, "empty_gateway")
        assert "remote_access" in msg and "egress" in msg and "internet" in msg and "DELETE" in msg
    api.ok("PUT", net.path(f"/gateways/{g}"), {"internet": True})
    assert _error(api, "PUT", net.path(f"/gateways/{g}"), {"internet": False})[:2] == (400, "empty_gateway")


def test_egress_that_is_no_range_is_400_saying_what_to_send(api, net, hosts):
    g = _id(hosts, "g")
    code, err, msg = _error(api, "PUT", net.path(f"/gateways/{g}"), {"egress": ["10.20.0.1/16"]})
    assert (code, err) == (400, "invalid_input") and "10.20.0.0/16" in msg
    for bad in ("10.20.0.0", "0.0.0.0/0", "224.0.0.0/4", "300.1.1.1/8"):
        code, err, msg = _error(api, "PUT", net.path(f"/gateways/{g}"), {"egress": [bad]})
        assert (code, err) == (400, "invalid_input") and bad in msg, msg
    many = [f"10.{i}.0.0/16" for i in range(65)]
    assert _error(api, "PUT", net.path(f"/gateways/{g}"), {"egress": many})[:2] == (400, "invalid_input")
    code, err, msg = _error(api, "PUT", net.path(f"/gateways/{g}"), {"endpoint": "nope"})
    assert (code, err) == (400, "invalid_input") and "endpoint" in msg
    assert api.ok("GET", net.path("/gateways")) == {"gateways": []}, "nothing was written"


def test_egress_overlapping_a_networks_range_is_409_naming_the_network(api, net, hosts):
    g = _id(hosts, "g")
    other = _network(api, "lab", OTHER_V4)
    for prefix, named in (("100.64.10.0/24", "office"), ("100.65.0.0/24", "lab"),
                          ("100.0.0.0/8", "")):  # both: either is named
        code, err, msg = _error(api, "PUT", net.path(f"/gateways/{g}"), {"egress": [prefix]})
        assert (code, err) == (409, "range_overlap") and f"the range of network {named}" in msg, msg
    ipv6 = api.ok("GET", net.path())["ipv6_cidr"]
    code, err, msg = _error(api, "PUT", net.path(f"/gateways/{g}"), {"egress": [ipv6]})
    assert (code, err) == (409, "range_overlap") and net.id in msg
    assert other.id


def test_egress_overlapping_another_gateways_is_409_naming_it(api, net, hosts):
    g, a = _id(hosts, "g"), _id(hosts, "a")
    api.ok("PUT", net.path(f"/gateways/{g}"), {"egress": [LAN]})
    code, err, msg = _error(api, "PUT", net.path(f"/gateways/{a}"), {"egress": ["10.20.30.0/24"]})
    assert (code, err) == (409, "range_overlap") and g in msg and a in msg and LAN in msg
    beside = api.ok("PUT", net.path(f"/gateways/{a}"), {"egress": ["10.21.0.0/16"]})
    assert beside["egress"] == ["10.21.0.0/16"]


def test_internet_gateway_chains_are_refused_both_ways(api, net, hosts):
    g, a, b = _id(hosts, "g"), _id(hosts, "a"), _id(hosts, "b")
    api.ok("PUT", net.path(f"/gateways/{g}"), {"internet": True})
    api.ok("PATCH", net.path(f"/members/{a}"), {"internet_gateway": g, "full_tunnel": True})

    # a host that uses an internet gateway cannot become one
    code, err, msg = _error(api, "PUT", net.path(f"/gateways/{a}"), {"internet": True})
    assert (code, err) == (409, "internet_gateway_chain") and a in msg and g in msg
    # an internet gateway cannot use another one
    api.ok("PUT", net.path(f"/gateways/{b}"), {"internet": True})
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{b}"), {"internet_gateway": g})
    assert (code, err) == (409, "internet_gateway_chain") and b in msg
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{g}"), {"internet_gateway": g})
    assert code == 409 and g in msg


def test_full_tunnel_without_an_internet_gateway_and_a_gateway_without_internet_are_refused(api, net, hosts):
    g, a = _id(hosts, "g"), _id(hosts, "a")
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{a}"), {"full_tunnel": True})
    assert (code, err) == (400, "no_internet_gateway") and "internet_gateway" in msg
    api.ok("PUT", net.path(f"/gateways/{g}"), {"remote_access": True})
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{a}"),
                            {"internet_gateway": g, "full_tunnel": True})
    assert (code, err) == (409, "not_an_internet_gateway") and g in msg
    code, err, _ = _error(api, "PATCH", net.path(f"/members/{a}"), {"internet_gateway": "nohost"})
    assert (code, err) == (400, "invalid_input")


def test_a_host_uses_at_most_one_internet_gateway_across_its_networks(api, net):
    other = _network(api, "lab", OTHER_V4)
    both = api.ok("POST", "/v1/enrollment-keys", {"networks": [net.id, other.id], "uses": 1})["token"]
    a = _join(api, both, "a")["host"]["id"]
    g1, g2 = _join(api, net.key, "g1")["host"]["id"], _join(api, other.key, "g2")["host"]["id"]
    api.ok("PUT", net.path(f"/gateways/{g1}"), {"internet": True})
    api.ok("PUT", other.path(f"/gateways/{g2}"), {"internet": True})
    api.ok("PATCH", net.path(f"/members/{a}"), {"internet_gateway": g1, "full_tunnel": True})

    code, err, msg = _error(api, "PATCH", other.path(f"/members/{a}"), {"internet_gateway": g2})
    assert (code, err) == (409, "second_internet_gateway") and g1 in msg and net.id in msg

    api.ok("PATCH", net.path(f"/members/{a}"), {"internet_gateway": None})
    assert api.ok("PATCH", other.path(f"/members/{a}"), {"internet_gateway": g2})["internet_gateway"] == g2


def test_a_gateway_in_use_by_internet_hosts_is_not_dropped_unless_forced(api, service, net, hosts):
    g, a = _id(hosts, "g"), _id(hosts, "a")
    api.ok("PUT", net.path(f"/gateways/{g}"), {"internet": True, "egress": [LAN]})
    api.ok("PATCH", net.path(f"/members/{a}"), {"internet_gateway": g, "full_tunnel": True})

    code, err, msg = _error(api, "PUT", net.path(f"/gateways/{g}"), {"internet": False})
    assert (code, err) == (409, "gateway_in_use") and a in msg
    code, err, msg = _error(api, "DELETE", net.path(f"/gateways/{g}"))
    assert (code, err) == (409, "gateway_in_use") and a in msg and "force" in msg
    assert api.ok("GET", net.path(f"/gateways/{g}"))["internet"] is True

    api.ok("DELETE", net.path(f"/gateways/{g}?force=true"))
    assert api.call("GET", net.path(f"/gateways/{g}"))[0] == 404
    assert service.deps.store.get_host(a).roles == {}, "its use of the gateway ended with it"
    assert "0.0.0.0/0" not in _peer(_config(api, hosts["a"]), g)["allowed_ips"]


def test_delete_of_a_gateway_with_clients_is_409_naming_them_unless_forced(api, service, net, hosts):
    g = _id(hosts, "g")
    api.ok("PUT", net.path(f"/gateways/{g}"), {"remote_access": True, "egress": [LAN]})
    phone = _client(service, net, g, "phone")

    code, err, msg = _error(api, "DELETE", net.path(f"/gateways/{g}"))
    assert (code, err) == (409, "gateway_in_use") and phone.id in msg and "phone" in msg
    code, err, msg = _error(api, "PUT", net.path(f"/gateways/{g}"), {"remote_access": False})
    assert (code, err) == (409, "gateway_in_use") and phone.id in msg
    assert f"{phone.ipv4}/32" in _planned(service, net, hosts["a"], g)

    api.ok("DELETE", net.path(f"/gateways/{g}?force=true"))

    assert api.call("GET", net.path(f"/gateways/{g}"))[0] == 404
    assert service.deps.store.get_client(net.id, phone.id) is not None, "the client stays"
    addresses = hosts["g"]["host"]["addresses"][0]
    own = [f"{addresses['ipv4']}/32", f"{addresses['ipv6']}/128"]
    assert list(_planned(service, net, hosts["a"], g)) == own, "unserved: no route to it"
    seen = _config(api, hosts["a"])
    assert _peer(seen, g)["allowed_ips"] == own and LAN not in seen["routes"]
    # Made a gateway again, it serves the client again.
    api.ok("PUT", net.path(f"/gateways/{g}"), {"remote_access": True})
    assert f"{phone.ipv4}/32" in _planned(service, net, hosts["a"], g)


def test_an_internet_gateway_whose_host_was_deleted_blocks_no_later_change(api, net, hosts):
    g, a, b = _id(hosts, "g"), _id(hosts, "a"), _id(hosts, "b")
    api.ok("PUT", net.path(f"/gateways/{g}"), {"internet": True})
    api.ok("PATCH", net.path(f"/members/{a}"), {"internet_gateway": g, "full_tunnel": True})
    api.ok("DELETE", f"/v1/hosts/{g}")

    assert api.ok("PUT", net.path(f"/gateways/{b}"), {"egress": [LAN]})["egress"] == [LAN]
    api.ok("PUT", net.path(f"/gateways/{b}"), {"internet": True})
    out = api.ok("PATCH", net.path(f"/members/{a}"), {"internet_gateway": b})
    assert (out["internet_gateway"], out["full_tunnel"]) == (b, True)


def test_an_agent_of_an_older_schema_gets_an_upgrade_message_never_a_device_without_the_gateway(
        api: Api, net: Net, hosts: dict[str, dict[str, Any]]) -> None:
    a = hosts["a"]
    path = f"/v1/hosts/{a['host']['id']}/config"
    seq = api.ok("GET", net.path())["seq"]
    # Without gateways an agent of schema 1 (which names no v) is served as before, but with full
    # snapshots only: catch-ups are deltas of the current schema, which it would refuse.
    old = api.ok("GET", f"{path}?known={net.id}:{seq}", token=a["host_token"])
    assert old["catch_ups"] == [] and [n["network"]["id"] for n in old["networks"]] == [net.id]
    api.ok("PUT", net.path(f"/gateways/{_id(hosts, 'g')}"), {"egress": [LAN]})
    code, out = api.call("GET", path, token=a["host_token"])
    assert code == 400 and out["error"]["code"] == "agent_outdated", out
    assert "upgrade skymesh-agent" in out["error"]["message"]
    assert LAN in _peer(_config(api, a), _id(hosts, "g"))["allowed_ips"]  # schema 2 gets it
