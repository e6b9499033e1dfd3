"""HA gateways through the API: several gateways serve one egress range; each member's
``/config`` sends it to exactly one of them; an operator pins a member to one; a pin that
names a gateway of another range is refused, naming the gateways that serve it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from .conftest import Api
from .test_gateways import LAN, Net, _config, _error, _id, _join, _network

pytestmark = pytest.mark.memory_store


@pytest.fixture
def net(api: Api) -> Net:
    net = _network(api, "office", "100.64.0.0/16")
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net.id], "uses": 15})
    return Net(net.id, key["token"])


@pytest.fixture
def hosts(api: Api, net: Net) -> dict[str, dict[str, Any]]:
    """Gateways g1, g2, g3 serving LAN; members u0 … u11 using it."""
    out = {n: _join(api, net.key, n) for n in ("g1", "g2", "g3", *(f"u{i}" for i in range(12)))}
    for g in ("g1", "g2", "g3"):
        api.ok("PUT", net.path(f"/gateways/{_id(out, g)}"), {"egress": [LAN]})
    return out


def _carriers(network: dict[str, Any]) -> list[str]:
    return [p["host_id"] for p in network["peers"] if LAN in p["allowed_ips"]]


def test_every_member_sends_a_shared_range_to_exactly_one_of_its_gateways_and_they_share_the_members(
        api, net, hosts):
    gateways = {_id(hosts, g) for g in ("g1", "g2", "g3")}
    chosen = Counter()
    for name, host in hosts.items():
        network = _config(api, host)
        if name.startswith("g"):
            assert _carriers(network) == [] and LAN not in network["routes"]  # behind it, not in the tunnel
            continue
        (carrier,) = _carriers(network)
        assert carrier in gateways and LAN in network["routes"]
        chosen[carrier] += 1
    assert len(chosen) >= 2, f"12 members all on one of 3 gateways: {chosen}"  # by chance: 3 in 3^12


def test_a_pinned_member_uses_its_gateway_and_auto_sets_it_free(api, net, hosts):
    u = hosts["u0"]
    for g in ("g1", "g2", "g3"):
        gid = _id(hosts, g)
        m = api.ok("PATCH", net.path(f"/members/{_id(hosts, 'u0')}"), {"pinned": {LAN: gid}})
        assert m["pinned"] == {LAN: gid} and m["placed"] == {}
        assert _carriers(_config(api, u)) == [gid]
    m = api.ok("PATCH", net.path(f"/members/{_id(hosts, 'u0')}"), {"pinned": {LAN: None}})
    assert m["pinned"] == {}
    assert len(_carriers(_config(api, u))) == 1


def test_a_pin_to_a_gateway_that_does_not_serve_the_range_is_409_naming_those_that_do(api, net, hosts):
    other = _id(hosts, "u1")
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{_id(hosts, 'u0')}"), {"pinned": {LAN: other}})
    assert (code, err) == (409, "not_a_gateway_of_range"), msg
    assert other in msg and all(_id(hosts, g) in msg for g in ("g1", "g2", "g3"))
    code, err, msg = _error(api, "PATCH", net.path(f"/members/{_id(hosts, 'u0')}"),
                            {"pinned": {"10.20.0.1/16": _id(hosts, "g1")}})
    assert code == 400 and "10.20.0.1/16" in msg, msg


def test_a_gateway_that_stops_serving_the_range_leaves_its_pinned_members_to_the_others(api, net, hosts):
    g1 = _id(hosts, "g1")
    api.ok("PATCH", net.path(f"/members/{_id(hosts, 'u0')}"), {"pinned": {LAN: g1}})
    api.ok("PUT", net.path(f"/gateways/{g1}"), {"egress": ["10.30.0.0/16"]})
    (carrier,) = _carriers(_config(api, hosts["u0"]))
    assert carrier in {_id(hosts, "g2"), _id(hosts, "g3")}
    # The stale pin blocks no later change of the member.
    later = api.ok("PATCH", net.path(f"/members/{_id(hosts, 'u0')}"), {"full_tunnel": False})
    assert later["pinned"] == {LAN: g1}


def test_ranges_that_overlap_in_part_are_still_refused(api, net, hosts):
    u0 = _id(hosts, "u0")
    code, err, msg = _error(api, "PUT", net.path(f"/gateways/{u0}"), {"egress": ["10.20.5.0/24"]})
    assert (code, err) == (409, "range_overlap") and LAN in msg
