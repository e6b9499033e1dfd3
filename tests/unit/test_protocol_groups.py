"""Schema 5 of the wire protocol: gateway groups in deltas and snapshots, and members' group
reports (issue 11)."""

from __future__ import annotations

import json

import pytest

from chalicelib.api import schemas
from chalicelib.domain import protocol
from chalicelib.domain.ids import GroupId, HostId, NetworkId
from chalicelib.domain.models import GatewayGroup, Network
from chalicelib.domain.protocol import Delta, GroupReport, ProtocolError, Snapshot, StatusReport

NET = Network(id=NetworkId("net_groups0001"), name="lab", ipv4_cidr="100.64.0.0/16", ipv6_cidr="fd00:1::/64",
              seq=3)
GROUP = GatewayGroup(GroupId("grp_edge0001"), NET.id, "edge", (HostId("host_b0001"), HostId("host_a0001")),
                     "198.18.9.1:51900", public_key="G" * 43 + "=", key_version=2,
                     active=HostId("host_a0001"), epoch=7)


def test_a_group_on_the_wire_is_the_contracts_shape_without_the_promise() -> None:
    assert protocol.group_to_wire(GROUP) == {
        "id": "grp_edge0001", "name": "edge", "members": ["host_b0001", "host_a0001"],
        "floating": "198.18.9.1:51900", "key": "G" * 43 + "=", "key_version": 2, "active": "host_a0001",
        "epoch": 7}
    keyless = protocol.group_to_wire(GatewayGroup(GROUP.id, NET.id, "edge", GROUP.members,
                                                  GROUP.floating_endpoint))
    assert (keyless["key"], keyless["key_version"], keyless["active"], keyless["epoch"]) == (None, 0, None, 0)


def test_deltas_and_snapshots_carry_groups_and_survive_encode_decode() -> None:
    for msg in (Delta(NET.id, 4, groups=(GROUP,), remove_groups=("grp_gone0001",)),
                Snapshot(NET, (), (), (GROUP,))):
        assert protocol.decode(protocol.encode(msg)) == msg
        assert json.loads(protocol.encode(msg))["v"] == 5
    wire = protocol.to_wire(Delta(NET.id, 4, groups=(GROUP,), remove_groups=("grp_gone0001",)))
    assert schemas.WireDelta.model_validate(wire).model_dump(exclude_none=True) == wire
    assert set(schemas.WireGroup.model_fields) == set(protocol.group_to_wire(GROUP))


def test_a_delta_without_groups_says_nothing_of_them() -> None:
    wire = protocol.to_wire(Delta(NET.id, 4))
    assert "groups" not in wire and "remove_groups" not in wire


def test_a_status_report_carries_the_members_view_of_its_groups() -> None:
    report = StatusReport("0.2.0", groups=(GroupReport(GroupId("grp_edge0001"), "active", 7,
                                                       (HostId("host_b0001"),)),))
    wire = json.loads(protocol.encode(report))
    assert wire["groups"] == [{"id": "grp_edge0001", "role": "active", "epoch": 7, "down": ["host_b0001"]}]
    assert protocol.decode_status(protocol.encode(report)) == report
    assert "groups" not in json.loads(protocol.encode(StatusReport("0.2.0")))


@pytest.mark.parametrize(("groups", "says"), [
    ([{"id": "edge", "role": "active", "epoch": 1}], "not a gateway group id"),
    ([{"id": "grp_edge0001", "role": "leader", "epoch": 1}], "active or standby"),
    ([{"id": "grp_edge0001", "role": "active", "epoch": -1}], "group epoch"),
    ([{"id": "grp_edge0001", "role": "active", "epoch": True}], "group epoch"),
    ([{"id": "grp_edge0001", "role": "active", "epoch": 1, "down": ["host_a0001"] * 5}], "at most 4"),
    ([{"id": "grp_edge0001", "role": "active", "epoch": 1, "down": ["x"]}], "not a host id"),
    ([{"id": "grp_edge0001", "role": "active", "epoch": 1, "lease": 3}], "unknown group entry field"),
    ([{"id": "grp_edge0001", "role": "active", "epoch": 1}] * 2, "names a group twice"),
    ([{"id": f"grp_edge{i:04d}", "role": "active", "epoch": 1} for i in range(17)], "at most 16"),
])
def test_a_hostile_group_report_is_refused_with_what_is_wrong(groups: list, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        protocol.decode_status({"v": 5, "type": "status", "agent_version": "1", "groups": groups})
