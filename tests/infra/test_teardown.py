"""infra.teardown removes what the API made in AWS IoT, and only the one stack's (moto)."""

from __future__ import annotations

import boto3
import pytest

from chalicelib.adapters.aws_iot_identity import IotIdentity
from chalicelib.domain.ids import HostId, NetworkId
from infra.teardown import execute, main, plan

from .evaluate import REGION
from .factories import csr_pem

POLICY_DOC = '{"Version": "2012-10-17", "Statement": []}'


def _stack(iot: object, stack: str) -> IotIdentity:
    iot.create_policy(policyName=f"{stack}-host", policyDocument=POLICY_DOC)  # type: ignore[attr-defined]
    return IotIdentity(iot, endpoint="e", policy_name=f"{stack}-host", network_prefix=f"{stack}-net-")


def test_teardown_leaves_nothing_of_the_stack_and_spares_others(
    moto_aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    iot = boto3.client("iot", region_name=REGION)
    ours, other = _stack(iot, "sm1"), _stack(iot, "sm2")
    ours.issue(HostId("host_a"), csr_pem())
    ours.set_networks(HostId("host_a"), [NetworkId("net_x"), NetworkId("net_y")])
    ours.issue(HostId("host_b"), csr_pem())  # in no network
    other.issue(HostId("host_c"), csr_pem())
    other.set_networks(HostId("host_c"), [NetworkId("net_z")])

    assert main(["--stack", "sm1", "--region", REGION]) == 0  # a dry run
    assert "2 host(s), 2 network(s)" in capsys.readouterr().out
    assert len(iot.list_things()["things"]) == 3

    todo = plan(iot, "sm1")
    assert sorted(todo.hosts) == ["host_a", "host_b"] and sorted(todo.networks) == ["net_x", "net_y"]
    execute(iot, todo)

    assert [t["thingName"] for t in iot.list_things()["things"]] == ["host_c"]
    assert iot.list_targets_for_policy(policyName="sm1-host")["targets"] == []  # cdk destroy can delete it
    assert [g["groupName"] for g in iot.list_thing_groups()["thingGroups"]] == ["sm2-net-net_z"]
    policies = sorted(p["policyName"] for p in iot.list_policies()["policies"])
    assert policies == ["sm1-host", "sm2-host", "sm2-net-net_z"]
    statuses = {c["certificateId"]: c["status"] for c in iot.list_certificates()["certificates"]}
    assert sorted(statuses.values()) == ["ACTIVE", "REVOKED", "REVOKED"]
    execute(iot, plan(iot, "sm1"))  # again: nothing left, nothing fails
