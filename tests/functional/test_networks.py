from __future__ import annotations

import ipaddress

import pytest

from .conftest import host_body

pytestmark = pytest.mark.memory_store  # about the API, not the database: no DynamoDB Local


def test_create_network_gets_ids_defaults_and_a_random_ula_when_no_ipv6(api):
    net = api.ok("POST", "/v1/networks", {"name": "office", "ipv4_cidr": "100.64.0.0/16"})
    assert net["id"].startswith("net_")
    assert (net["listen_port"], net["keepalive"], net["mtu"], net["seq"]) == (51820, 25, 1420, 0)
    v6 = ipaddress.ip_network(net["ipv6_cidr"])
    assert v6.prefixlen == 64 and v6.subnet_of(ipaddress.ip_network("fd00::/8"))
    assert api.ok("GET", f"/v1/networks/{net['id']}") == net
    assert [n["id"] for n in api.ok("GET", "/v1/networks")["networks"]] == [net["id"]]


def test_overlapping_ranges_and_taken_names_are_refused_with_409(api):
    api.ok("POST", "/v1/networks", {"name": "a", "ipv4_cidr": "100.64.0.0/16",
                                    "ipv6_cidr": "fd00:aa::/64"})
    code, body = api.call("POST", "/v1/networks", {"name": "b", "ipv4_cidr": "100.64.128.0/24"})
    assert code == 409 and body["error"]["code"] == "range_overlap"
    assert "'a'" in body["error"]["message"]
    code, body = api.call("POST", "/v1/networks", {"name": "b", "ipv4_cidr": "100.65.0.0/16",
                                                   "ipv6_cidr": "fd00:aa::/48"})
    assert code == 409 and body["error"]["code"] == "range_overlap"
    code, body = api.call("POST", "/v1/networks", {"name": "a", "ipv4_cidr": "100.66.0.0/16"})
    assert code == 409 and body["error"]["code"] == "name_taken"


def test_malformed_and_unusable_ranges_are_400_with_a_hint(api):
    cases = {
        "10.0.0.0/33": "not a valid network range",
        "10.0.0.1/24": "did you mean 10.0.0.0/24",
        "fd00::/64": "IPv6 range",
        "10.0.0.0/30": "/30",
        "224.0.0.0/8": "multicast",
        "banana": "not a valid network range",
    }
    for cidr, hint in cases.items():
        code, body = api.call("POST", "/v1/networks", {"name": "x", "ipv4_cidr": cidr})
        assert code == 400, cidr
        assert hint in body["error"]["message"], (cidr, body)
    code, body = api.call("POST", "/v1/networks", {"name": "x", "ipv4_cidr": "10.1.0.0/16",
                                                   "ipv6_cidr": "fd00::/124"})
    assert code == 400 and "/124" in body["error"]["message"]


def test_patch_changes_settings_and_refuses_range_changes(api, service):
    net = api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/16"})
    out = api.ok("PATCH", f"/v1/networks/{net['id']}", {"keepalive": 15, "mtu": 1380, "name": "n2"})
    assert (out["keepalive"], out["mtu"], out["name"]) == (15, 1380, "n2")
    assert out["seq"] == 1, "a keepalive/MTU change is broadcast to hosts"
    msgs = service.deps.publisher.on(f"sm/n/{net['id']}")
    assert len(msgs) == 1 and b'"settings"' in msgs[0]
    code, body = api.call("PATCH", f"/v1/networks/{net['id']}", {"ipv4_cidr": "100.70.0.0/16"})
    assert code == 400 and "cannot be changed" in body["error"]["message"]
    code, _ = api.call("PATCH", f"/v1/networks/{net['id']}", {"mtu": 100})
    assert code == 400


def test_delete_is_409_while_hosts_are_members_and_force_removes_them_cleanly(api, service):
    net = api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/16"})
    other = api.ok("POST", "/v1/networks", {"name": "o", "ipv4_cidr": "100.65.0.0/16"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"], other["id"]], "uses": 2})
    host = api.ok("POST", "/v1/hosts", host_body("h1"), token=key["token"])["host"]

    code, body = api.call("DELETE", f"/v1/networks/{net['id']}")
    assert code == 409 and body["error"]["code"] == "network_not_empty"
    api.ok("DELETE", f"/v1/networks/{net['id']}?force=true")

    assert api.call("GET", f"/v1/networks/{net['id']}")[0] == 404
    h = api.ok("GET", f"/v1/hosts/{host['id']}")
    assert [a["network_id"] for a in h["addresses"]] == [other["id"]]
    assert service.deps.identity.networks[host["id"]] == (other["id"],)
    # Its broker-side resources (on AWS: thing group and policy) went with it, only once.
    assert service.deps.identity.removed_networks == [net["id"]]
    # The deleted network's range is free again.
    api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/16"})
    # An enrollment key naming the deleted network says so.
    code, body = api.call("POST", "/v1/hosts", host_body("h2"), token=key["token"])
    assert code == 409 and "no longer exists" in body["error"]["message"]
