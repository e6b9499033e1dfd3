"""``skymesh relay set|list|delete`` and ``skymesh key create --relay`` end to end: real HTTP from
``skymesh.admin`` to the app (the fixtures of test_admin_cli)."""

from __future__ import annotations

from typing import Any

import pytest

import app as app_module
from chalicelib.domain import protocol

from . import test_admin_cli
from .conftest import Api, host_body
from .test_admin_cli import Cli, _ok
from .test_gateway_cli import office_with

api_url, cli = test_admin_cli.api_url, test_admin_cli.cli  # its fixtures, used here by name

pytestmark = pytest.mark.memory_store  # about the CLI and the API, not the database


@pytest.fixture
def office(cli: Cli, api: Api) -> dict[str, Any]:
    """Network office with hosts r, a and b."""
    return office_with(cli, api, ("r", "a", "b"))


def test_relay_set_list_and_delete(cli: Cli, api: Api, office: dict[str, Any]) -> None:
    net, h = office["network"], office["hosts"]
    out = _ok(cli("relay", "set", "office", "r", "a", h["b"]["id"])).out
    assert out == (f"r ({h['r']['id']}) relays 2 hosts in network office: "
                   + ", ".join(f"{n} ({h[n]['id']})" for n in sorted("ab", key=lambda n: h[n]["id"])) + "\n")
    lines = _ok(cli("relay", "list", "office")).out.splitlines()
    assert lines[0].split() == ["RELAY", "RELAY", "ID", "RELAYED", "RELAYED", "ID", "IPV4"]
    rows = {tuple(line.split()[:4]) for line in lines[1:]}
    assert rows == {("r", h["r"]["id"], n, h[n]["id"]) for n in "ab"}
    assert _ok(cli("relay", "list", "office", "--json")).json() == api.ok(
        "GET", f"/v1/networks/{net['id']}/relays")

    failed = cli("relay", "set", "office", "a", "b")
    assert failed.code != 0 and "error: host" in failed.err and "no relay chains" in failed.err

    assert _ok(cli("relay", "delete", "office", "r")).out == \
        "relay r deleted in network office: its hosts go direct again\n"
    assert _ok(cli("relay", "list", "office")).out.startswith("no relays in network office")


def test_key_create_with_a_relay(cli: Cli, api: Api, office: dict[str, Any]) -> None:
    r = office["hosts"]["r"]
    out = _ok(cli("key", "create", "--network", "office", "--uses", "1", "--relay", "r")).out
    assert f"hosts enrolled with it are relayed by r ({r['id']})" in out
    key = _ok(cli("key", "create", "--network", "office", "--uses", "1", "--relay", "r", "--json")).json()
    assert key["relay"] == r["id"]
    joined = api.ok("POST", "/v1/hosts", host_body("late"), token=key["token"])["host"]
    relays = api.ok("GET", f"/v1/networks/{office['network']['id']}/relays")["relays"]
    assert [(x["host_id"], [m["host_id"] for m in x["relayed"]]) for x in relays] == [
        (r["id"], [joined["id"]])]


def test_relay_list_shows_the_pairs_relayed_automatically(cli: Cli, api: Api, office: dict[str, Any]) -> None:
    net, h = office["network"], office["hosts"]
    api.ok("PUT", f"/v1/networks/{net['id']}/gateways/{h['r']['id']}", {"egress": ["10.20.0.0/16"]})

    def report(name: str, **more: Any) -> None:
        sent = {"v": protocol.VERSION, "type": "status", "agent_version": "1.0", "host_id": h[name]["id"],
                **more}
        assert app_module.host_report(sent, None) == {"recorded": True}
        if more:
            app_module.failover_report(sent, None)

    report("r")
    report("b")
    report("a", latency=[{"host": h["b"]["id"], "rtt": None, "loss": 100, "up": False}])
    lines = _ok(cli("relay", "list", "office")).out.splitlines()
    assert lines[0] == "relayed automatically (pairs without a direct path):"
    assert lines[1].split() == ["HOST", "HOST", "ID", "PEER", "PEER", "ID", "VIA", "VIA", "ID"]
    first, second = sorted("ab", key=lambda n: h[n]["id"])
    assert lines[2].split() == [first, h[first]["id"], second, h[second]["id"], "r", h["r"]["id"]]
    assert _ok(cli("relay", "list", "office", "--json")).json() == api.ok(
        "GET", f"/v1/networks/{net['id']}/relays")
