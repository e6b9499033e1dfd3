"""Deploy-time steps of the AWS stack, run by CloudFormation as custom resources.

One Lambda handler (:func:`handler`, packaged with the app) serves two resource types:

``Custom::SkymeshAdminKey`` (properties ``SecretId``, ``TableName``)
    Makes sure the first admin key exists: if the secret already holds an admin
    key the table knows, it is kept; otherwise a new key is made — its SHA-256
    hash goes into the table like every admin key, the token itself only into
    the Secrets Manager secret (encrypted with the stack's KMS key). The token is
    never put in the response, logs or the template. Read it with
    ``aws secretsmanager get-secret-value --secret-id <AdminKeySecretArn>``.

``Custom::SkymeshIotEndpoint``
    Looks up the account's AWS IoT ATS data endpoint (``iot:DescribeEndpoint``),
    which CloudFormation cannot; the stack hands it to the functions as
    ``SKYMESH_IOT_ENDPOINT`` and prints it as an output. Attribute ``Address``.

Deleting either resource does nothing: the table (kept by default) still holds
the key's hash, and the endpoint belongs to the account.

Every request gets an answer on CloudFormation's pre-signed ``ResponseURL``, also
when a step fails (otherwise the stack would wait an hour for it).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..domain.ids import parse_token
from .aws_iot_data import aws_error_code, unavailable_error

__all__ = ["handler", "handle", "ADMIN_KEY_TYPE", "IOT_ENDPOINT_TYPE"]

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)

ADMIN_KEY_TYPE = "Custom::SkymeshAdminKey"
IOT_ENDPOINT_TYPE = "Custom::SkymeshIotEndpoint"

#: Sends a CloudFormation response: (ResponseURL, JSON body).
Send = Callable[[str, bytes], None]


class BootstrapError(Exception):
    """A deploy-time step failed; the message is shown in the CloudFormation events."""


def put_response(url: str, body: bytes, *, attempts: int = 4) -> None:
    """PUT ``body`` to CloudFormation's pre-signed ``url``, retrying network errors briefly."""
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=body, method="PUT",
                                         headers={"Content-Type": "", "Content-Length": str(len(body))})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                resp.read()
            return
        except OSError as err:
            if attempt + 1 == attempts:
                raise
            log.warning("sending the CloudFormation response failed (%s); retrying", err)
            time.sleep(0.5 * 2**attempt)


def ensure_admin_key(secrets: Any, table: str, secret_id: str, region: str) -> str:
    """Make sure ``secret_id`` holds an admin key ``table`` accepts; returns the key's id.

    Idempotent: a valid key in the secret is kept, so an update or a re-run of the
    stack never invalidates the key people already use. Only the table and the secret
    are touched: no publisher or certificate authority is made for this.
    """
    from ..wiring import admin_keys  # admin keys exactly as the API checks them

    try:
        current = secrets.get_secret_value(SecretId=secret_id).get("SecretString") or ""
    except ClientError as err:
        if aws_error_code(err) != "ResourceNotFoundException":
            raise
        current = ""
    existing = current.strip() if current.strip().startswith("skm_") else None
    token = admin_keys(table, region=region).ensure_admin_key(existing)
    if token != existing:
        secrets.put_secret_value(SecretId=secret_id, SecretString=token)
        log.info("stored a new admin key in %s", secret_id)
    else:
        log.info("the admin key in %s is valid; kept", secret_id)
    parsed = parse_token(token)
    return parsed.record_id if parsed else "admin"


def iot_data_endpoint(iot: Any) -> str:
    """The account's ATS data endpoint host (``xxxx-ats.iot.<region>.amazonaws.com``)."""
    return str(iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"])


def handle(
    event: Mapping[str, Any],
    *,
    client: Callable[[str], Any],
    region: str,
    send: Send = put_response,
) -> dict[str, Any]:
    """Carry out one CloudFormation custom-resource request and send its response.

    ``client(name)`` makes a boto3 client. Returns the response that was sent
    (without secrets; for tests and logs).
    """
    request = event.get("RequestType", "")
    kind = event.get("ResourceType", "")
    props = event.get("ResourceProperties", {}) or {}
    physical = str(event.get("PhysicalResourceId") or f"{kind}-{event.get('LogicalResourceId', '')}")
    data: dict[str, str] = {}
    status, reason = "SUCCESS", "OK"
    try:
        if request in ("Create", "Update"):
            if kind == ADMIN_KEY_TYPE:
                for name in ("SecretId", "TableName"):
                    if not props.get(name):
                        raise BootstrapError(f"{kind} needs the property {name}")
                ensure_admin_key(client("secretsmanager"), str(props["TableName"]),
                                 str(props["SecretId"]), region)
                physical = f"{props['TableName']}/first-admin-key"
            elif kind == IOT_ENDPOINT_TYPE:
                data["Address"] = iot_data_endpoint(client("iot"))
                physical = data["Address"]
            else:
                raise BootstrapError(f"unknown resource type {kind!r}")
        elif request != "Delete":
            raise BootstrapError(f"unknown request type {request!r}")
    except (ClientError, BotoCoreError) as err:
        label = getattr(err, "operation_name", "") or kind or "bootstrap"
        status, reason = "FAILED", unavailable_error(err, label).message
    except Exception as err:  # every failure must still answer CloudFormation
        status, reason = "FAILED", f"{type(err).__name__}: {err}"
    if status == "FAILED":
        log.error("%s %s failed: %s", request, kind, reason)
    response = {
        "Status": status,
        "Reason": reason[:1000],
        "PhysicalResourceId": physical,
        "StackId": event.get("StackId"),
        "RequestId": event.get("RequestId"),
        "LogicalResourceId": event.get("LogicalResourceId"),
        "NoEcho": False,
        "Data": data,
    }
    send(str(event.get("ResponseURL", "")), json.dumps(response).encode())
    return response


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point (``chalicelib.adapters.aws_bootstrap.handler``)."""
    import boto3

    from .aws_env import CLIENT_CONFIG

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    session = boto3.session.Session(region_name=region)
    return handle(event, client=lambda name: session.client(name, config=CLIENT_CONFIG),
                  region=region)
