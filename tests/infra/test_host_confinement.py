"""What a host's certificate lets it do on AWS IoT: the stack's host policy (from the
template) plus the policies of the thing groups the API put the host in (moto),
evaluated as AWS IoT evaluates them for a connection of that thing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib.adapters.aws_env import aws_adapters
from chalicelib.adapters.aws_iot_policies import basic_ingest_topic
from chalicelib.config import StageConfig
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.domain.protocol import host_inbox_topic, host_status_topic, network_topic

from .conftest import Synthesized
from .evaluate import IOT_ARN, REGION, Resolver, iot_allows
from .factories import csr_pem

A, B = "host_aaaaaaaaaaaa", "host_bbbbbbbbbbbb"
OFFICE, LAB = "net_office000001", "net_lab000000001"


@pytest.fixture
def fleet(moto_aws: None, synthesized: Synthesized) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The host policy deployed; host A in office and lab, host B in office only."""
    (policy,) = synthesized.resources("AWS::IoT::Policy").values()
    document = Resolver(synthesized.template, synthesized.stack_name).resolve(
        policy["Properties"]["PolicyDocument"])
    boto3.client("iot", region_name=REGION).create_policy(
        policyName=policy["Properties"]["PolicyName"], policyDocument=json.dumps(document))
    function = synthesized.template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    stage = StageConfig.from_env({
        "SKYMESH_PUBLISHER": "iot", "SKYMESH_IDENTITY": "iot",
        "AWS_REGION": REGION, "SKYMESH_IOT_ENDPOINT": "data-ats.iot.us-east-1.amazonaws.com",
        "SKYMESH_IOT_POLICY": function["SKYMESH_IOT_POLICY"],
        "SKYMESH_IOT_NETWORK_PREFIX": function["SKYMESH_IOT_NETWORK_PREFIX"],
        "SKYMESH_IOT_STATUS_RULE": function["SKYMESH_IOT_STATUS_RULE"]})
    assert stage.aws is not None
    _, identity = aws_adapters(stage.aws)
    for host, networks in ((A, [OFFICE, LAB]), (B, [OFFICE])):
        identity.issue(HostId(host), csr_pem())
        identity.set_networks(HostId(host), [NetworkId(n) for n in networks])
    yield identity, document


def _documents(host: str) -> list[dict[str, Any]]:
    """Every policy that applies to ``host``'s connection: its certificate's and its groups'."""
    iot = boto3.client("iot", region_name=REGION)
    documents = []
    (principal,) = iot.list_thing_principals(thingName=host)["principals"]
    groups = iot.list_thing_groups_for_thing(thingName=host)["thingGroups"]
    targets = [principal] + [g["groupArn"] for g in groups]
    for target in targets:
        for policy in iot.list_attached_policies(target=target)["policies"]:
            documents.append(json.loads(iot.get_policy(policyName=policy["policyName"])["policyDocument"]))
    return documents


def _can(host: str, action: str, resource: str, **kw: Any) -> bool:
    return iot_allows(_documents(host), action, f"{IOT_ARN}{resource}", thing_name=host, **kw)


def test_a_host_connects_only_as_itself(fleet: Any) -> None:
    assert _can(A, "iot:Connect", f"client/{A}")
    assert not _can(A, "iot:Connect", f"client/{B}")  # no session takeover
    assert not _can(A, "iot:Connect", f"client/{A}", attached=False)


def test_a_host_reads_the_broadcasts_of_its_networks_only(fleet: Any) -> None:
    for network in (OFFICE, LAB):
        assert _can(A, "iot:Subscribe", f"topicfilter/{network_topic(network)}")
        assert _can(A, "iot:Receive", f"topic/{network_topic(network)}")
    assert _can(B, "iot:Receive", f"topic/{network_topic(OFFICE)}")
    assert not _can(B, "iot:Subscribe", f"topicfilter/{network_topic(LAB)}")
    assert not _can(B, "iot:Receive", f"topic/{network_topic(LAB)}")
    assert not _can(B, "iot:Subscribe", "topicfilter/sm/n/#")  # no wildcard subscriptions


def test_a_host_reads_only_its_own_inbox(fleet: Any) -> None:
    assert _can(A, "iot:Subscribe", f"topicfilter/{host_inbox_topic(A)}")
    assert _can(A, "iot:Receive", f"topic/{host_inbox_topic(A)}")
    assert not _can(A, "iot:Subscribe", f"topicfilter/{host_inbox_topic(B)}")
    assert not _can(A, "iot:Receive", f"topic/{host_inbox_topic(B)}")


def test_a_host_publishes_only_its_own_status(fleet: Any, synthesized: Synthesized) -> None:
    rule = f"{synthesized.stack_name.replace('-', '_')}_host_status"
    assert _can(A, "iot:Publish", f"topic/{host_status_topic(A)}")
    assert _can(A, "iot:Publish", f"topic/{basic_ingest_topic(rule, A)}")
    assert not _can(A, "iot:Publish", f"topic/{host_status_topic(B)}")  # no forged reports
    assert not _can(A, "iot:Publish", f"topic/{basic_ingest_topic(rule, B)}")
    assert not _can(A, "iot:Publish", f"topic/{network_topic(OFFICE)}")  # no forged broadcasts
    assert not _can(A, "iot:Publish", f"topic/{host_inbox_topic(B)}")


def test_leaving_a_network_stops_its_broadcasts(fleet: Any) -> None:
    identity, _ = fleet
    identity.set_networks(HostId(A), [NetworkId(OFFICE)])
    assert not _can(A, "iot:Receive", f"topic/{network_topic(LAB)}")
    assert _can(A, "iot:Receive", f"topic/{network_topic(OFFICE)}")


def test_a_revoked_host_can_do_nothing(fleet: Any) -> None:
    identity, _ = fleet
    iot = boto3.client("iot", region_name=REGION)
    (principal,) = iot.list_thing_principals(thingName=B)["principals"]
    cert_id = principal.rsplit("/", 1)[1]
    identity.revoke(HostId(B), cert_id)
    description = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    assert description["status"] == "REVOKED"  # AWS IoT refuses the TLS handshake
    assert iot.list_attached_policies(target=principal)["policies"] == []
    assert B not in [t["thingName"] for t in iot.list_things()["things"]]


def test_network_policy_and_group_can_be_removed(fleet: Any, synthesized: Synthesized) -> None:
    identity, _ = fleet
    identity.set_networks(HostId(A), [NetworkId(OFFICE)])
    identity.remove_network(LAB)
    iot = boto3.client("iot", region_name=REGION)
    name = f"{synthesized.stack_name}-net-{LAB}"
    assert name not in [g["groupName"] for g in iot.list_thing_groups()["thingGroups"]]
    assert name not in [p["policyName"] for p in iot.list_policies()["policies"]]


def test_the_status_topic_the_api_hands_out_is_one_only_that_host_may_publish_to(fleet) -> None:
    identity, _ = fleet
    topic = identity.status_topic(HostId(A))
    assert topic.startswith("$aws/rules/")  # Basic Ingest: no broker messaging charge
    assert _can(A, "iot:Publish", f"topic/{topic}")
    assert not _can(B, "iot:Publish", f"topic/{topic}")
