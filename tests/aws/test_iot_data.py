"""IotDataPublisher: the iot-data Publish contract (moto) and its error paths (Stubber)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iotdata.models import iotdata_backends

from chalicelib.adapters.aws_iot_data import IotDataPublisher
from chalicelib.domain.protocol import network_topic
from chalicelib.errors import UnavailableError

from .conftest import REGION, no_sleep


def _client() -> Any:
    return boto3.client("iot-data", region_name=REGION)


def test_publish_reaches_iot_data(moto_aws: None) -> None:
    publisher = IotDataPublisher(_client())
    publisher.publish(network_topic("net_abc"), b'{"v":1}')
    published = iotdata_backends[DEFAULT_ACCOUNT_ID][REGION].published_payloads
    assert published == [("sm/n/net_abc", b'{"v":1}')]


def test_publish_is_qos1() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("publish", {}, {"topic": "sm/h/host_a/in", "qos": 1, "payload": b"x"})
        IotDataPublisher(client).publish("sm/h/host_a/in", b"x")
        stub.assert_no_pending_responses()


def test_throttling_is_retried_then_succeeds() -> None:
    client = _client()
    sleeps: list[float] = []
    with Stubber(client) as stub:
        stub.add_client_error("publish", "ThrottlingException", "Rate exceeded", 429)
        stub.add_client_error("publish", "ThrottlingException", "Rate exceeded", 429)
        stub.add_response("publish", {})
        IotDataPublisher(client, sleep=sleeps.append).publish("sm/n/net_a", b"x")
        stub.assert_no_pending_responses()
    assert len(sleeps) == 2 and all(0 < s <= 2 for s in sleeps)


def test_throttling_that_persists_is_unavailable() -> None:
    client = _client()
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_client_error("publish", "ThrottlingException", "Rate exceeded", 429)
        with pytest.raises(UnavailableError, match="retry in a few seconds"):
            IotDataPublisher(client, sleep=no_sleep).publish("sm/n/net_a", b"x")
        stub.assert_no_pending_responses()


def test_access_denied_is_unavailable_and_says_what_to_grant() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_client_error("publish", "ForbiddenException", "not allowed", 403)
        with pytest.raises(UnavailableError) as info:
            IotDataPublisher(client, sleep=no_sleep).publish("sm/n/net_a", b"x")
    assert info.value.code == "aws_access_denied"
    assert "iot:Publish" in info.value.message and "sm/n/net_a" in info.value.message


def test_too_large_payload_says_so() -> None:
    client = _client()
    with Stubber(client) as stub:
        stub.add_client_error("publish", "RequestEntityTooLargeException", "too big", 413)
        with pytest.raises(UnavailableError, match="128 KiB"):
            IotDataPublisher(client, sleep=no_sleep).publish("sm/n/net_a", b"x" * 10)


def test_connection_failure_is_unavailable() -> None:
    class Broken:
        def publish(self, **_: Any) -> None:
            raise EndpointConnectionError(endpoint_url="https://example.invalid")

    with pytest.raises(UnavailableError, match="could not publish to sm/n/net_a"):
        IotDataPublisher(Broken(), sleep=no_sleep).publish("sm/n/net_a", b"x")
