"""The AWS IoT policies that confine each host to its own topics and its networks' broadcasts.

Two kinds of documents, both made from the topic templates of
:mod:`chalicelib.domain.protocol`, so broker permissions and the protocol cannot
drift apart:

- :func:`host_policy_document` — one static policy, deployed by the stack
  (``infra/``) and attached to every host certificate. Policy variables on the
  thing name let a certificate connect only with client id = its own thing name
  (= the host id), read only its own inbox and publish only its own status.
- :func:`network_policy_document` — one policy per network, made at run time by
  :class:`~chalicelib.adapters.aws_iot_identity.IotIdentity` and attached to that
  network's thing group: members may subscribe to and receive the network's
  broadcast topic, nobody else may.

AWS IoT applies thing-group policies only to a connection whose client id is the
thing name, which the host policy's ``iot:Connect`` statement enforces.

>>> doc = network_policy_document("arn:aws:iot:eu-west-1:123456789012:", "net_a")
>>> [s["Resource"].split(":")[-1] for s in doc["Statement"]]
['topicfilter/sm/n/net_a', 'topic/sm/n/net_a']
"""

from __future__ import annotations

import re
from typing import Any

from ..domain.protocol import HOST_STATUS_FILTER, host_inbox_topic, host_status_topic, network_topic

__all__ = [
    "THING_NAME",
    "host_policy_document",
    "network_policy_document",
    "basic_ingest_topic",
    "host_status_rule_sql",
    "failover_report_rule_sql",
    "iot_arn_prefix",
]

#: The policy variable AWS IoT replaces by the connecting thing's name (= the host id).
THING_NAME = "${iot:Connection.Thing.ThingName}"

_ARN_PREFIX_RE = re.compile(r"^(arn:[^:]+:iot:[^:]*:[^:]*:)")


def iot_arn_prefix(arn: str) -> str:
    """``arn:<partition>:iot:<region>:<account>:`` of any AWS IoT ARN.

    >>> iot_arn_prefix("arn:aws:iot:us-east-1:123456789012:thinggroup/net-x")
    'arn:aws:iot:us-east-1:123456789012:'
    """
    match = _ARN_PREFIX_RE.match(arn)
    if not match:
        raise ValueError(f"not an AWS IoT ARN: {arn!r}")
    return match.group(1)


def basic_ingest_topic(rule_name: str, host_id: str) -> str:
    """The Basic Ingest topic on which ``host_id`` may send its status straight to the rule.

    Basic Ingest skips the message broker (no messaging charge); the rule sees the
    same topic without the ``$aws/rules/<rule>/`` prefix.
    """
    return f"$aws/rules/{rule_name}/{host_status_topic(host_id)}"


def host_status_rule_sql() -> str:
    """The topic rule that hands status reports to the ``host_report`` function.

    The host id comes from the topic, which only that host may publish on; a
    payload that carries its own ``host_id`` is dropped rather than trusted.
    """
    return (f"SELECT *, topic(3) AS host_id FROM '{HOST_STATUS_FILTER}' "
            "WHERE isUndefined(host_id)")


def failover_report_rule_sql() -> str:
    """The topic rule that hands status reports carrying latency or ``direct`` to ``failover_report``
    as well.

    The same reports and host id as :func:`host_status_rule_sql`, only those whose ``latency``
    or ``direct`` list has a first entry (``get`` of a missing list, or past the end of one, is
    Undefined): the failover function is not invoked for a report that measured nothing and says
    no pair may go direct. Locally the rule bridge plays it with
    :func:`skymesh.local.bridge.goes_to_failover`, the same rule in Python.
    """
    return (f"{host_status_rule_sql()} AND "
            "(NOT isUndefined(get(latency, 0)) OR NOT isUndefined(get(direct, 0)))")


def host_policy_document(arn_prefix: str, *, ingest_rule: str | None = None) -> dict[str, Any]:
    """The static policy of every host certificate.

    ``arn_prefix`` is ``arn:<partition>:iot:<region>:<account>:`` (CDK tokens are
    fine). With ``ingest_rule``, the host may also publish its status through
    Basic Ingest to that rule.
    """
    inbox = host_inbox_topic(THING_NAME)
    status = [f"{arn_prefix}topic/{host_status_topic(THING_NAME)}"]
    if ingest_rule:
        status.append(f"{arn_prefix}topic/{basic_ingest_topic(ingest_rule, THING_NAME)}")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConnectAsOwnThingOnly",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{arn_prefix}client/{THING_NAME}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {
                "Sid": "OwnInbox",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": f"{arn_prefix}topicfilter/{inbox}",
            },
            {
                "Sid": "OwnInboxMessages",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": f"{arn_prefix}topic/{inbox}",
            },
            {
                "Sid": "OwnStatus",
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": status if len(status) > 1 else status[0],
            },
        ],
    }


def network_policy_document(arn_prefix: str, network_id: str) -> dict[str, Any]:
    """The policy of one network's thing group: read that network's broadcasts.

    ``iot:Receive`` is checked for every message delivered, so a host that leaves
    the group stops getting the network's broadcasts without reconnecting.
    """
    topic = network_topic(network_id)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Broadcasts",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": f"{arn_prefix}topicfilter/{topic}",
            },
            {
                "Sid": "BroadcastMessages",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": f"{arn_prefix}topic/{topic}",
            },
        ],
    }
