"""The latency matrix (issue 10: probes) on DynamoDB Local: reports → stored rows → ``GET
/v1/networks/{id}/latency`` and ``skymesh latency``; other networks' targets left out; the one
error shape; the stored report's size bound with the largest latency section."""

from __future__ import annotations

import json
from typing import Any

import pytest

import app as app_module
from chalicelib.adapters.dynamodb.size import item_size
from chalicelib.domain import protocol
from chalicelib.service import Service

from . import test_admin_cli
from .conftest import Api, host_body
from .test_admin_cli import Cli, _ok
from .test_status_reports import raw_host_item, wg_key

api_url, cli = test_admin_cli.api_url, test_admin_cli.cli  # its fixtures, used here by name
NOW = 1_800_000_000


def _network(api: Api, name: str, v4: str, hosts: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    net = api.ok("POST", "/v1/networks", {"name": name, "ipv4_cidr": v4})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 10})
    ids = {h: api.ok("POST", "/v1/hosts", host_body(h), token=key["token"])["host"]["id"] for h in hosts}
    return net["id"], ids


def _report(host_id: str, rows: list[dict[str, Any]], v: int = protocol.VERSION) -> None:
    sent = {"v": v, "type": "status", "agent_version": "1.0", "host_id": host_id,
            **({"latency": rows} if rows else {})}
    assert app_module.host_report(sent, None) == {"recorded": True}


@pytest.fixture
def world(api: Api, service: Service, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Network office (hosts a, g1, g2) and network lab (host x); a probes g1, g2 and x."""
    office, hosts = _network(api, "office", "100.64.0.0/24", ("a", "g1", "g2"))
    lab, others = _network(api, "lab", "100.65.0.0/24", ("x",))
    hosts |= others
    clock = {"now": NOW}
    monkeypatch.setattr(service.deps.clock, "now", lambda: clock["now"])
    _report(hosts["a"], [{"host": hosts["g2"], "rtt": 31.26, "loss": 5, "up": True},
                         {"host": hosts["g1"], "rtt": 12.3, "loss": 0, "up": True},
                         {"host": hosts["x"], "rtt": 1.0, "loss": 0, "up": True}])
    clock["now"] = NOW + 7
    _report(hosts["g1"], [{"host": hosts["g2"], "rtt": None, "loss": 100, "up": False}])
    clock["now"] = NOW + 10
    return {"office": office, "lab": lab, "hosts": hosts, "clock": clock}


def test_the_matrix_shows_who_measured_whom_with_age_and_leaves_other_networks_out(
        api: Api, world: dict[str, Any]) -> None:
    h = world["hosts"]
    got = api.ok("GET", f"/v1/networks/{world['office']}/latency")
    assert got["network_id"] == world["office"]
    expected = sorted([
        {"from": h["a"], "to": h["g1"], "rtt_ms": 12.3, "loss_pct": 0, "up": True, "age_s": 10},
        {"from": h["a"], "to": h["g2"], "rtt_ms": 31.3, "loss_pct": 5, "up": True, "age_s": 10},
        {"from": h["g1"], "to": h["g2"], "rtt_ms": None, "loss_pct": 100, "up": False, "age_s": 3},
    ], key=lambda r: (r["from"], r["to"]))
    assert got["rows"] == expected
    # x is in lab only: a's row about it is no part of office's matrix, and lab has nobody measuring
    assert api.ok("GET", f"/v1/networks/{world['lab']}/latency")["rows"] == []


def test_a_report_without_latency_replaces_the_rows_and_older_schemas_are_still_read(
        api: Api, world: dict[str, Any]) -> None:
    h = world["hosts"]
    _report(h["a"], [], v=1)
    rows = api.ok("GET", f"/v1/networks/{world['office']}/latency")["rows"]
    assert [(r["from"], r["to"]) for r in rows] == [(h["g1"], h["g2"])]


def test_unknown_networks_and_non_admins_get_the_one_error_shape(api: Api, world: dict[str, Any]) -> None:
    code, out = api.call("GET", "/v1/networks/net_doesnotexist/latency")
    assert code == 404 and out["error"]["code"] == "not_found"
    assert "net_doesnotexist" in out["error"]["message"]
    code, out = api.call("GET", "/v1/networks/not-an-id/latency")
    assert code in (400, 404) and set(out) == {"error"}
    code, out = api.call("GET", f"/v1/networks/{world['office']}/latency", token=None)
    assert code == 401 and set(out["error"]) == {"code", "message"}


def test_the_cli_prints_the_matrix_as_a_table(cli: Cli, world: dict[str, Any]) -> None:
    out = _ok(cli("latency", "office")).out.splitlines()
    assert out[0].split() == ["FROM", "TO", "RTT", "LOSS", "UP", "AGE"]
    assert [line.split() for line in out[1:]] == [  # by name
        ["a", "→", "g1", "12.3", "ms", "0%", "up", "10s"],
        ["a", "→", "g2", "31.3", "ms", "5%", "up", "10s"],
        ["g1", "→", "g2", "-", "100%", "DOWN", "3s"]]
    assert _ok(cli("latency", "lab")).out.startswith("no latency reported in network lab")
    assert _ok(cli("latency", "office", "--json")).json()["network_id"] == world["office"]


def test_the_largest_report_with_the_largest_latency_and_direct_sections_keeps_the_host_record_bounded(
        api: Api, stage: dict[str, str]) -> None:
    _, hosts = _network(api, "big", "100.66.0.0/24", ("a",))
    host_id = hosts["a"]
    plain = item_size(raw_host_item(stage, host_id) or {})
    worst = {
        "v": protocol.VERSION, "type": "status", "host_id": host_id,
        "agent_version": "v" * protocol.MAX_AGENT_VERSION,
        "endpoints": [f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 57}{i}:65535" for i in range(8)],
        "peers": [{"key": wg_key(2**255 - i), "handshake_age": protocol.MAX_HANDSHAKE_AGE,
                   "rx": protocol.MAX_COUNTER - i, "tx": protocol.MAX_COUNTER - i,
                   "endpoint": f"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:{i:04x}]:65535"}
                  for i in range(protocol.MAX_REPORT_PEERS)],
        "latency": [{"host": "host_" + f"{i:040d}", "rtt": protocol.MAX_RTT_MS - 0.1 * (i + 1), "loss": 100,
                     "up": False} for i in range(protocol.MAX_REPORT_LATENCY)],
        "direct": ["host_" + f"{i:040d}" for i in range(protocol.MAX_REPORT_LATENCY)],
    }
    assert app_module.host_report(worst, None) == {"recorded": True}
    item = raw_host_item(stage, host_id)
    assert item is not None and len(json.loads(item["latency"])) == protocol.MAX_REPORT_LATENCY
    assert len(json.loads(item["direct"])) == protocol.MAX_REPORT_LATENCY
    stored = item_size(item) - plain
    print(f"stored report with the largest latency section: {stored} B")
    assert stored <= protocol.MAX_STORED_REPORT_BYTES
