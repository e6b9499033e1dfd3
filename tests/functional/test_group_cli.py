"""``skymesh group …`` and ``skymesh client create --gateway GROUP`` end to end (issue 11): real HTTP
from ``skymesh.admin`` to the app (the fixtures of test_admin_cli)."""

from __future__ import annotations

from typing import Any

import pytest

from . import test_admin_cli
from .conftest import Api
from .test_admin_cli import Cli, _ok
from .test_gateway_cli import office_with

api_url, cli = test_admin_cli.api_url, test_admin_cli.cli  # its fixtures, used here by name

pytestmark = pytest.mark.memory_store  # about the CLI and the API, not the database


@pytest.fixture
def office(cli: Cli, api: Api) -> dict[str, Any]:
    """Network office with remote-access gateways g1, g2, g3 and host a."""
    office = office_with(cli, api, ("g1", "g2", "g3", "a"))
    for name in ("g1", "g2", "g3"):
        _ok(cli("gateway", "set", "office", name, "--remote-access"))
    return office


def test_group_create_list_show_change_and_delete(cli: Cli, api: Api, office: dict[str, Any]) -> None:
    h = office["hosts"]
    out = _ok(cli("group", "create", "office", "edge", "--member", "g2", "--member", "g1",
                  "--floating", "198.18.9.1:51900")).out
    assert out.startswith("gateway group edge created in network office (grp_")
    assert f"g2 ({h['g2']['id']}), g1 ({h['g1']['id']}) (priority order)" in out
    listed = _ok(cli("group", "list", "office")).out.splitlines()
    assert listed[0].split()[:4] == ["NAME", "GROUP", "ID", "MEMBERS"]
    assert listed[1].split()[0] == "edge" and "198.18.9.1:51900" in listed[1]
    group = _ok(cli("group", "show", "office", "edge", "--json")).json()
    assert group == api.ok("GET", f"/v1/networks/{office['network']['id']}/gateway-groups/{group['id']}")

    assert "g2" in _ok(cli("group", "add", "office", "edge", "g3")).out
    _ok(cli("group", "priority", "office", "edge", "g3", "g1", "g2"))
    assert api.ok("GET", f"/v1/networks/{office['network']['id']}/gateway-groups/{group['id']}")[
        "members"] == [h["g3"]["id"], h["g1"]["id"], h["g2"]["id"]]
    removed = _ok(cli("group", "remove", "office", "edge", "g2")).out
    assert removed.startswith(f"{h['g2']['id']} is removed from group {group['id']}; it never received")

    refused = cli("group", "create", "office", "bad", "--member", "a", "--floating", "198.18.9.2:51900")
    assert refused.code != 0 and "is not a remote-access gateway" in refused.err
    refused = cli("group", "rotate-key", "office", "edge")
    assert refused.code != 0 and "has no key yet" in refused.err

    failed = cli("client", "create", "office", "phone", "--gateway", "edge")
    assert failed.code != 0 and "has no key yet" in failed.err  # its file would name no key

    assert _ok(cli("group", "delete", "office", "edge")).out == \
        f"gateway group edge deleted in network office ({group['id']})\n"
    assert _ok(cli("group", "list", "office")).out.startswith("no gateway groups in network office")
