"""The functions run unchanged on the AWS adapters (moto), configured exactly as the
template configures them; every AWS call each one makes is allowed by its own role
in the template, and its role grants nothing that no call needs.

So a deployed function cannot hit AccessDenied on a path exercised here, and a
grant added "just in case" fails this test until someone says why it is needed.
"""

from __future__ import annotations

import copy
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from chalice.test import Client
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iotdata.models import iotdata_backends

from chalicelib.adapters.aws_bootstrap import handle
from chalicelib.adapters.dynamodb.table import table_definition
from chalicelib.domain import protocol
from chalicelib.wiring import set_service
from infra.grants import FUNCTIONS, STACK_TAG
from tests.aws.conftest import patch_moto_certificate_delete

from .conftest import Synthesized
from .evaluate import ACCOUNT, IOT_ARN, REGION, Need, Resolver, allows, as_list, role_statements
from .factories import host_body

TABLE = "skymesh-it"
ENDPOINT = "data-ats.iot.us-east-1.amazonaws.com"  # an endpoint moto's iot-data answers on
HA_RANGE = "10.20.0.0/16"  # the range the HA gateways of the failover runs share

#: Granted but not called in this run, and why that is right.
NOT_EXERCISED = {
    "*": {
        "logs:CreateLogStream": "the Lambda runtime writes the function's logs, not its code",
        "logs:PutLogEvents": "the Lambda runtime writes the function's logs, not its code",
        "kms:Decrypt": "DynamoDB / Secrets Manager use the stack's key on the caller's behalf",
        "kms:DescribeKey": "DynamoDB uses the stack's key on the caller's behalf",
        "kms:Encrypt": "DynamoDB uses the stack's key on the caller's behalf",
        "kms:GenerateDataKey": "DynamoDB / Secrets Manager use the stack's key on the caller's behalf",
        "kms:ReEncryptFrom": "DynamoDB uses the stack's key on the caller's behalf",
        "kms:ReEncryptTo": "DynamoDB uses the stack's key on the caller's behalf",
    },
    "api_handler": {
        "iot:DeleteCertificate": "rollback: a certificate signed but not attached is deleted",
    },
}


# --- recording ------------------------------------------------------------------------------


class Killed(BaseException):
    """The function's process died (a Lambda timeout): no later call of it reaches AWS."""


@dataclass
class Recorder:
    """Every AWS API call, by the function that made it; can make iot-data Publish fail,
    and can kill the function at a call (``kill_at``): that call and all after it fail."""

    phase: str | None = None
    fail_publish: bool = False
    kill_at: tuple[str, str] | None = None
    killed: bool = False
    calls: dict[str, list[tuple[str, str, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))

    def wrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            service = client.meta.service_model.service_name
            if self.killed or (service, operation) == self.kill_at:
                self.killed = True
                raise Killed(operation)
            if self.phase:
                self.calls[self.phase].append((service, operation, copy.deepcopy(params)))
            if self.fail_publish and (service, operation) == ("iot-data", "Publish"):
                raise ClientError({"Error": {"Code": "InvalidRequestException", "Message": "test"}},
                                  operation)
            return original(client, operation, params)

        return make_api_call

    @contextmanager
    def running(self, function: str) -> Iterator[None]:
        self.phase = function
        try:
            yield
        finally:
            self.phase = None


def _pk(key: dict[str, Any]) -> str:
    return str(key["pk"]["S"])


def needs(service: str, operation: str, params: dict[str, Any]) -> list[Need]:
    """The IAM permissions one call needs (action, resource, request context)."""
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/"

    def dynamo(action: str, name: str, pks: list[str] | None) -> Need:
        context = (("dynamodb:LeadingKeys", tuple(pks)),) if pks is not None else ()
        return Need(f"dynamodb:{action}", table + name, context)

    if service == "dynamodb":
        if operation in ("GetItem", "UpdateItem", "DeleteItem"):
            return [dynamo(operation, params["TableName"], [_pk(params["Key"])])]
        if operation == "PutItem":
            return [dynamo(operation, params["TableName"], [_pk(params["Item"])])]
        if operation == "Query":
            name = params["TableName"] + (f"/index/{params['IndexName']}" if params.get("IndexName") else "")
            return [dynamo("Query", name, None)]
        if operation == "BatchGetItem":
            return [dynamo(operation, t, [_pk(k) for k in r["Keys"]])
                    for t, r in params["RequestItems"].items()]
        if operation == "BatchWriteItem":
            return [dynamo(operation, t, [_pk(next(iter(w.values())).get("Key") or
                                              next(iter(w.values()))["Item"]) for w in writes])
                    for t, writes in params["RequestItems"].items()]
        if operation == "TransactWriteItems":
            out = []
            for item in params["TransactItems"]:
                (kind, body), = item.items()
                action = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                          "ConditionCheck": "ConditionCheckItem"}[kind]
                out.append(dynamo(action, body["TableName"], [_pk(body.get("Key") or body["Item"])]))
            return out
    if service == "iot-data" and operation == "Publish":
        return [Need("iot:Publish", f"{IOT_ARN}topic/{params['topic']}")]
    if service == "ec2" and operation == "DescribeAddresses":
        return [Need("ec2:DescribeAddresses", "*")]
    if service == "ec2" and operation == "AssociateAddress":
        # authorized on the address and on where it goes, each with its own tags (aws:ResourceTag)
        ec2 = f"arn:aws:ec2:{REGION}:{ACCOUNT}:"
        target = params.get("NetworkInterfaceId") or params["InstanceId"]
        kind = "network-interface" if target.startswith("eni-") else "instance"
        return [Need("ec2:AssociateAddress", f"{ec2}{arn_kind}/{rid}", _ec2_tags(rid))
                for arn_kind, rid in (("elastic-ip", params["AllocationId"]), (kind, target))]
    if service == "secretsmanager" and operation in ("GetSecretValue", "PutSecretValue"):
        return [Need(f"secretsmanager:{operation}", params["SecretId"])]
    if service == "iot":
        action = f"iot:{operation}"
        thing = f"{IOT_ARN}thing/{params.get('thingName')}"
        group = f"{IOT_ARN}thinggroup/{params.get('thingGroupName')}"
        cert = f"{IOT_ARN}cert/{params.get('certificateId')}"
        by_resource: dict[str, list[Any]] = {
            "CreateThing": [thing], "DeleteThing": [thing], "ListThingPrincipals": [thing],
            "ListThingGroupsForThing": [thing],
            "AddThingToThingGroup": [thing, group], "RemoveThingFromThingGroup": [thing, group],
            "CreateThingGroup": [group], "DescribeThingGroup": [group], "DeleteThingGroup": [group],
            "DescribeCertificate": [cert], "UpdateCertificate": [cert], "DeleteCertificate": [cert],
            "AttachThingPrincipal": [params.get("principal")],
            "DetachThingPrincipal": [params.get("principal")],
            "AttachPolicy": [params.get("target")], "DetachPolicy": [params.get("target")],
            "CreatePolicy": [f"{IOT_ARN}policy/{params.get('policyName')}"],
            "DeletePolicy": [f"{IOT_ARN}policy/{params.get('policyName')}"],
            "CreateCertificateFromCsr": ["*"], "DescribeEndpoint": ["*"],
        }
        if operation in by_resource:
            return [Need(action, str(r)) for r in by_resource[operation]]
    raise AssertionError(f"no IAM mapping for {service}:{operation}; add it to needs() "
                         "and the grant to infra/grants.py")


def _ec2_tags(resource_id: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The request context of an EC2 resource's tags, as IAM sees them (``aws:ResourceTag/KEY``)."""
    tags = boto3.client("ec2", region_name=REGION).describe_tags(
        Filters=[{"Name": "resource-id", "Values": [resource_id]}])["Tags"]
    return tuple((f"aws:ResourceTag/{t['Key']}", (t["Value"],)) for t in tags)


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Run:
    recorder: Recorder
    resolver: Resolver
    published: list[tuple[str, bytes]]
    outcomes: dict[str, Any]


def _function_env(synthesized: Synthesized, resolver: Resolver) -> dict[str, str]:
    envs = [json.dumps(resolver.resolve(f["Properties"]["Environment"]["Variables"]), sort_keys=True)
            for f in synthesized.resources("AWS::Serverless::Function").values()]
    assert len(set(envs)) == 1  # every function is configured alike
    return json.loads(envs[0])


@pytest.fixture(scope="module")
def run(synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    monkeypatch = pytest.MonkeyPatch()
    # A Lambda function's environment is only what the template sets: drop whatever
    # other tests or the machine left (e.g. a DynamoDB Local endpoint).
    for name in list(os.environ):
        if name.startswith(("SKYMESH_", "AWS_")):
            monkeypatch.delenv(name)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                        "AWS_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    recorder = Recorder()
    patch_moto_certificate_delete(monkeypatch)
    monkeypatch.setattr(BaseClient, "_make_api_call", recorder.wrap(BaseClient._make_api_call))
    template = synthesized.template
    set_service(None)  # the service is made from this stage's environment, as in each Lambda
    try:
        with mock_aws():
            boto3.client("dynamodb").create_table(**table_definition(TABLE))
            secret_arn = boto3.client("secretsmanager").create_secret(
                Name="admin-key", SecretString="placeholder")["ARN"]
            table_id = synthesized.logical_id("AWS::DynamoDB::Table", "Table")
            secret_id = synthesized.logical_id("AWS::SecretsManager::Secret", "AdminKeySecret")
            resolver = Resolver(template, synthesized.stack_name,
                                physical={table_id: TABLE, secret_id: secret_arn},
                                attributes={("IotEndpointLookup", "Address"): ENDPOINT})
            (policy,) = synthesized.resources("AWS::IoT::Policy").values()
            boto3.client("iot").create_policy(
                policyName=policy["Properties"]["PolicyName"],
                policyDocument=json.dumps(resolver.resolve(policy["Properties"]["PolicyDocument"])))
            for name, value in _function_env(synthesized, resolver).items():
                monkeypatch.setenv(name, value)
            outcomes = _drive(synthesized, resolver, recorder, monkeypatch, tmp_path_factory)
            published = list(iotdata_backends[DEFAULT_ACCOUNT_ID][REGION].published_payloads)
            yield Run(recorder, resolver, published, outcomes)
    finally:
        set_service(None)
        monkeypatch.undo()


def _drive(synthesized: Synthesized, resolver: Resolver, recorder: Recorder,
           monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What users and AWS do to a fresh stack, function by function."""
    import app as app_module

    out: dict[str, Any] = {}
    (admin_key,) = synthesized.resources("Custom::SkymeshAdminKey").values()
    (iot_endpoint,) = synthesized.resources("Custom::SkymeshIotEndpoint").values()
    sent: list[bytes] = []
    with recorder.running("bootstrap"):
        for resource in (admin_key, iot_endpoint):
            event = {"RequestType": "Create", "ResourceType": resource["Type"],
                     "ResponseURL": "https://cfn.example/r", "StackId": "s", "RequestId": "r",
                     "LogicalResourceId": "l",
                     "ResourceProperties": resolver.resolve(resource["Properties"])}
            for request in ("Create", "Update"):  # a stack update runs it again
                response = handle({**event, "RequestType": request},
                                  client=lambda name: boto3.client(name, region_name=REGION),
                                  region=REGION, send=lambda url, body: sent.append(body))
                assert response["Status"] == "SUCCESS", response
    secret_id = resolver.resolve(admin_key["Properties"]["SecretId"])
    admin = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]

    def tick(client: Client) -> dict[str, Any]:
        return client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event",
                                               detail={}, resources=[])

    with Client(app_module.app, project_dir=str(tmp_path_factory.mktemp("chalice"))) as client:
        def call(method: str, path: str, body: Any = None, token: str = admin) -> Any:
            with recorder.running("api_handler"):
                resp = getattr(client.http, method.lower())(
                    path, headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                    body=None if body is None else json.dumps(body))
            assert resp.status_code < 300, (method, path, resp.status_code, resp.body)
            return json.loads(resp.body) if resp.body else None

        office = call("POST", "/v1/networks", {"name": "office", "ipv4_cidr": "100.64.0.0/16"})
        lab = call("POST", "/v1/networks", {"name": "lab", "ipv4_cidr": "100.65.0.0/16"})
        key = call("POST", "/v1/enrollment-keys", {"networks": [office["id"], lab["id"]], "uses": 5})
        h1 = call("POST", "/v1/hosts", host_body("h1"), token=key["token"])
        h2 = call("POST", "/v1/hosts", host_body("h2"), token=key["token"])
        h1_id, h2_id = h1["host"]["id"], h2["host"]["id"]
        out["registration"] = h1
        call("GET", f"/v1/hosts/{h1_id}/config", token=h1["host_token"])
        call("PATCH", f"/v1/hosts/{h1_id}", {"endpoints": ["198.18.0.9:51820"]}, token=h1["host_token"])
        call("GET", "/v1/hosts")

        with recorder.running("host_report"):
            report = client.lambda_.invoke("host_report", {
                "host_id": h1_id, "v": 1, "type": "status", "agent_version": "0.1.0",
                "endpoints": ["198.18.0.9:51820"], "peers": []}).payload
        out["report"] = report

        monkeypatch.setenv("SKYMESH_OFFLINE_AFTER", "-1")  # everyone is overdue
        set_service(None)  # a new Lambda process: the stage's environment is read again
        with recorder.running("mark_offline"):
            out["offline"] = client.lambda_.invoke(
                "mark_offline", tick(client)).payload
        monkeypatch.delenv("SKYMESH_OFFLINE_AFTER")
        set_service(None)

        recorder.fail_publish = True  # this change's broadcast is left to the sweeper
        call("PATCH", f"/v1/hosts/{h2_id}", {"endpoints": ["198.18.0.7:51820"]}, token=h2["host_token"])
        recorder.fail_publish = False
        with recorder.running("sweep_broadcasts"):
            out["swept"] = client.lambda_.invoke(
                "sweep_broadcasts", tick(client)).payload

        iot = boto3.client("iot", region_name=REGION)
        # A registration dies (Lambda timeout) at its commit: certificate and thing stay
        # until the sweeper runs past the bound (here: at once).
        recorder.kill_at = ("dynamodb", "TransactWriteItems")
        with pytest.raises(Killed), recorder.running("api_handler"):
            client.http.post("/v1/hosts", headers={"Content-Type": "application/json",
                                                   "Authorization": f"Bearer {key['token']}"},
                             body=json.dumps(host_body("dies")))
        recorder.kill_at, recorder.killed = None, False
        (dead,) = {p["thingName"] for _service, op, p in recorder.calls["api_handler"]
                   if op == "CreateThing"} - {h1_id, h2_id}
        (dead_cert,) = iot.list_thing_principals(thingName=dead)["principals"]
        monkeypatch.setenv("SKYMESH_ORPHAN_AFTER", "-1")
        set_service(None)
        with recorder.running("sweep_orphans"):
            out["orphans"] = client.lambda_.invoke("sweep_orphans", tick(client)).payload
        monkeypatch.delenv("SKYMESH_ORPHAN_AFTER")
        set_service(None)
        out["dead"] = {"id": dead, "certificate_left": dead_cert.rsplit("/", 1)[1] in {
            c["certificateId"] for c in iot.list_certificates()["certificates"]},
            "thing_left": dead in [t["thingName"] for t in iot.list_things()["things"]]}

        (h2_cert,) = iot.list_thing_principals(thingName=h2_id)["principals"]
        call("DELETE", f"/v1/hosts/{h2_id}")
        out["h2"] = {"id": h2_id, "certificate_status": iot.describe_certificate(
            certificateId=h2_cert.rsplit("/", 1)[1])["certificateDescription"]["status"],
            "thing_left": h2_id in [t["thingName"] for t in iot.list_things()["things"]]}
        call("DELETE", f"/v1/networks/{lab['id']}?force=true")
        call("DELETE", f"/v1/enrollment-keys/{key['id']}")
        out["h1"] = call("GET", f"/v1/hosts/{h1_id}")
        out["h1_groups"] = sorted(g["groupName"] for g in iot.list_thing_groups_for_thing(
            thingName=h1_id)["thingGroups"])
        out["networks"] = (office["id"], lab["id"])

        # HA gateways g1, g2 serve one range; u sends it to one of them. u's report says that one
        # is down: failover_report moves u to the other and broadcasts it. Then u's report says
        # the other is down: the scheduled failover moves it back.
        ha = call("POST", "/v1/networks", {"name": "ha", "ipv4_cidr": "100.66.0.0/16"})
        ha_key = call("POST", "/v1/enrollment-keys", {"networks": [ha["id"]], "uses": 3})
        ha_hosts = {n: call("POST", "/v1/hosts", host_body(n), token=ha_key["token"])
                    for n in ("g1", "g2", "u")}
        g1, g2, u = (ha_hosts[n]["host"]["id"] for n in ("g1", "g2", "u"))
        for gateway in (g1, g2):
            call("PUT", f"/v1/networks/{ha['id']}/gateways/{gateway}", {"egress": [HA_RANGE]})

        def carrier() -> str:
            cfg = call("GET", f"/v1/hosts/{u}/config?v={protocol.VERSION}", token=ha_hosts["u"]["host_token"])
            (network,) = cfg["networks"]
            (peer,) = [p["host_id"] for p in network["peers"] if HA_RANGE in p["allowed_ips"]]
            return str(peer)

        def report(host_id: str, down: str | None = None) -> dict[str, Any]:
            latency = [{"host": g, "rtt": None if g == down else 5.0, "loss": 100 if g == down else 0,
                        "up": g != down} for g in (g1, g2)] if down else []
            return {"host_id": host_id, "v": protocol.VERSION, "type": "status", "agent_version": "0.1.0",
                    "endpoints": ["198.18.0.10:51820"], "peers": [],
                    **({"latency": latency} if latency else {})}

        with recorder.running("host_report"):
            for gateway in (g1, g2):  # gateways that never reported are silent: no target
                assert client.lambda_.invoke("host_report", report(gateway)).payload == {"recorded": True}
        first = carrier()
        second = g2 if first == g1 else g1
        published_before = len(iotdata_backends[DEFAULT_ACCOUNT_ID][REGION].published_payloads)
        with recorder.running("failover_report"):
            out["failover_report"] = client.lambda_.invoke("failover_report", report(u, down=first)).payload
        moved_to = carrier()
        with recorder.running("host_report"):
            client.lambda_.invoke("host_report", report(u, down=second))
        with recorder.running("failover"):
            out["failover"] = client.lambda_.invoke("failover", tick(client)).payload
        out["ha"] = {"network": ha["id"], "first": first, "second": second, "moved_to": moved_to,
                     "moved_back_to": carrier(), "published_before": published_before}

        # Issue 11: g1 and g2 form a gateway group whose Elastic IP follows the active member. Its
        # address and the members' network interfaces carry the stack's tag (the role's condition).
        ec2 = boto3.client("ec2", region_name=REGION)
        tag = [{"ResourceType": kind, "Tags": [{"Key": STACK_TAG, "Value": synthesized.stack_name}]}
               for kind in ("elastic-ip", "network-interface")]
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        enis = [ec2.create_network_interface(SubnetId=subnet, TagSpecifications=[tag[1]])[
            "NetworkInterface"]["NetworkInterfaceId"] for _ in range(3)]
        allocation = ec2.allocate_address(Domain="vpc", TagSpecifications=[tag[0]])["AllocationId"]
        for gateway in (g1, g2):
            call("PUT", f"/v1/networks/{ha['id']}/gateways/{gateway}",
                 {"egress": [HA_RANGE], "remote_access": True})
        group = call("POST", f"/v1/networks/{ha['id']}/gateway-groups", {
            "name": "edge", "members": [g1, g2], "floating_endpoint": "198.18.50.1:51900",
            "aws": {"allocation_id": allocation, "members": {g1: enis[0], g2: enis[1]}}})

        def on() -> str | None:
            (address,) = ec2.describe_addresses(AllocationIds=[allocation])["Addresses"]
            return address.get("NetworkInterfaceId") or None

        vote = call("POST", f"/v1/networks/{ha['id']}/gateway-groups/{group['id']}/claims",
                    {"member": g1, "epoch": 1, "incarnation": 0}, token=ha_hosts["g1"]["host_token"])
        claimed_on = on()  # a granted vote is no lease: the address stays where it is
        with recorder.running("host_report"):  # g1 won at epoch 1 and says so
            client.lambda_.invoke("host_report", {
                **report(g1), "groups": [{"id": group["id"], "role": "active", "epoch": 1}]})
        first_report_on = on()
        with recorder.running("host_report"):  # g2 won at a higher epoch and says so
            out["group_report"] = client.lambda_.invoke("host_report", {
                **report(g2), "groups": [{"id": group["id"], "role": "active", "epoch": 2}]}).payload
        reported_on = on()
        with recorder.running("host_report"):  # g1 sees g2 down: the correction designates g1 (epoch 3)
            client.lambda_.invoke("host_report", {
                **report(g1), "groups": [{"id": group["id"], "role": "standby", "epoch": 2, "down": [g2]}]})
        corrected_on = on()
        ec2.associate_address(AllocationId=allocation, NetworkInterfaceId=enis[2], AllowReassociation=True)
        with recorder.running("failover"):  # a move that did not land: the schedule puts it right
            client.lambda_.invoke("failover", tick(client))
        out["eip"] = {"enis": enis, "vote": vote, "claimed_on": claimed_on,
                      "first_report_on": first_report_on, "reported_on": reported_on,
                      "corrected_on": corrected_on, "scheduled_on": on(),
                      "record": call("GET", f"/v1/networks/{ha['id']}/gateway-groups/{group['id']}")}
    return out


# --- what users see ---------------------------------------------------------------------------


def test_registration_on_aws_returns_the_iot_endpoint_and_amazon_ca(run: Run) -> None:
    registration = run.outcomes["registration"]
    assert registration["mqtt"]["endpoint"] == ENDPOINT
    assert registration["mqtt"]["client_id"] == registration["host"]["id"]
    assert "BEGIN CERTIFICATE" in registration["certificate_pem"]
    assert "BEGIN CERTIFICATE" in registration["ca_pem"]


def test_reports_schedules_and_sweeper_do_their_job(run: Run) -> None:
    assert run.outcomes["report"] == {"recorded": True}
    # h1 reported (online), then went quiet; h2 never reported, so was never online.
    assert run.outcomes["offline"] == {"offline": [run.outcomes["registration"]["host"]["id"]]}
    assert run.outcomes["swept"]["published"] >= 1
    office, lab = run.outcomes["networks"]
    topics = {topic for topic, _ in run.published}
    assert {f"sm/n/{office}", f"sm/n/{lab}"} <= topics


def test_failover_functions_move_a_host_off_a_gateway_its_report_says_is_down(run: Run) -> None:
    ha = run.outcomes["ha"]
    assert run.outcomes["failover_report"] == {"moved": 1}
    assert ha["moved_to"] == ha["second"]  # the event-driven function moved u off the down one
    assert run.outcomes["failover"] == {"moved": 1}
    assert ha["moved_back_to"] == ha["first"]  # the scheduled one, after a report said the other is down
    # each move went out as a broadcast of the network
    topics = [topic for topic, _ in run.published[ha["published_before"]:]]
    assert topics.count(f"sm/n/{ha['network']}") >= 2


def test_sweeper_deletes_the_certificate_and_thing_of_a_registration_that_died(run: Run) -> None:
    dead = run.outcomes["dead"]
    assert run.outcomes["orphans"] == {"discarded": [dead["id"]]}
    assert (dead["certificate_left"], dead["thing_left"]) == (False, False)


def test_deleting_a_host_revokes_its_certificate_and_removes_its_thing(run: Run) -> None:
    assert run.outcomes["h2"]["certificate_status"] == "REVOKED"
    assert run.outcomes["h2"]["thing_left"] is False


def test_leaving_a_network_leaves_its_thing_group(run: Run, synthesized: Synthesized) -> None:
    office, _lab = run.outcomes["networks"]
    assert [a["network_id"] for a in run.outcomes["h1"]["addresses"]] == [office]
    assert run.outcomes["h1_groups"] == [f"{synthesized.stack_name}-net-{office}"]


# --- IAM --------------------------------------------------------------------------------------


def _role(synthesized: Synthesized, function: str) -> str:
    # "...Role": FailoverRole, not FailoverReportRole
    pascal = "".join(p.capitalize() for p in function.split("_"))
    return synthesized.logical_id("AWS::IAM::Role", f"{pascal}Role")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_call_is_allowed_by_the_functions_own_role(
    run: Run, synthesized: Synthesized, function: str
) -> None:
    statements = role_statements(synthesized.template, _role(synthesized, function), run.resolver)
    calls = run.recorder.calls[function]
    assert calls, f"{function} made no AWS call in this run"
    denied = sorted({f"{n.action} on {n.resource} {n.context_dict() or ''}"
                     for service, operation, params in calls
                     for n in needs(service, operation, params) if not allows(statements, n)})
    assert denied == [], f"{function} would get AccessDenied for:\n" + "\n".join(denied)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_grant_is_needed(run: Run, synthesized: Synthesized, function: str) -> None:
    statements = role_statements(synthesized.template, _role(synthesized, function), run.resolver)
    granted = {a for s in statements for a in as_list(s["Action"])}
    used = {n.action for service, operation, params in run.recorder.calls[function]
            for n in needs(service, operation, params)}
    excused = set(NOT_EXERCISED["*"]) | set(NOT_EXERCISED.get(function, {}))
    assert granted - used - excused == set(), f"{function}: granted, never used"


def test_orphan_sweeper_writes_only_pending_identities(run: Run, synthesized: Synthesized) -> None:
    """It may check that a host item does not exist, but never read or change one."""
    statements = role_statements(synthesized.template, _role(synthesized, "sweep_orphans"), run.resolver)
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}"

    def on(action: str, pk: str) -> bool:
        return allows(statements, Need(action, table, (("dynamodb:LeadingKeys", (pk,)),)))

    for action in ("dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"):
        assert on(action, "IDENTITY#host_x") and not on(action, "HOST#host_x"), action
    assert on("dynamodb:ConditionCheckItem", "HOST#host_x")
    assert not on("dynamodb:ConditionCheckItem", "KEY#key_x")


@pytest.mark.parametrize("function", ["failover_report", "failover"])
def test_failover_functions_touch_only_host_and_network_records(
    run: Run, synthesized: Synthesized, function: str
) -> None:
    """They read and write hosts' roles and their networks' records, never a key, an admin key or an
    identity; they create no host (PutItem only in a network's partition)."""
    statements = role_statements(synthesized.template, _role(synthesized, function), run.resolver)
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}"

    def on(action: str, pk: str) -> bool:
        return allows(statements, Need(action, table, (("dynamodb:LeadingKeys", (pk,)),)))

    for pk in ("KEY#key_x", "ADMIN#admin_x", "IDENTITY#host_x", "WGKEY#x"):
        for action in ("dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:BatchGetItem",
                       "dynamodb:BatchWriteItem"):
            assert not on(action, pk), (action, pk)
    assert on("dynamodb:UpdateItem", "HOST#host_x") and not on("dynamodb:PutItem", "HOST#host_x")
    assert not on("dynamodb:BatchWriteItem", "HOST#host_x")
    assert on("dynamodb:PutItem", "NET#net_x")
    assert on("dynamodb:GetItem", "REGISTRY") == (function == "failover")


def test_a_groups_elastic_ip_follows_its_active_member_on_every_path(run: Run) -> None:
    eip = run.outcomes["eip"]
    assert run.outcomes["group_report"] == {"recorded": True}
    assert eip["vote"] == {"granted": True, "epoch": 1}
    assert eip["claimed_on"] is None, "a granted claim is a vote, not a lease: the address does not move"
    assert (eip["first_report_on"], eip["reported_on"], eip["corrected_on"], eip["scheduled_on"]) == (
        eip["enis"][0], eip["enis"][1], eip["enis"][0], eip["enis"][0])
    assert eip["record"]["epoch"] == 3  # the correction's designation


def test_the_role_moves_only_elastic_ips_tagged_for_its_stack(run: Run, synthesized: Synthesized) -> None:
    statements = role_statements(synthesized.template, _role(synthesized, "failover"), run.resolver)
    address = f"arn:aws:ec2:{REGION}:{ACCOUNT}:elastic-ip/eipalloc-0123456789abcdef0"
    ours = (f"aws:ResourceTag/{STACK_TAG}", (synthesized.stack_name,))
    assert allows(statements, Need("ec2:AssociateAddress", address, (ours,)))
    assert not allows(statements, Need("ec2:AssociateAddress", address))
    assert not allows(statements, Need("ec2:AssociateAddress", address,
                                       ((f"aws:ResourceTag/{STACK_TAG}", ("another-stack",)),)))
