"""An HA gateway group's AWS Elastic IP (issue 11) through the API, with EC2 on moto: the group names
its address and every member's network interface, bad settings get a 400 that says what to fix, and
the address follows the recorded active member (a member's report, a correction, the schedule), never
a claim the control plane merely voted for."""

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
from .test_groups import FLOATING, _broadcasts, _groups, _ids, _report

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


def _with_address(api: Api, net: dict[str, Any], hosts: dict[str, Any], ec2: Any,
                  enis: list[str]) -> tuple[dict[str, Any], str, dict[str, str]]:
    """Group edge of g1, g2, g3 with an Elastic IP and one interface per member: (group, allocation
    id, targets)."""
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    targets = {hosts[n]["id"]: eni for n, eni in zip(("g1", "g2", "g3"), enis, strict=False)}
    group = api.ok("POST", _groups(net), {"name": "edge", "members": list(targets),
                                          "floating_endpoint": FLOATING,
                                          "aws": {"allocation_id": allocation, "members": targets}})
    return group, allocation, targets


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
    group, allocation, targets = _with_address(api, net, hosts, ec2, enis)
    assert group["aws"] == {"allocation_id": allocation, "members": targets}
    assert _on(ec2, allocation) is None
    # g1 reports that it won at epoch 1: the address is on g1's interface when the report is handled
    assert _report(service, g1, group, "active", 1)
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


def test_a_failed_move_never_fails_the_report_and_says_why_in_the_log(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service, ec2: Any,
        enis: list[str], caplog: pytest.LogCaptureFixture) -> None:
    g1, g2 = hosts["g1"], hosts["g2"]
    unknown = "eipalloc-0123456789abcdef0"  # no such address in the account: EC2 refuses the move
    group = api.ok("POST", _groups(net), {
        "name": "edge", "members": [g1["id"], g2["id"]], "floating_endpoint": FLOATING,
        "aws": {"allocation_id": unknown, "members": {g1["id"]: enis[0], g2["id"]: enis[1]}}})
    assert _report(service, g1, group, "active", 1)
    assert api.ok("GET", f"{_groups(net)}/{group['id']}")["active"] == g1["id"]
    assert f"Elastic IP {unknown} does not exist" in caplog.text


def test_a_granted_claim_of_a_member_the_others_refuse_moves_neither_the_record_nor_the_address(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service, ec2: Any,
        enis: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A member back from a crash whose probes do not see the others yet claims, and gets the control
    plane's vote (its promise to the healthy active member has expired) while the other members refuse
    it: one vote of several is no lease, so every host keeps routing the group's clients to the member
    that is active, and the address stays on it."""
    g1, g2 = hosts["g1"], hosts["g2"]
    group, allocation, _ = _with_address(api, net, hosts, ec2, enis)
    claims = f"{_groups(net)}/{group['id']}/claims"
    assert api.ok("POST", claims, {"member": g1["id"], "epoch": 1, "incarnation": 0}, token=g1["token"],
                  status=200)["granted"]
    assert _report(service, g1, group, "active", 1)
    assert _on(ec2, allocation) == enis[0]
    # g1 renews with g2 and g3 from here on; the control plane's promise to it runs out
    now, now_ns = service.deps.clock.now, service.deps.clock.now_ns
    monkeypatch.setattr(service.deps.clock, "now_ns", lambda: now_ns() + 60 * 10**9)
    monkeypatch.setattr(service.deps.clock, "now", lambda: now() + 60)
    assert _report(service, g1, group, "active", 1)
    before = len(_broadcasts(service, net))
    assert api.ok("POST", claims, {"member": g2["id"], "epoch": 2, "incarnation": 1}, token=g2["token"],
                  status=200) == {"granted": True, "epoch": 2}, "the control plane's vote alone"
    recorded = api.ok("GET", f"{_groups(net)}/{group['id']}")
    assert (recorded["active"], recorded["epoch"]) == (g1["id"], 1)
    assert len(_broadcasts(service, net)) == before, "no host is told to route the clients elsewhere"
    assert _on(ec2, allocation) == enis[0]
    [snap] = api.ok("GET", f"/v1/hosts/{hosts['a']['id']}/config?v=5", token=hosts["a"]["token"])["networks"]
    assert snap["groups"][0]["active"] == g1["id"]
