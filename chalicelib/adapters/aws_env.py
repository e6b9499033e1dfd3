"""The AWS adapters (IoT Data publisher, IoT registry identity) built from a stage's environment.

Variables:

- ``SKYMESH_IOT_POLICY`` (required): name of the IoT policy attached to host certificates.
- ``SKYMESH_IOT_ENDPOINT`` (optional): the account's ATS data endpoint host,
  ``xxxxxxxx-ats.iot.<region>.amazonaws.com``. When absent it is looked up with
  ``iot:DescribeEndpoint`` (``iot:Data-ATS``), once per region per process.
- ``SKYMESH_IOT_THING_PREFIX`` (optional): prefix of thing names; leave it unset on a
  deployed stack, where the thing name is the host id (the agent's MQTT client id).
- ``SKYMESH_IOT_NETWORK_PREFIX`` (optional): prefix of each network's thing group
  and policy (default ``<thing prefix>net-``; the stack sets ``<stack name>-net-``).
- ``SKYMESH_IOT_STATUS_RULE`` (optional): the topic rule for status reports; hosts
  are told to publish through Basic Ingest (``$aws/rules/<rule>/sm/h/<id>/status``),
  which skips the broker's messaging charge. Unset: the plain status topic.
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (required).

Credentials come from boto3's usual chain (in Lambda: the function's role).
No client is made at import time, only when :func:`aws_adapters_from_env` is called.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import UnavailableError
from ..service.ports import HostIdentity, Publisher
from .aws_iot_data import IotDataPublisher, unavailable_error
from .aws_iot_identity import IotIdentity

__all__ = ["aws_adapters_from_env", "CLIENT_CONFIG"]

#: Throttling and transient errors are retried by botocore with client-side rate
#: limiting; timeouts stay well inside API Gateway's 29 s.
CLIENT_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=10,
)

_endpoint_lock = threading.Lock()
_endpoints: dict[str, str] = {}


def _misconfigured(message: str) -> UnavailableError:
    return UnavailableError(message, code="misconfigured")


def _clean_endpoint(raw: str) -> str:
    """``host`` from ``host``, ``https://host`` or ``https://host/`` (whitespace ignored)."""
    value = raw.strip()
    for scheme in ("https://", "http://"):
        if value.lower().startswith(scheme):
            value = value[len(scheme):]
    return value.rstrip("/")


def _lookup_endpoint(iot: Any, region: str) -> str:
    """The account's ATS data endpoint in ``region``, asked of AWS at most once per process."""
    with _endpoint_lock:
        cached = _endpoints.get(region)
        if cached:
            return cached
        try:
            found = iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
        except (ClientError, BotoCoreError) as err:
            base = unavailable_error(err, "iot:DescribeEndpoint")
            raise UnavailableError(
                f"could not look up the AWS IoT data endpoint: {base.message} "
                "Set SKYMESH_IOT_ENDPOINT to skip the lookup.",
                code=base.code,
            ) from err
        _endpoints[region] = found
        return found


def aws_adapters_from_env(
    env: Mapping[str, str], *, session: Any = None
) -> tuple[Publisher, HostIdentity]:
    """A publisher on AWS IoT Data and a host identity on the AWS IoT registry, configured by
    ``env`` (see the module docstring).

    ``session`` is a ``boto3.session.Session`` to make the clients with (default:
    a new one for the region). Raises :class:`UnavailableError` with code
    ``misconfigured`` when a required variable is missing, or when the endpoint
    lookup fails.
    """
    region = (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip()
    if not region:
        raise _misconfigured("AWS_REGION (or AWS_DEFAULT_REGION) is not set; set it to the "
                             "region of the stack's AWS IoT resources")
    policy = env.get("SKYMESH_IOT_POLICY", "").strip()
    if not policy:
        raise _misconfigured("SKYMESH_IOT_POLICY is not set; set it to the name of the IoT "
                             "policy the stack made for host certificates")
    prefix = env.get("SKYMESH_IOT_THING_PREFIX", "").strip()
    network_prefix = env.get("SKYMESH_IOT_NETWORK_PREFIX", "").strip() or None

    if session is None:
        import boto3  # only here: nothing AWS happens at import time

        session = boto3.session.Session(region_name=region)
    iot = session.client("iot", region_name=region, config=CLIENT_CONFIG)
    endpoint = _clean_endpoint(env.get("SKYMESH_IOT_ENDPOINT", ""))
    if not endpoint:
        endpoint = _lookup_endpoint(iot, region)
    data = session.client(
        "iot-data", region_name=region, endpoint_url=f"https://{endpoint}", config=CLIENT_CONFIG
    )
    try:
        identity = IotIdentity(iot, endpoint=endpoint, policy_name=policy, thing_prefix=prefix,
                               network_prefix=network_prefix,
                               status_rule=env.get("SKYMESH_IOT_STATUS_RULE", "").strip() or None)
    except ValueError as err:
        variable = ("SKYMESH_IOT_NETWORK_PREFIX" if "network_prefix" in str(err)
                    else "SKYMESH_IOT_THING_PREFIX")
        raise _misconfigured(f"{variable}: {err}") from None
    return IotDataPublisher(data), identity
