"""``skymesh gateway set|list|show|unset`` and ``skymesh member set`` end to end: real HTTP from
``skymesh.admin`` to the app (the fixtures of test_admin_cli)."""

from __future__ import annotations

from typing import Any

import pytest

from . import test_admin_cli
from .conftest import Api, host_body
from .test_admin_cli import Cli, _ok

api_url, cli = test_admin_cli.api_url, test_admin_cli.cli  # its fixtures, used here by name

pytestmark = pytest.mark.memory_store  # about the CLI and the API, not the database


def office_with(cli: Cli, api: Api, names: tuple[str, ...]) -> dict[str, Any]:
    """Network office made with the CLI, with these hosts, as the API shows them."""
    _ok(cli("network", "create", "office", "--ipv4", "100.64.0.0/16"))
    key = _ok(cli("key", "create", "--network", "office", "--uses", str(len(names)), "--json"))
    token = key.json()["token"]
    hosts = {n: api.ok("POST", "/v1/hosts", host_body(n), token=token)["host"] for n in names}
    return {"network": api.ok("GET", "/v1/networks")["networks"][0], "hosts": hosts}


@pytest.fixture
def office(cli: Cli, api: Api) -> dict[str, Any]:
    """Network office with hosts g and a."""
    return office_with(cli, api, ("g", "a"))


def test_gateway_set_list_show_and_unset(cli: Cli, api: Api, office: dict[str, Any]) -> None:
    net, g = office["network"], office["hosts"]["g"]

    out = _ok(cli("gateway", "set", "office", "g", "--remote-access", "--egress", "10.20.0.0/16",
                  "--egress", "fd12:3456::/48")).out
    assert out.startswith(f"gateway g set in network office ({g['id']})\n")
    assert "Egress:         10.20.0.0/16,fd12:3456::/48" in out and "Remote access:  yes" in out
    assert f"Endpoint:       {g['endpoints'][0]} (the host's own)" in out
    shown = api.ok("GET", f"/v1/networks/{net['id']}/gateways/{g['id']}")
    assert (shown["remote_access"], shown["egress"], shown["internet"]) == (True, ["10.20.0.0/16",
                                                                                  "fd12:3456::/48"], False)

    # What is not given stays; --json prints the API's answer.
    changed = _ok(cli("gateway", "set", "office", g["id"], "--internet", "--endpoint", "gw.example.com:443",
                      "--json")).json()
    assert changed == api.ok("GET", f"/v1/networks/{net['id']}/gateways/{g['id']}")
    assert (changed["remote_access"], changed["internet"], changed["effective_endpoint"]) == (
        True, True, "gw.example.com:443")

    lines = _ok(cli("gateway", "list", "office")).out.splitlines()
    assert lines[0].split() == ["NAME", "HOST", "ID", "REMOTE", "ACCESS", "EGRESS", "INTERNET", "ENDPOINT"]
    assert lines[1].split() == ["g", g["id"], "yes", "10.20.0.0/16,fd12:3456::/48", "yes",
                                "gw.example.com:443"]
    assert _ok(cli("gateway", "list", "office", "--json")).json() == api.ok(
        "GET", f"/v1/networks/{net['id']}/gateways")
    assert "Internet:       yes" in _ok(cli("gateway", "show", "office", "g")).out
    assert _ok(cli("gateway", "show", "office", "g", "--json")).json() == changed

    unset = _ok(cli("gateway", "unset", "office", "g")).out
    assert unset == f"gateway g unset in network office ({g['id']})\n"
    assert api.call("GET", f"/v1/networks/{net['id']}/gateways/{g['id']}")[0] == 404
    assert _ok(cli("gateway", "list", "office")).out.startswith("no gateways in network office")


def test_gateway_refusals_are_one_line_errors(cli: Cli, api: Api, office: dict[str, Any]) -> None:
    nothing = cli("gateway", "set", "office", "g")
    assert nothing.code == 1 and nothing.err.startswith("error: nothing to change")
    bad = cli("gateway", "set", "office", "g", "--egress", "10.20.0.1/16")
    assert bad.code == 1 and bad.out == "" and "10.20.0.0/16" in bad.err and bad.err.count("\n") == 1
    overlap = cli("gateway", "set", "office", "g", "--egress", "100.64.5.0/24")
    assert overlap.code == 1 and "network office" in overlap.err


def test_member_set_chooses_an_internet_gateway_and_unset_needs_force_while_it_is_used(
        cli: Cli, api: Api, office: dict[str, Any]) -> None:
    net, g, a = office["network"], office["hosts"]["g"], office["hosts"]["a"]
    _ok(cli("gateway", "set", "office", "g", "--internet"))

    out = _ok(cli("member", "set", "office", "a", "--internet-gateway", "g", "--full-tunnel")).out
    assert out.startswith(f"member a updated in network office ({a['id']})\n")
    assert f"Internet gateway:  g ({g['id']})" in out and "Tunnel:            full" in out
    split = _ok(cli("member", "set", "office", "a", "--split-tunnel", "--json")).json()
    assert (split["internet_gateway"], split["full_tunnel"]) == (g["id"], False)

    refused = cli("gateway", "unset", "office", "g")
    assert refused.code == 1 and a["id"] in refused.err and "hint: pass --force" in refused.err
    assert api.ok("GET", f"/v1/networks/{net['id']}/gateways/{g['id']}")["internet"] is True
    _ok(cli("member", "set", "office", "a", "--full-tunnel"))
    assert _ok(cli("gateway", "unset", "office", "g", "--force")).out.startswith("gateway g unset")

    cleared = _ok(cli("member", "set", "office", "a", "--internet-gateway", "none", "--json")).json()
    assert (cleared["internet_gateway"], cleared["full_tunnel"]) == (None, False)
    nothing = cli("member", "set", "office", "a")
    assert nothing.code == 1 and "--internet-gateway" in nothing.err


def test_member_set_pins_a_range_several_gateways_serve_and_auto_unpins_it(
        cli: Cli, api: Api, office: dict[str, Any]) -> None:
    net, g = office["network"], office["hosts"]["g"]
    token = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 1})["token"]
    b = api.ok("POST", "/v1/hosts", host_body("b"), token=token)["host"]
    for gateway in ("g", "b"):
        _ok(cli("gateway", "set", "office", gateway, "--egress", "10.40.0.0/16"))

    out = _ok(cli("member", "set", "office", "a", "--pin", "10.40.0.0/16=b")).out
    assert f"Gateway for 10.40.0.0/16:  b ({b['id']}), pinned" in out, out
    pinned = _ok(cli("member", "set", "office", "a", "--pin", "10.40.0.0/16=g", "--json")).json()
    assert pinned["pinned"] == {"10.40.0.0/16": g["id"]}
    auto = _ok(cli("member", "set", "office", "a", "--pin", "10.40.0.0/16=auto", "--json")).json()
    assert auto["pinned"] == {}
    bad = cli("member", "set", "office", "a", "--pin", "10.40.0.0/16")
    assert bad.code == 1 and "CIDR=HOST" in bad.err


def test_member_set_internet_gateway_auto_uses_any_and_a_pin_holds_it_to_one(
        cli: Cli, api: Api, office: dict[str, Any]) -> None:
    net, g = office["network"], office["hosts"]["g"]
    refused = cli("member", "set", "office", "a", "--internet-gateway", "auto", "--full-tunnel")
    assert refused.code == 1 and "auto" in refused.err and "none" in refused.err  # no internet gateway yet
    token = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 1})["token"]
    api.ok("POST", "/v1/hosts", host_body("b"), token=token)
    for gateway in ("g", "b"):
        _ok(cli("gateway", "set", "office", gateway, "--internet"))

    out = _ok(cli("member", "set", "office", "a", "--internet-gateway", "AUTO", "--full-tunnel")).out
    assert "Internet gateway:  auto (any internet gateway)" in out, out
    out = _ok(cli("member", "set", "office", "a", "--pin", "0.0.0.0/0=g")).out
    assert f"Gateway for 0.0.0.0/0:  g ({g['id']}), pinned" in out, out
