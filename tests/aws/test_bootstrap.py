"""The stack's deploy-time custom resources (moto): the first admin key and the IoT endpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.adapters import local_ca
from chalicelib.adapters.aws_bootstrap import ADMIN_KEY_TYPE, IOT_ENDPOINT_TYPE, handle
from chalicelib.adapters.dynamodb.table import table_definition
from chalicelib.config import StageConfig
from chalicelib.errors import UnauthorizedError
from chalicelib.wiring import build_service

from .conftest import REGION

TABLE = "skymesh-bootstrap-test"


class Sent:
    """Stands in for the PUT to CloudFormation's ResponseURL."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, url: str, body: bytes) -> None:
        self.bodies.append((url, json.loads(body)))


@pytest.fixture
def aws(moto_aws: None) -> Iterator[dict[str, Any]]:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(**table_definition(TABLE))
    secrets = boto3.client("secretsmanager", region_name=REGION)
    secret = secrets.create_secret(Name="skymesh/admin-key", SecretString="generated-by-cfn!#")
    yield {"secrets": secrets, "secret_arn": secret["ARN"]}


def _event(kind: str, request: str = "Create", **props: str) -> dict[str, Any]:
    return {
        "RequestType": request, "ResourceType": kind, "ResponseURL": "https://cfn.example/r",
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/skymesh/1",
        "RequestId": "req-1", "LogicalResourceId": "FirstAdminKey",
        "ResourceProperties": {"ServiceToken": "arn:...", **props},
    }


def _run(event: dict[str, Any]) -> tuple[dict[str, Any], Sent]:
    sent = Sent()
    response = handle(event, client=lambda name: boto3.client(name, region_name=REGION),
                      region=REGION, send=sent)
    return response, sent


def _secret(aws: dict[str, Any]) -> str:
    return aws["secrets"].get_secret_value(SecretId=aws["secret_arn"])["SecretString"]


def _service() -> Any:
    return build_service(StageConfig(adapters="memory", table=TABLE, region=REGION))


def test_create_stores_an_admin_key_the_api_accepts(aws: dict[str, Any]) -> None:
    response, sent = _run(_event(ADMIN_KEY_TYPE, SecretId=aws["secret_arn"], TableName=TABLE))

    token = _secret(aws)
    assert token.startswith("skm_ak_")
    assert _service().auth.admin(token).name == "admin"  # what the API checks on every call
    assert response["Status"] == "SUCCESS"
    assert sent.bodies == [("https://cfn.example/r", response)]
    assert token not in json.dumps(response)  # the token is only in the secret
    scanned = boto3.client("dynamodb", region_name=REGION).scan(TableName=TABLE)["Items"]
    assert token not in json.dumps(scanned)  # the table holds its hash only


def test_the_admin_key_step_makes_no_certificate_authority(
        aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """It needs the table and the secret only: no publisher, no identity, and above all no
    throw-away CA key pair made (and dropped) in the deployed stack on every deploy."""
    def no_ca(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the admin-key step made a certificate authority")

    table = "skymesh-bootstrap-no-ca"  # a table no other test used in this process
    boto3.client("dynamodb", region_name=REGION).create_table(**table_definition(table))
    with monkeypatch.context() as patched:
        patched.setattr(local_ca, "create_ca", no_ca)
        response, _ = _run(_event(ADMIN_KEY_TYPE, SecretId=aws["secret_arn"], TableName=table))
    assert response["Status"] == "SUCCESS", response["Reason"]
    token = _secret(aws)
    assert build_service(StageConfig(adapters="memory", table=table, region=REGION)).auth.admin(
        token).name == "admin"


def test_update_keeps_a_valid_key(aws: dict[str, Any]) -> None:
    event = _event(ADMIN_KEY_TYPE, SecretId=aws["secret_arn"], TableName=TABLE)
    first, _ = _run(event)
    token = _secret(aws)
    second, _ = _run({**event, "RequestType": "Update",
                      "PhysicalResourceId": first["PhysicalResourceId"]})
    assert _secret(aws) == token
    assert second["PhysicalResourceId"] == first["PhysicalResourceId"]  # no replacement


def test_a_key_the_table_does_not_know_is_replaced(aws: dict[str, Any]) -> None:
    stale = "skm_ak_adm_000000000000_" + "x" * 43
    aws["secrets"].put_secret_value(SecretId=aws["secret_arn"], SecretString=stale)
    _run(_event(ADMIN_KEY_TYPE, SecretId=aws["secret_arn"], TableName=TABLE))
    token = _secret(aws)
    assert token != stale
    _service().auth.admin(token)
    with pytest.raises(UnauthorizedError):
        _service().auth.admin(stale)


def test_failure_is_reported_to_cloudformation(aws: dict[str, Any]) -> None:
    response, sent = _run(_event(ADMIN_KEY_TYPE, SecretId=aws["secret_arn"], TableName="no-such-table"))
    assert response["Status"] == "FAILED"
    assert "ResourceNotFoundException" in response["Reason"] or "no-such-table" in response["Reason"]
    assert len(sent.bodies) == 1


def test_missing_property_is_reported(aws: dict[str, Any]) -> None:
    response, _ = _run(_event(ADMIN_KEY_TYPE, TableName=TABLE))
    assert response["Status"] == "FAILED" and "SecretId" in response["Reason"]


def test_iot_endpoint_is_returned_as_address(moto_aws: None) -> None:
    response, _ = _run(_event(IOT_ENDPOINT_TYPE))
    assert response["Status"] == "SUCCESS"
    address = response["Data"]["Address"]
    assert re.fullmatch(r"[a-z0-9]+-ats\.iot\.us-east-1\.amazonaws\.com", address)
    assert response["PhysicalResourceId"] == address


def test_iot_endpoint_access_denied_names_the_action() -> None:
    iot = boto3.client("iot", region_name=REGION)
    sent = Sent()
    with Stubber(iot) as stub:
        stub.add_client_error("describe_endpoint", "AccessDeniedException", "not authorized", 403)
        response = handle(_event(IOT_ENDPOINT_TYPE), client=lambda name: iot, region=REGION, send=sent)
    assert response["Status"] == "FAILED"
    assert "AccessDeniedException" in response["Reason"] and "DescribeEndpoint" in response["Reason"]


def test_delete_does_nothing_and_succeeds() -> None:
    def no_client(name: str) -> Any:
        raise AssertionError(f"delete must not call AWS ({name})")

    sent = Sent()
    response = handle({**_event(ADMIN_KEY_TYPE, "Delete"), "PhysicalResourceId": "t/first-admin-key"},
                      client=no_client, region=REGION, send=sent)
    assert response["Status"] == "SUCCESS" and response["PhysicalResourceId"] == "t/first-admin-key"


def test_unknown_resource_type_fails_clearly() -> None:
    response, _ = _run(_event("Custom::Other"))
    assert response["Status"] == "FAILED" and "Custom::Other" in response["Reason"]
