"""The AWS adapters from a stage's configuration: endpoint lookup, client settings (moto, offline)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iotdata.models import iotdata_backends

from chalicelib.adapters.aws_env import aws_adapters
from chalicelib.adapters.aws_iot_data import IotDataPublisher
from chalicelib.adapters.aws_iot_identity import IotIdentity
from chalicelib.config import ConfigError, StageConfig
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.errors import UnavailableError
from chalicelib.service.ports import HostIdentity, Publisher
from chalicelib.wiring import get_service, set_service

from .conftest import POLICY, REGION


def _env(**extra: str) -> dict[str, str]:
    return {"AWS_REGION": REGION, "SKYMESH_IOT_POLICY": POLICY, **extra}


def aws_adapters_from_env(env: dict[str, str], *, session: Any = None) -> tuple[Publisher, HostIdentity]:
    """The adapters of the stage ``env`` describes, made as the service makes them."""
    config = StageConfig.from_env({"SKYMESH_PUBLISHER": "iot", "SKYMESH_IDENTITY": "iot", **env}).aws
    assert config is not None
    return aws_adapters(config, session=session)


def test_builds_both_adapters_from_explicit_endpoint(
    iot: Any, make_csr: Callable[..., str]
) -> None:
    publisher, identity = aws_adapters_from_env(
        _env(SKYMESH_IOT_ENDPOINT="https://data-ats.iot.us-east-1.amazonaws.com/",
             SKYMESH_IOT_THING_PREFIX="dev-"))
    assert isinstance(publisher, IotDataPublisher) and isinstance(identity, IotIdentity)
    assert identity.mqtt_endpoint == "data-ats.iot.us-east-1.amazonaws.com"
    assert identity.mqtt_port == 8883

    publisher.publish("sm/n/net_a", b"hello")
    assert iotdata_backends[DEFAULT_ACCOUNT_ID][REGION].published_payloads == [
        ("sm/n/net_a", b"hello")]
    identity.issue(HostId("host_a1"), make_csr())
    assert iot.describe_thing(thingName="dev-host_a1")["thingName"] == "dev-host_a1"


def test_network_prefix_names_groups_and_policies(iot: Any) -> None:
    _, identity = aws_adapters_from_env(
        _env(SKYMESH_IOT_ENDPOINT="data-ats.iot.us-east-1.amazonaws.com",
             SKYMESH_IOT_NETWORK_PREFIX="skymesh-net-"))
    identity.set_networks(HostId("host_a1"), [NetworkId("net_a")])
    groups = iot.list_thing_groups_for_thing(thingName="host_a1")["thingGroups"]
    assert [g["groupName"] for g in groups] == ["skymesh-net-net_a"]
    assert iot.get_policy(policyName="skymesh-net-net_a")["policyName"] == "skymesh-net-net_a"


def test_hosts_are_told_to_report_through_basic_ingest_when_the_rule_is_named(iot: Any) -> None:
    _, plain = aws_adapters_from_env(_env(SKYMESH_IOT_ENDPOINT="data-ats.iot.us-east-1.amazonaws.com"))
    assert plain.status_topic(HostId("host_a1")) == "sm/h/host_a1/status"
    _, ingest = aws_adapters_from_env(_env(SKYMESH_IOT_ENDPOINT="data-ats.iot.us-east-1.amazonaws.com",
                                           SKYMESH_IOT_STATUS_RULE="skymesh_host_status"))
    assert ingest.status_topic(HostId("host_a1")) == "$aws/rules/skymesh_host_status/sm/h/host_a1/status"


def test_looks_up_the_ats_endpoint_once(iot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**_env(), "SKYMESH_TABLE": "t"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SKYMESH_IOT_ENDPOINT", raising=False)
    set_service(None)
    try:
        first = get_service().deps.identity
        assert isinstance(first, IotIdentity)
        assert first.mqtt_endpoint.endswith(f"-ats.iot.{REGION}.amazonaws.com")
        # moto answers with a new random endpoint each time: the same one means no new lookup.
        second = get_service().deps
        assert isinstance(second.identity, IotIdentity) and isinstance(second.publisher, IotDataPublisher)
        assert second.identity.mqtt_endpoint == first.mqtt_endpoint
        assert second.publisher._client.meta.endpoint_url == f"https://{first.mqtt_endpoint}"
    finally:
        set_service(None)


def test_region_falls_back_to_aws_default_region(moto_aws: None) -> None:
    env = {"AWS_DEFAULT_REGION": "eu-west-1", "SKYMESH_IOT_POLICY": POLICY,
           "SKYMESH_IOT_ENDPOINT": "abc-ats.iot.eu-west-1.amazonaws.com"}
    publisher, _ = aws_adapters_from_env(env)
    assert isinstance(publisher, IotDataPublisher)
    assert publisher._client.meta.region_name == "eu-west-1"


def test_clients_retry_adaptively() -> None:
    publisher, identity = aws_adapters_from_env(
        _env(SKYMESH_IOT_ENDPOINT="abc-ats.iot.us-east-1.amazonaws.com"))
    assert isinstance(publisher, IotDataPublisher) and isinstance(identity, IotIdentity)
    for client in (publisher._client, identity._iot):
        # botocore's max_attempts=5 counts retries: 1 call + 5 retries.
        assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 6}


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"SKYMESH_IOT_POLICY": POLICY}, "AWS_REGION"),
        ({"AWS_REGION": REGION}, "SKYMESH_IOT_POLICY"),
        ({"AWS_REGION": REGION, "SKYMESH_IOT_POLICY": POLICY,
          "SKYMESH_IOT_THING_PREFIX": "dev/"}, "SKYMESH_IOT_THING_PREFIX"),
        ({"AWS_REGION": REGION, "SKYMESH_IOT_POLICY": POLICY,
          "SKYMESH_IOT_NETWORK_PREFIX": "stack:net-"}, "SKYMESH_IOT_NETWORK_PREFIX"),
    ],
)
def test_missing_or_bad_configuration_says_what_to_set(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        aws_adapters_from_env({**env, "SKYMESH_IOT_ENDPOINT": "e-ats.iot.x.amazonaws.com"})
    assert info.value.code == "misconfigured"


def test_endpoint_lookup_failure_says_how_to_avoid_it() -> None:
    real = boto3.session.Session(region_name=REGION)
    stubs: list[Stubber] = []

    class Session:
        def client(self, name: str, **kw: Any) -> Any:
            client = real.client(name, **kw)
            stub = Stubber(client)
            if name == "iot":
                stub.add_client_error("describe_endpoint", "AccessDeniedException", "no", 403)
            stub.activate()
            stubs.append(stub)
            return client

    with pytest.raises(UnavailableError, match="SKYMESH_IOT_ENDPOINT") as info:
        aws_adapters_from_env(_env(), session=Session())
    assert "iot:DescribeEndpoint" in info.value.message
    for stub in stubs:
        stub.assert_no_pending_responses()
