"""The failover functions (issue 10: placement) through the app's own handlers: reports with
latency → ``failover_report`` (event-driven) and the ``failover`` schedule → hosts placed on the
gateways of a shared range, written on their roles, broadcast once, and seen in ``/config``.

Three gateways g1, g2, g3 serve one LAN; users u1 … u4 send it to one of them."""

from __future__ import annotations

from typing import Any

import pytest

import app as app_module
from chalicelib.domain import plan, protocol
from chalicelib.domain.ids import HostId
from chalicelib.service import Service, topology

from .conftest import Api, host_body
from .test_gateways import LAN, _config

pytestmark = pytest.mark.memory_store  # about the functions and the API; the store is held by tests/contract

NOW = 1_800_000_000
GATEWAYS = ("g1", "g2", "g3")
USERS = ("u1", "u2", "u3", "u4")


@pytest.fixture
def world(api: Api, service: Service, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    net = api.ok("POST", "/v1/networks", {"name": "office", "ipv4_cidr": "100.64.0.0/24"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 10})
    hosts = {h: api.ok("POST", "/v1/hosts", host_body(h), token=key["token"]) for h in (*GATEWAYS, *USERS)}
    for g in GATEWAYS:
        api.ok("PUT", f"/v1/networks/{net['id']}/gateways/{hosts[g]['host']['id']}", {"egress": [LAN]})
    clock = {"now": NOW}
    monkeypatch.setattr(service.deps.clock, "now", lambda: clock["now"])
    w = {"net": net["id"], "hosts": hosts, "ids": {h: v["host"]["id"] for h, v in hosts.items()},
         "clock": clock}
    for g in GATEWAYS:
        report(w, g, {})  # gateways report (they are not silent)
    return w


def report(w: dict[str, Any], host: str, rtts: dict[str, float | None], *, event: bool = True) -> int:
    """``host`` reports RTTs to gateways (None: down); the status is stored (host_report) and, when
    it carries latency, the event-driven function runs (as the IoT rule delivers it); moves."""
    rows = [{"host": w["ids"][g], "rtt": rtt, "loss": 0 if rtt is not None else 100, "up": rtt is not None}
            for g, rtt in rtts.items()]
    sent = {"v": protocol.VERSION, "type": "status", "agent_version": "1.0", "host_id": w["ids"][host],
            **({"latency": rows} if rows else {})}
    assert app_module.host_report(sent, None) == {"recorded": True}
    if not rows or not event:
        return 0
    out = app_module.failover_report(sent, None)
    return int(out["moved"])


def carrier(api: Api, w: dict[str, Any], user: str) -> str:
    """The gateway ``user``'s /config sends the LAN to (by name)."""
    (to,) = [p["host_id"] for p in _config(api, w["hosts"][user])["peers"] if LAN in p["allowed_ips"]]
    return next(name for name, hid in w["ids"].items() if hid == to)


def scheduled(api: Api) -> dict[str, Any]:
    """The ``failover`` schedule, invoked as EventBridge would."""
    event = api.client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                                detail={}, resources=[])
    return api.client.lambda_.invoke("failover", event).payload  # type: ignore[no-any-return]


def placed(api: Api, w: dict[str, Any], user: str) -> dict[str, str]:
    m = api.ok("PATCH", f"/v1/networks/{w['net']}/members/{w['ids'][user]}", {})
    return m["placed"]


def test_a_host_whose_gateway_is_down_is_placed_on_the_best_live_one_in_one_broadcast(api, service, world):
    w = world
    was = carrier(api, w, "u1")
    others = [g for g in GATEWAYS if g != was]
    rtts: dict[str, float | None] = {was: None, others[0]: 30.0, others[1]: 12.0}
    before = len(service.deps.publisher.on(protocol.network_topic(w["net"])))
    assert report(w, "u1", rtts) == 1
    assert carrier(api, w, "u1") == others[1]  # the best live one (12 ms), everywhere the plan runs
    msgs = service.deps.publisher.on(protocol.network_topic(w["net"]))[before:]
    (delta,) = [protocol.decode(p) for p in msgs]
    assert [m.host_id for m in delta.upsert] == [w["ids"]["u1"]]  # its role, in one broadcast
    assert report(w, "u1", rtts) == 0  # the same report again: nothing more to do


def test_it_does_not_flap_back_to_a_recovered_gateway_nor_move_for_noise(api, world):
    w = world
    was = carrier(api, w, "u1")
    others = [g for g in GATEWAYS if g != was]
    report(w, "u1", {was: None, others[0]: 30.0, others[1]: 12.0})
    now = carrier(api, w, "u1")
    assert now == others[1]
    assert report(w, "u1", {was: 11.0, others[0]: 30.0, others[1]: 12.0}) == 0  # back, 1 ms better: no
    assert report(w, "u1", {was: 9.0, others[0]: 30.0, others[1]: 14.0}) == 0  # noise inside the band
    assert carrier(api, w, "u1") == now
    assert report(w, "u1", {was: 2.0, others[0]: 30.0, others[1]: 40.0}) == 1  # clearly better: moves
    assert carrier(api, w, "u1") == was


def test_the_schedule_moves_everyone_off_a_gateway_whose_reports_stopped(api, world):
    w = world
    for u in USERS:
        report(w, u, {g: 10.0 for g in GATEWAYS}, event=False)
    victim = carrier(api, w, "u1")
    before = {u: carrier(api, w, u) for u in USERS}
    w["clock"]["now"] = NOW + 3_600  # an hour later: everyone reported again but the victim
    for g in GATEWAYS:
        if g != victim:
            report(w, g, {})
    for u in USERS:
        report(w, u, {g: 10.0 for g in GATEWAYS}, event=False)
    out = scheduled(api)
    assert out["moved"] >= 1
    on = {u: carrier(api, w, u) for u in USERS}
    assert victim not in on.values(), on
    got = {u: placed(api, w, u) for u in USERS}
    assert all(got[u].get(LAN) == w["ids"][on[u]] for u in USERS if on[u] != before[u]), (before, on, got)
    counts = sorted(list(on.values()).count(g) for g in GATEWAYS if g != victim)
    assert counts[-1] - counts[0] <= 1, f"spread over the live gateways within one: {on}"
    assert scheduled(api) == {"moved": 0}  # converged


def test_a_pinned_host_stays_on_its_gateway_even_when_it_is_down(api, world):
    w = world
    pin = GATEWAYS[0]
    api.ok("PATCH", f"/v1/networks/{w['net']}/members/{w['ids']['u2']}", {"pinned": {LAN: w["ids"][pin]}})
    assert report(w, "u2", {pin: None, GATEWAYS[1]: 5.0, GATEWAYS[2]: 5.0}) == 0
    assert carrier(api, w, "u2") == pin


def test_reports_without_latency_or_from_strangers_move_nobody(api, world):
    w = world
    assert app_module.failover_report({"host_id": w["ids"]["u1"], "v": 3, "type": "status",
                                       "agent_version": "1"}, None) == {"moved": 0}
    assert app_module.failover_report({"host_id": "host_doesnotexist00", "v": 3, "type": "status",
                                       "agent_version": "1", "latency": []}, None) == {"moved": 0}
    assert app_module.failover_report({"nothing": 1}, None) == {"moved": 0}
    assert app_module.failover_report({"host_id": w["ids"]["u1"], "v": 3, "type": "status",
                                       "latency": "not a list"}, None) == {"moved": 0}


def test_an_agents_own_switch_is_confirmed_so_the_gateway_it_left_does_not_take_it_back(
        api, service, world):
    """The agent moved off its dead gateway to the next one its plan ranked (the fast path); with
    gateways equal, placement keeps it there and writes it down, so when the dead one is back
    the host stays (no flap)."""
    w = world
    records = topology.records(service.deps.store, w["net"])
    assert records is not None
    ranked = plan.candidates(records, HostId(w["ids"]["u1"]), LAN)
    name = {hid: n for n, hid in w["ids"].items()}
    first, second = name[ranked[0]], name[ranked[1]]
    assert report(w, "u1", {g: (None if g == first else 10.0) for g in GATEWAYS}) == 1  # confirmed
    assert placed(api, w, "u1") == {LAN: w["ids"][second]}
    assert report(w, "u1", {g: 10.0 for g in GATEWAYS}) == 0  # the first one is back
    assert carrier(api, w, "u1") == second


def test_a_gateway_that_has_not_reported_yet_keeps_its_hosts_on_a_report_that_it_answers(api, service):
    """A new gateway's first report may come after its users' (its agent is starting): the
    event-driven function does not call it silent; the schedule does, a minute on."""
    net = api.ok("POST", "/v1/networks", {"name": "fresh", "ipv4_cidr": "100.64.0.0/24"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 3})
    hosts = {h: api.ok("POST", "/v1/hosts", host_body(h), token=key["token"]) for h in ("g1", "g2", "u1")}
    for g in ("g1", "g2"):
        api.ok("PUT", f"/v1/networks/{net['id']}/gateways/{hosts[g]['host']['id']}", {"egress": [LAN]})
    w = {"net": net["id"], "hosts": hosts, "ids": {h: v["host"]["id"] for h, v in hosts.items()}}
    was = carrier(api, w, "u1")
    report(w, "g2" if was == "g1" else "g1", {})  # the other gateway has reported, u1's has not yet
    assert report(w, "u1", {"g1": 10.0, "g2": 10.0}) == 0
    assert carrier(api, w, "u1") == was
