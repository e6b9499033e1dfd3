"""The AWS adapters (IoT Data publisher, IoT registry identity) of a deployed stage.

Their settings come from :class:`chalicelib.config.AwsConfig` (variables
``SKYMESH_IOT_*`` and ``AWS_REGION``; meanings in :data:`chalicelib.config.VARIABLES`).
When ``SKYMESH_IOT_ENDPOINT`` is unset, the account's ATS data endpoint is looked up
with ``iot:DescribeEndpoint`` (``iot:Data-ATS``) when the adapters are made: once per
process, since the service is (``chalicelib.wiring.get_service``).

Credentials come from boto3's usual chain (in Lambda: the function's role).
No client is made at import time, only when :func:`aws_adapters` is called.
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..config import IOT_NETWORK_PREFIX, IOT_THING_PREFIX, AwsConfig, ConfigError
from ..errors import UnavailableError
from ..service.ports import HostIdentity, Publisher
from .aws_iot_data import IotDataPublisher, unavailable_error
from .aws_iot_identity import IotIdentity

__all__ = ["aws_adapters", "CLIENT_CONFIG"]

#: Throttling and transient errors are retried by botocore with client-side rate
#: limiting; timeouts stay well inside API Gateway's 29 s.
CLIENT_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=10,
)


def _lookup_endpoint(iot: Any) -> str:
    """The account's ATS data endpoint in the client's region."""
    try:
        return str(iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"])
    except (ClientError, BotoCoreError) as err:
        base = unavailable_error(err, "iot:DescribeEndpoint")
        raise UnavailableError(
            f"could not look up the AWS IoT data endpoint: {base.message} "
            "Set SKYMESH_IOT_ENDPOINT to skip the lookup.",
            code=base.code,
        ) from err


def aws_adapters(config: AwsConfig, *, session: Any = None) -> tuple[Publisher, HostIdentity]:
    """A publisher on AWS IoT Data and a host identity on the AWS IoT registry.

    ``session`` is a ``boto3.session.Session`` to make the clients with (default:
    a new one for the region). Raises :class:`ConfigError` for a prefix AWS IoT
    cannot take, :class:`UnavailableError` when the endpoint lookup fails.
    """
    if session is None:
        import boto3  # only here: nothing AWS happens at import time

        session = boto3.session.Session(region_name=config.region)
    iot = session.client("iot", region_name=config.region, config=CLIENT_CONFIG)
    endpoint = config.endpoint or _lookup_endpoint(iot)
    data = session.client("iot-data", region_name=config.region, endpoint_url=f"https://{endpoint}",
                          config=CLIENT_CONFIG)
    try:
        identity = IotIdentity(iot, endpoint=endpoint, policy_name=config.policy,
                               thing_prefix=config.thing_prefix, network_prefix=config.network_prefix,
                               status_rule=config.status_rule)
    except ValueError as err:
        variable = IOT_NETWORK_PREFIX if "network_prefix" in str(err) else IOT_THING_PREFIX
        raise ConfigError(f"{variable}: {err}") from None
    return IotDataPublisher(data), identity
