"""Control-plane loose ends of gateway groups found while wiring the agent (issue 11): the members'
election port is one constant (:data:`chalicelib.domain.election.ELECTION_PORT`) that no floating
port, mesh port or underlay echo port may take, and a member of a group cannot be deleted before it
is removed from the group (whose answer says whether it still knows the key)."""

from __future__ import annotations

from typing import Any

from agent import election_loop
from chalicelib.domain.election import ELECTION_PORT

from .conftest import Api
from .test_groups import _create, _groups, _ids, hosts, net  # noqa: F401 (fixtures)


def test_the_agent_listens_where_the_control_plane_keeps_ports_free() -> None:
    assert election_loop.ELECTION_PORT is ELECTION_PORT
    assert election_loop.ElectionLoop(1).port == ELECTION_PORT


def test_a_floating_port_on_the_election_port_is_refused_with_what_to_do(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:  # noqa: F811
    doc = {"name": "edge", "members": _ids(hosts, "g1", "g2"),
           "floating_endpoint": f"198.18.9.1:{ELECTION_PORT}"}
    code, out = api.call("POST", _groups(net), doc)
    assert code == 409 and out["error"]["code"] == "floating_port_in_use", out
    assert "election" in out["error"]["message"] and "choose another floating port" in out["error"]["message"]
    assert api.ok("GET", _groups(net))["groups"] == [], "nothing is written"
    group = _create(api, net, hosts, "g1", "g2")
    code, out = api.call("PATCH", f"{_groups(net)}/{group['id']}",
                         {"floating_endpoint": f"198.18.9.1:{ELECTION_PORT}"})
    assert code == 409 and out["error"]["code"] == "floating_port_in_use", out


def test_a_member_cannot_take_the_election_port_as_its_mesh_or_echo_port(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:  # noqa: F811
    _create(api, net, hosts, "g1", "g2")
    g1 = hosts["g1"]
    for port in (ELECTION_PORT, ELECTION_PORT - 1):
        code, out = api.call("PATCH", f"/v1/hosts/{g1['id']}", {"listen_port": port}, token=g1["token"])
        assert code == 409 and out["error"]["code"] == "floating_port_in_use", out
        assert str(ELECTION_PORT) in out["error"]["message"]
    g3 = hosts["g3"]
    assert api.ok("PATCH", f"/v1/hosts/{g3['id']}", {"listen_port": ELECTION_PORT}, token=g3["token"])[
        "listen_port"] == ELECTION_PORT, "not a member: its port is free"
    code, out = api.call("POST", _groups(net), {"name": "other", "members": [g3["id"]],
                                                "floating_endpoint": "198.18.9.2:51900"})
    assert code == 409 and out["error"]["code"] == "floating_port_in_use", out


def test_a_member_of_a_group_is_deleted_only_once_it_was_removed_from_the_group(
        api: Api, net: dict[str, Any], hosts: dict[str, Any]) -> None:  # noqa: F811
    group = _create(api, net, hosts)
    g3 = hosts["g3"]
    code, out = api.call("DELETE", f"/v1/hosts/{g3['id']}")
    assert code == 409 and out["error"]["code"] == "gateway_in_use", out
    said = out["error"]["message"]
    assert f"edge ({group['id']})" in said and f"gateway-groups/{group['id']}/members/{g3['id']}" in said
    assert api.ok("GET", f"/v1/hosts/{g3['id']}")["id"] == g3["id"], "nothing is removed"
    code, _ = api.call("DELETE", f"/v1/hosts/{g3['id']}", token=g3["token"])
    assert code == 409, "nor by the host itself (skymesh-agent leave)"
    api.ok("DELETE", f"{_groups(net)}/{group['id']}/members/{g3['id']}", status=200)
    api.ok("DELETE", f"/v1/hosts/{g3['id']}")
    assert api.ok("GET", f"{_groups(net)}/{group['id']}")["members"] == _ids(hosts, "g1", "g2")
    api.ok("DELETE", f"/v1/networks/{net['id']}?force=true")  # a network goes with its groups and members
