"""On DynamoDB Local: the private key the server makes for a client is in no item of the table."""

from __future__ import annotations

from typing import Any

import boto3

from chalicelib.service import Service

from .conftest import Api
from .test_clients import hosts, net  # noqa: F401 - fixtures


def _whole_table(stage: dict[str, str]) -> str:
    """Every item of the stage's table, as text."""
    client = boto3.client("dynamodb", endpoint_url=stage["SKYMESH_DYNAMODB_ENDPOINT"],
                          region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
    items: list[Any] = []
    for page in client.get_paginator("scan").paginate(TableName=stage["SKYMESH_TABLE"], ConsistentRead=True):
        items.extend(page["Items"])
    assert items
    return repr(items)


def test_a_server_made_private_key_is_stored_in_no_item(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service,  # noqa: F811
        stage: dict[str, str]) -> None:
    base = f"/v1/networks/{net['id']}/clients"
    made = api.ok("POST", base, {"name": "phone", "gateway": hosts["g"]["id"]})
    rotated = api.ok("POST", f"{base}/{made['client']['id']}/rotate-key", status=200)
    table = _whole_table(stage)
    assert rotated["client"]["public_key"] in table  # the search finds what is stored
    for answer in (made, rotated):
        [private] = [line.split(" = ", 1)[1] for line in answer["config"].splitlines()
                     if line.startswith("PrivateKey = ")]
        assert private not in table
