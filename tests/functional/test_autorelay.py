"""Automatic relays through the app's own handlers, on DynamoDB Local (issue 10: relays,
automatic): a report that says a peer is down relays the pair through an auto-relay gateway
(one broadcast, seen in both ends' ``/config``), reports of the direct path from both ends end
it, and a via whose reports stopped moves the pair on the schedule.

Gateways g1 (and g2) serve a range each, with auto_relay on (the default); hosts a and b."""

from __future__ import annotations

from typing import Any

import pytest

import app as app_module
from chalicelib.domain import protocol
from chalicelib.service import Service

from .conftest import Api, host_body
from .test_failover import scheduled
from .test_gateways import LAN, _config

NOW = 1_800_000_000


@pytest.fixture
def world(api: Api, service: Service, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    net = api.ok("POST", "/v1/networks", {"name": "office", "ipv4_cidr": "100.64.0.0/24"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 10})
    hosts = {h: api.ok("POST", "/v1/hosts", host_body(h), token=key["token"]) for h in ("g1", "g2", "a", "b")}
    clock = {"now": NOW}
    monkeypatch.setattr(service.deps.clock, "now", lambda: clock["now"])
    return {"net": net["id"], "hosts": hosts, "ids": {h: v["host"]["id"] for h, v in hosts.items()},
            "clock": clock, "service": service, "api": api}


def gateway(w: dict[str, Any], name: str, **more: Any) -> None:
    """``name`` a gateway of its own range (no HA placement here: only the pairs move)."""
    egress = LAN if name == "g1" else "10.30.0.0/16"
    w["api"].ok("PUT", f"/v1/networks/{w['net']}/gateways/{w['ids'][name]}", {"egress": [egress], **more})


def report(w: dict[str, Any], host: str, *, down: tuple[str, ...] = (), up: dict[str, float] | None = None,
           direct: tuple[str, ...] = ()) -> int:
    """``host`` reports (stored by host_report); a report with latency or direct also goes to the
    failover function, as the IoT rule delivers it. The hosts moved and pairs changed."""
    rows = [{"host": w["ids"][t], "rtt": None, "loss": 100, "up": False} for t in down]
    rows += [{"host": w["ids"][t], "rtt": rtt, "loss": 0, "up": True} for t, rtt in (up or {}).items()]
    sent = {"v": protocol.VERSION, "type": "status", "agent_version": "1.0", "host_id": w["ids"][host],
            **({"latency": rows} if rows else {}),
            **({"direct": [w["ids"][t] for t in direct]} if direct else {})}
    assert app_module.host_report(sent, None) == {"recorded": True}
    if not rows and not direct:
        return 0
    return int(app_module.failover_report(sent, None)["moved"])


def broadcasts(w: dict[str, Any]) -> list[Any]:
    return [protocol.decode(p) for p in w["service"].deps.publisher.on(protocol.network_topic(w["net"]))]


def route(w: dict[str, Any], at: str, to: str) -> str:
    """The member ``at``'s /config sends ``to``'s overlay address to (by name)."""
    (address,) = w["hosts"][to]["host"]["addresses"]
    (peer,) = [p["host_id"] for p in _config(w["api"], w["hosts"][at])["peers"]
               if f"{address['ipv4']}/32" in p["allowed_ips"]]
    return next(name for name, hid in w["ids"].items() if hid == peer)


def test_a_peer_reported_down_is_relayed_through_the_gateway_in_one_broadcast_until_both_ends_see_it_direct(
        world: dict[str, Any]) -> None:
    w = world
    gateway(w, "g1")
    report(w, "g1")
    report(w, "b")
    assert route(w, "a", "b") == "b" and route(w, "b", "a") == "a"
    before = len(broadcasts(w))
    assert report(w, "a", down=("b",), up={"g1": 10.0}) == 1
    assert route(w, "a", "b") == "g1" and route(w, "b", "a") == "g1"
    (delta,) = broadcasts(w)[before:]
    assert w["ids"]["a"] in {m.host_id for m in delta.upsert}
    assert report(w, "a", down=("b",), up={"g1": 10.0}) == 0, "the same report again changes nothing"

    assert report(w, "a", direct=("b",)) == 0, "one end's word is not enough"
    assert route(w, "a", "b") == "g1"
    before = len(broadcasts(w))
    assert report(w, "b", direct=("a",)) == 1
    assert route(w, "a", "b") == "b" and route(w, "b", "a") == "a"
    assert len(broadcasts(w)) == before + 1


def test_a_peer_whose_agent_never_reported_is_off_not_relayed(world: dict[str, Any]) -> None:
    w = world
    gateway(w, "g1")
    report(w, "g1")
    assert report(w, "a", down=("b",), up={"g1": 10.0}) == 0
    assert route(w, "a", "b") == "b"


def test_no_pair_without_an_auto_relay_gateway(world: dict[str, Any]) -> None:
    w = world
    gateway(w, "g1", auto_relay=False)
    report(w, "g1")
    report(w, "b")
    before = len(broadcasts(w))
    assert report(w, "a", down=("b",), up={"g1": 10.0}) == 0
    assert route(w, "a", "b") == "b" and len(broadcasts(w)) == before


def test_the_schedule_moves_a_pair_off_a_via_whose_reports_stopped(world: dict[str, Any]) -> None:
    w = world
    gateway(w, "g1")
    gateway(w, "g2")
    for h in ("g1", "g2", "b"):
        report(w, h)
    assert report(w, "a", down=("b",), up={"g1": 1.0, "g2": 50.0}) == 1
    assert route(w, "a", "b") == "g1"
    w["clock"]["now"] += 120  # g1 silent for two minutes; the others keep reporting
    for h in ("g2", "b", "a"):
        report(w, h)  # heartbeats without latency: no event-driven pass
    assert route(w, "a", "b") == "g1"
    before = len(broadcasts(w))
    assert scheduled(w["api"])["moved"] == 1
    assert route(w, "a", "b") == "g2" and route(w, "b", "a") == "g2"
    assert len(broadcasts(w)) == before + 1


def test_an_agent_of_schema_3_is_told_to_upgrade_once_its_network_has_automatic_relays(
        world: dict[str, Any]) -> None:
    w = world
    a = w["hosts"]["a"]
    path = f"/v1/hosts/{a['host']['id']}/config?v=3"
    gateway(w, "g1")
    seq = w["api"].ok("GET", f"/v1/networks/{w['net']}")["seq"]
    old = w["api"].ok("GET", f"{path}&known={w['net']}:{seq}", token=a["host_token"])
    assert old["catch_ups"] == [] and len(old["networks"]) == 1, "schema 3 gets full snapshots"
    report(w, "g1")
    report(w, "b")
    assert report(w, "a", down=("b",)) == 1
    code, out = w["api"].call("GET", path, token=a["host_token"])
    assert code == 400 and out["error"]["code"] == "agent_outdated", out
    assert "use automatic relays, which need schema 4: upgrade skymesh-agent" in out["error"]["message"]
    assert w["api"].ok("GET", f"/v1/hosts/{a['host']['id']}/config?v={protocol.VERSION}",
                       token=a["host_token"])["networks"]


# --- pairs never outlive what makes them valid; operators see them ----------------------------


def paired(w: dict[str, Any]) -> dict[str, Any]:
    """a and b relayed through g1 (g2 a gateway too, without auto_relay), as GET …/relays lists it."""
    gateway(w, "g1")
    gateway(w, "g2", auto_relay=False)
    for h in ("g1", "g2", "b"):
        report(w, h)
    assert report(w, "a", down=("b",)) == 1
    return w["api"].ok("GET", f"/v1/networks/{w['net']}/relays")


def pairs(w: dict[str, Any]) -> list[tuple[str, str, str]]:
    names = {hid: n for n, hid in w["ids"].items()}
    return [(names[p["a"]["host_id"]], names[p["b"]["host_id"]], names[p["via"]["host_id"]])
            for p in w["api"].ok("GET", f"/v1/networks/{w['net']}/relays")["pairs"]]


def released_in_one_broadcast(w: dict[str, Any], before: int) -> None:
    """The pair is gone, a and b route to each other directly, the change was one broadcast naming
    the pair's owner, and a later change of the network is not refused (no stale pair)."""
    assert pairs(w) == []
    assert route(w, "a", "b") == "b" and route(w, "b", "a") == "a"
    (delta,) = broadcasts(w)[before:]
    owner = min(w["ids"]["a"], w["ids"]["b"])
    assert owner in {m.host_id for m in delta.upsert}
    w["api"].ok("PUT", f"/v1/networks/{w['net']}/gateways/{w['ids']['g1']}", {"egress": ["10.40.0.0/16"]})


def test_get_relays_lists_the_automatic_pairs_with_their_via(world: dict[str, Any]) -> None:
    w = world
    listed = paired(w)
    assert listed["relays"] == []
    assert [(p["a"]["name"], p["b"]["name"], p["via"]["name"]) for p in listed["pairs"]] == [
        tuple(sorted(("a", "b"), key=lambda n: w["ids"][n])) + ("g1",)]


def test_the_vias_auto_relay_turned_off_releases_its_pairs_in_the_same_write(world: dict[str, Any]) -> None:
    w = world
    paired(w)
    before = len(broadcasts(w))
    gateway(w, "g1", auto_relay=False)
    released_in_one_broadcast(w, before)


def test_the_vias_gateway_role_removed_releases_its_pairs_in_the_same_write(world: dict[str, Any]) -> None:
    w = world
    paired(w)
    before = len(broadcasts(w))
    w["api"].call("DELETE", f"/v1/networks/{w['net']}/gateways/{w['ids']['g1']}")
    assert pairs(w) == [] and route(w, "a", "b") == "b"
    (delta,) = broadcasts(w)[before:]
    assert min(w["ids"]["a"], w["ids"]["b"]) in {m.host_id for m in delta.upsert}
    gateway(w, "g2", auto_relay=True)  # a later change is not refused


def test_an_end_relayed_by_hand_ends_its_automatic_pairs_in_the_same_write(world: dict[str, Any]) -> None:
    w = world
    paired(w)
    before = len(broadcasts(w))
    w["api"].ok("PUT", f"/v1/networks/{w['net']}/relays/{w['ids']['g2']}", {"relayed": [w["ids"]["b"]]})
    assert pairs(w) == [] and route(w, "a", "b") == "g2"  # through its manual relay now
    (delta,) = broadcasts(w)[before:]
    assert min(w["ids"]["a"], w["ids"]["b"]) in {m.host_id for m in delta.upsert}
    gateway(w, "g1", egress=["10.40.0.0/16"])


@pytest.mark.parametrize("gone", ["owner", "peer", "via"])
def test_a_member_of_a_pair_deleted_releases_the_pair_in_the_same_write(
        world: dict[str, Any], gone: str) -> None:
    """The pair is recorded on its end with the smaller host id (the owner): the owner takes it
    along, the other end and the via release it from the owner."""
    w = world
    paired(w)
    owner, peer = sorted(("a", "b"), key=lambda n: w["ids"][n])
    name = {"owner": owner, "peer": peer, "via": "g1"}[gone]
    assert w["api"].call("DELETE", f"/v1/hosts/{w['ids'][name]}")[0] == 204
    assert pairs(w) == []
    gateway(w, "g2", auto_relay=True)  # a later change of the network is not refused
    if gone == "via":
        assert route(w, "a", "b") == "b" and route(w, "b", "a") == "a"
