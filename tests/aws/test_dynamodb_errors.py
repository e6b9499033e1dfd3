"""DynamoDB: what the table adapter does when AWS throttles, denies or has no table (botocore's
Stubber on the adapter's own clients; moto for the rest). What each failed condition means
is part of the store's contract: ``tests/contract/test_store_contract.py`` checks it on
DynamoDB Local and on the in-memory store alike."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.adapters.dynamodb import DynamoStore
from chalicelib.adapters.dynamodb.table import table_definition
from chalicelib.errors import UnavailableError

from .conftest import REGION

TABLE = "skymesh-errors"


@pytest.fixture
def store(moto_aws: None) -> DynamoStore:
    boto3.client("dynamodb", region_name=REGION).create_table(**table_definition(TABLE))
    return DynamoStore(TABLE, endpoint_url=None, region=REGION)


def _client_of(model: Any) -> Any:
    """The botocore client an item class talks through."""
    return model._get_connection().connection.client


@pytest.fixture
def host_stub(store: DynamoStore) -> Iterator[Stubber]:
    with Stubber(_client_of(store._items.host)) as stub:
        yield stub
        stub.assert_no_pending_responses()


def test_clients_retry_throttling_before_giving_up(store: DynamoStore) -> None:
    """On AWS, botocore retries throttled calls (standard mode) before the adapter sees them."""
    retries = _client_of(store._items.host).meta.config.retries
    assert retries["mode"] == "standard" and retries["total_max_attempts"] >= 3


def test_throttling_that_outlasts_the_retries_is_unavailable(store: DynamoStore, host_stub: Stubber) -> None:
    host_stub.add_client_error("get_item", "ProvisionedThroughputExceededException",
                               "The level of configured provisioned throughput for the table was exceeded",
                               400)
    with pytest.raises(UnavailableError) as info:
        store.get_host("host_a")
    assert info.value.status == 503
    assert "ProvisionedThroughputExceeded" in info.value.message


def test_missing_table_is_unavailable_and_says_so(moto_aws: None) -> None:
    store = DynamoStore("no-such-table", endpoint_url=None, region=REGION)
    with pytest.raises(UnavailableError) as info:
        store.get_host("host_a")
    assert info.value.status == 503
    assert "ResourceNotFoundException" in info.value.message or "not found" in info.value.message


def test_access_denied_is_unavailable_with_aws_message(store: DynamoStore, host_stub: Stubber) -> None:
    host_stub.add_client_error("get_item", "AccessDeniedException",
                               "User: arn:aws:sts::1:assumed-role/x is not authorized to perform: "
                               "dynamodb:GetItem", 400)
    with pytest.raises(UnavailableError, match="dynamodb:GetItem"):
        store.get_host("host_a")
