"""An HA gateway group's AWS Elastic IP (issue 11) through the API, with EC2 on moto: the group names
its address and every member's network interface, bad settings get a 400 that says what to fix, and
the address follows the recorded active member (a granted claim, a report, the schedule)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.adapters.aws_addresses import EC2_CONFIG, Ec2AddressMover
from chalicelib.service import Service

from . import test_groups as _g
from .conftest import Api
from .test_groups import FLOATING, _groups, _ids

net, hosts = _g.net, _g.hosts  # fixtures

pytestmark = pytest.mark.memory_store  # the API and EC2; the store is held to DynamoDB's by tests/contract


@pytest.fixture
def ec2(service: Service) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("ec2", region_name="us-east-1", config=EC2_CONFIG)
        service.deps.mover = Ec2AddressMover(client)
        yield client


@pytest.fixture
def enis(ec2: Any) -> list[str]:
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    return [ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
            for _ in range(3)]


def _on(ec2: Any, allocation_id: str) -> str | None:
    (address,) = ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"]
    return address.get("NetworkInterfaceId") or None


def test_bad_aws_settings_get_a_400_that_says_what_to_fix_and_nothing_is_written(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], enis: list[str]) -> None:
    g1, g2, a = _ids(hosts, "g1", "g2", "a")
    base = {"name": "edge", "members": [g1, g2], "floating_endpoint": FLOATING}
    for aws, says in (
            ({"allocation_id": "eip-1", "members": {g1: enis[0], g2: enis[1]}}, "allocation_id"),
            ({"allocation_id": "eipalloc-0123456789abcdef0", "members": {g1: enis[0]}}, g2),
            ({"allocation_id": "eipalloc-0123456789abcdef0", "members": {g1: enis[0], g2: "sg-12345678"}},
             "members"),
            ({"allocation_id": "eipalloc-0123456789abcdef0",
              "members": {g1: enis[0], g2: enis[1], a: enis[2]}}, "not a member")):
        code, out = api.call("POST", _groups(net), {**base, "aws": aws})
        assert code == 400 and says in out["error"]["message"], (aws, out)
    assert api.ok("GET", _groups(net))["groups"] == []


def test_the_elastic_ip_follows_the_recorded_active_member(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service, ec2: Any,
        enis: list[str]) -> None:
    g1, g2, g3 = hosts["g1"], hosts["g2"], hosts["g3"]
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    targets = {g1["id"]: enis[0], g2["id"]: enis[1], g3["id"]: enis[2]}
    group = api.ok("POST", _groups(net), {"name": "edge", "members": list(targets),
                                          "floating_endpoint": FLOATING,
                                          "aws": {"allocation_id": allocation, "members": targets}})
    assert group["aws"] == {"allocation_id": allocation, "members": targets}
    assert _on(ec2, allocation) is None
    # a granted claim records g1 active: the address is on g1's interface when the answer comes
    assert api.ok("POST", f"{_groups(net)}/{group['id']}/claims",
                  {"member": g1["id"], "epoch": 1, "incarnation": 0}, token=g1["token"],
                  status=200)["granted"]
    assert _on(ec2, allocation) == enis[0]
    # g2 reports that it won at a higher epoch: the record and the address follow (reassociated)
    assert service.status.record(g2["id"], {"v": 5, "type": "status", "agent_version": "0.2.0",
                                            "groups": [{"id": group["id"], "role": "active", "epoch": 2}]})
    assert _on(ec2, allocation) == enis[1]
    # a move that did not land (here: someone put the address back) is done again by the schedule
    ec2.associate_address(AllocationId=allocation, NetworkInterfaceId=enis[2], AllowReassociation=True)
    service.failover.run()
    assert _on(ec2, allocation) == enis[1]
    # removing a member drops its target; adding one needs a target for it
    out = api.ok("PATCH", f"{_groups(net)}/{group['id']}", {"remove": [g3["id"]]})
    assert out["group"]["aws"]["members"] == {g1["id"]: enis[0], g2["id"]: enis[1]}
    code, out = api.call("PATCH", f"{_groups(net)}/{group['id']}", {"add": [g3["id"]]})
    assert code == 400 and g3["id"] in out["error"]["message"], out
    out = api.ok("PATCH", f"{_groups(net)}/{group['id']}", {"aws": None})
    assert out["group"]["aws"] is None


def test_a_failed_move_never_fails_the_claim_and_says_why_in_the_log(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service, ec2: Any,
        enis: list[str], caplog: pytest.LogCaptureFixture) -> None:
    g1, g2 = hosts["g1"], hosts["g2"]
    unknown = "eipalloc-0123456789abcdef0"  # no such address in the account: EC2 refuses the move
    group = api.ok("POST", _groups(net), {
        "name": "edge", "members": [g1["id"], g2["id"]], "floating_endpoint": FLOATING,
        "aws": {"allocation_id": unknown, "members": {g1["id"]: enis[0], g2["id"]: enis[1]}}})
    assert api.ok("POST", f"{_groups(net)}/{group['id']}/claims",
                  {"member": g1["id"], "epoch": 1, "incarnation": 0}, token=g1["token"],
                  status=200) == {"granted": True, "epoch": 1}
    assert api.ok("GET", f"{_groups(net)}/{group['id']}")["active"] == g1["id"]
    assert f"Elastic IP {unknown} does not exist" in caplog.text
