"""Who may do what: the IAM statements of each function's role, least privilege.

Chalice's generated policy cannot see PynamoDB or the IoT calls made through
``chalicelib/adapters``, so each role is written here by hand, from what the
function's code calls (``tests/infra/test_grants_cover_calls.py`` runs every
function on moto, records each AWS call and checks it against these statements,
and that nothing is granted that no call needs):

- ``api_handler``: the REST API — the whole table, the IoT registry calls of host
  identities (things, certificates, each network's thing group and policy) and
  publishing network broadcasts.
- ``host_report``: one ``UpdateItem`` on the reporting host's record; a report with gateway-group
  rows (issue 11) also records or corrects the group's active member (the group's item, its
  members' latest rows, the write with its pending change, the broadcast) and moves the group's
  Elastic IP (``ec2:AssociateAddress``, only on resources tagged ``skymesh:stack`` = the stack).
- ``mark_offline``: lists hosts through the ``kind-index`` and updates host records.
- ``sweep_broadcasts``: reads pending changes and members, advances a network's
  sequence, clears what it sent, publishes broadcasts.
- ``sweep_orphans``: finds registrations that died between certificate and commit
  (pending identities through the ``kind-index``), claims each (its own ``IDENTITY#``
  item, with a check that the ``HOST#`` item does not exist) and deletes what the
  identity left in the IoT registry: the host's certificates (deactivated, detached,
  deleted), its group memberships and its thing.
- ``failover_report`` (a status report that carries latency, from its own IoT rule) and
  ``failover`` (every minute): the failover functions. They read a network's records (its
  partition), the reporting or moved hosts and the gateways' statuses (host records), write
  each moved host's role with its member record and the pending change in one transaction,
  and broadcast it (lease and sequence, members, delta log, clearing what was sent, publish).
  ``failover`` also reads the network registry to find every network, and checks where each
  gateway group's Elastic IP is (``ec2:DescribeAddresses``) and moves it to the active member.
- ``bootstrap`` (deploy time): the first admin key (its secret, one table item) and
  the IoT endpoint lookup.

No statement has a ``*`` action. ``*`` resources appear only for the actions
that have no resource type in IAM: ``iot:CreateCertificateFromCsr``,
``iot:DescribeEndpoint`` and ``ec2:DescribeAddresses``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_iam as iam

from chalicelib.adapters.dynamodb.items import KIND_INDEX
from chalicelib.adapters.dynamodb.layout import NETWORK_PREFIX, REGISTRY_PK
from chalicelib.domain.ids import ID_PREFIXES
from chalicelib.domain.protocol import host_inbox_topic, network_topic

__all__ = ["Arns", "statements_for", "FUNCTIONS"]

#: The functions of the app (their names in app.py) plus the deploy-time one.
FUNCTIONS = ("api_handler", "host_report", "mark_offline", "sweep_broadcasts", "sweep_orphans",
             "failover_report", "failover", "bootstrap")

#: What DynamoDB asks of the caller's key permissions on a table encrypted with a
#: customer managed key (each only through DynamoDB: ``kms:ViaService``).
_KMS_FOR_DYNAMODB = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey",
                     "kms:ReEncryptFrom", "kms:ReEncryptTo"]


@dataclass(frozen=True)
class Arns:
    """The resources the statements name (CDK tokens)."""

    region: str
    table: str
    key: str
    iot: str  #: ``arn:<partition>:iot:<region>:<account>:``
    network_prefix: str  #: each network's thing group and policy: ``<network_prefix><network id>``
    secret: str
    log_group: dict[str, str]  #: function name -> its log group ARN (``...:log-group:NAME:*``)
    ec2: str = ""  #: ``arn:<partition>:ec2:<region>:<account>:``
    stack: str = ""  #: the stack's name: the value of the ``skymesh:stack`` tag on what it may touch in EC2

    @property
    def table_index(self) -> str:
        return f"{self.table}/index/{KIND_INDEX}"

    @property
    def things(self) -> str:
        """Every host's thing: thing name = host id = ``host_…``."""
        return f"{self.iot}thing/{ID_PREFIXES['host']}_*"

    @property
    def certificates(self) -> str:
        return f"{self.iot}cert/*"

    @property
    def network_groups(self) -> str:
        return f"{self.iot}thinggroup/{self.network_prefix}*"

    @property
    def network_policies(self) -> str:
        return f"{self.iot}policy/{self.network_prefix}*"

    @property
    def broadcast_topics(self) -> str:
        return f"{self.iot}topic/{network_topic('*')}"

    @property
    def host_inboxes(self) -> str:
        """Every host's command topic (a deleted host is told to resync: its /config then says so)."""
        return f"{self.iot}topic/{host_inbox_topic(ID_PREFIXES['host'] + '_*')}"


def _allow(sid: str, actions: list[str], resources: list[str],
           conditions: dict[str, dict[str, object]] | None = None) -> iam.PolicyStatement:
    return iam.PolicyStatement(sid=sid, effect=iam.Effect.ALLOW, actions=sorted(actions),
                               resources=resources, conditions=conditions)


#: The tag an admin puts on a gateway group's Elastic IP and on its members' network interfaces (or
#: instances), with the stack's name as its value: the only ones the control plane may associate.
STACK_TAG = "skymesh:stack"


def _elastic_ips(arns: Arns) -> iam.PolicyStatement:
    """Move a gateway group's Elastic IP to its active member (issue 11). ``ec2:AssociateAddress``
    authorizes on the address (``elastic-ip/…``) and on the network interface or instance it goes to;
    each must carry the stack's tag (``aws:ResourceTag``), so the role can move no other address and
    put one on no interface or instance of the account that an admin did not tag for this stack."""
    return _allow("GroupElasticIps", ["ec2:AssociateAddress"],
                  [f"{arns.ec2}elastic-ip/*", f"{arns.ec2}network-interface/*", f"{arns.ec2}instance/*"],
                  {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": arns.stack}})


def _logs(arns: Arns, function: str) -> iam.PolicyStatement:
    # The log group is made by the stack: no logs:CreateLogGroup.
    return _allow("OwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [arns.log_group[function]])


def _table_key(arns: Arns) -> iam.PolicyStatement:
    return _allow("TableKeyThroughDynamoDB", _KMS_FOR_DYNAMODB, [arns.key],
                  {"StringEquals": {"kms:ViaService": f"dynamodb.{arns.region}.amazonaws.com"}})


def _host_items_only() -> dict[str, dict[str, object]]:
    """Only items whose partition key is a host record (``HOST#<id>``)."""
    return {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["HOST#*"]}}


def _network_items_only() -> dict[str, dict[str, object]]:
    """Only items in a network's partition (``NET#<id>``: the network, members, pending changes,
    delta log)."""
    return {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{NETWORK_PREFIX}*"]}}


def _placement(arns: Arns, function: str) -> list[iam.PolicyStatement]:
    """What both failover functions need to place hosts of one network and broadcast the moves."""
    return [
        _logs(arns, function),
        # The network's members and clients (a Query of its partition each).
        _allow("NetworkRecords", ["dynamodb:Query"], [arns.table]),
        # The reporting or moved host (GetItem), the gateways' latest statuses (BatchGetItem),
        # a moved host's roles (UpdateItem under its revision, in the transaction).
        _allow("HostRecords", ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:UpdateItem"],
               [arns.table], _host_items_only()),
        # In the network's partition: the network at its sequence (GetItem, read before its
        # members); in the transaction the moved hosts' member records and the pending change
        # (PutItem); then the broadcast: lease and sequence (UpdateItem), the members
        # (BatchGetItem), the delta log and clearing what was sent (BatchWriteItem).
        _allow("NetworkItems", ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"], [arns.table],
               _network_items_only()),
        _table_key(arns),
        _allow("Broadcasts", ["iot:Publish"], [arns.broadcast_topics]),
    ]


def statements_for(function: str, arns: Arns) -> list[iam.PolicyStatement]:
    """The statements of ``function``'s role (see the module docstring)."""
    if function == "api_handler":
        return [
            _logs(arns, function),
            _allow("Table", ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                             "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "dynamodb:Query",
                             "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"], [arns.table]),
            _allow("TableKindIndex", ["dynamodb:Query"], [arns.table_index]),
            _table_key(arns),
            _allow("HostThings", ["iot:CreateThing", "iot:DeleteThing", "iot:ListThingPrincipals",
                                  "iot:ListThingGroupsForThing"], [arns.things]),
            # AWS IoT signs the CSR; this action has no resource type.
            _allow("SignHostCsr", ["iot:CreateCertificateFromCsr"], ["*"]),
            _allow("HostCertificates", ["iot:DescribeCertificate", "iot:UpdateCertificate",
                                        "iot:DeleteCertificate", "iot:AttachThingPrincipal",
                                        "iot:DetachThingPrincipal"], [arns.certificates]),
            # Host policy onto certificates; network policies onto their thing groups.
            _allow("AttachPolicies", ["iot:AttachPolicy", "iot:DetachPolicy"],
                   [arns.certificates, arns.network_groups]),
            _allow("NetworkGroups", ["iot:CreateThingGroup", "iot:DescribeThingGroup",
                                     "iot:DeleteThingGroup"], [arns.network_groups]),
            _allow("NetworkGroupMembers", ["iot:AddThingToThingGroup", "iot:RemoveThingFromThingGroup"],
                   [arns.things, arns.network_groups]),
            _allow("NetworkPolicies", ["iot:CreatePolicy", "iot:DeletePolicy"], [arns.network_policies]),
            _allow("Broadcasts", ["iot:Publish"], [arns.broadcast_topics]),
            _allow("HostCommands", ["iot:Publish"], [arns.host_inboxes]),
            # no ec2:AssociateAddress: a group's claim is a vote only, it never records the active
            # member, so the API never moves an Elastic IP (host_report and failover do)
        ]
    if function == "host_report":
        return [
            _logs(arns, function),
            # the report (UpdateItem); with gateway-group rows (issue 11) the reporter's networks and
            # its fellow members' latest rows (GetItem, BatchGetItem)
            _allow("HostStatus", ["dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:BatchGetItem"],
                   [arns.table], _host_items_only()),
            # issue 11: a group's record of its active member, written with its pending change and
            # broadcast (lease and sequence, members, delta log), as the failover functions do
            _allow("GroupRecords", ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                    "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"], [arns.table],
                   _network_items_only()),
            _allow("GroupNetworkRecords", ["dynamodb:Query"], [arns.table]),
            _table_key(arns),
            _allow("Broadcasts", ["iot:Publish"], [arns.broadcast_topics]),
            _elastic_ips(arns),
        ]
    if function == "mark_offline":
        return [
            _logs(arns, function),
            _allow("ListHosts", ["dynamodb:Query"], [arns.table_index]),
            _allow("MarkHostsOffline", ["dynamodb:UpdateItem"], [arns.table], _host_items_only()),
            _table_key(arns),
        ]
    if function == "sweep_broadcasts":
        return [
            _logs(arns, function),
            _allow("NetworksWithPendingChanges", ["dynamodb:Query"], [arns.table_index]),
            # Pending changes (Query), the lease and sequence (UpdateItem), the members
            # (BatchGetItem), clearing what was sent (BatchWriteItem).
            _allow("PendingChanges", ["dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:BatchGetItem",
                                      "dynamodb:BatchWriteItem"], [arns.table]),
            _table_key(arns),
            _allow("Broadcasts", ["iot:Publish"], [arns.broadcast_topics]),
        ]
    if function == "sweep_orphans":
        return [
            _logs(arns, function),
            _allow("ListPendingIdentities", ["dynamodb:Query"], [arns.table_index]),
            # Claim (UpdateItem in a transaction), re-read and remove the record.
            _allow("PendingIdentities", ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
                   [arns.table], {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["IDENTITY#*"]}}),
            # In the same transaction: the host was never committed.
            _allow("HostNotCommitted", ["dynamodb:ConditionCheckItem"], [arns.table], _host_items_only()),
            _table_key(arns),
            _allow("OrphanThings", ["iot:DeleteThing", "iot:ListThingPrincipals",
                                    "iot:ListThingGroupsForThing"], [arns.things]),
            _allow("OrphanCertificates", ["iot:DescribeCertificate", "iot:UpdateCertificate",
                                          "iot:DeleteCertificate", "iot:DetachThingPrincipal",
                                          "iot:DetachPolicy"], [arns.certificates]),
            _allow("LeaveNetworkGroups", ["iot:RemoveThingFromThingGroup"],
                   [arns.things, arns.network_groups]),
        ]
    if function == "failover_report":
        return _placement(arns, function)
    if function == "failover":
        return [
            *_placement(arns, function),
            # Every network, from the registry item.
            _allow("NetworkRegistry", ["dynamodb:GetItem"], [arns.table],
                   {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": [REGISTRY_PK]}}),
            # issue 11: where each gateway group's Elastic IP is (this action has no resource type),
            # and moving it to the recorded active member when it is elsewhere
            _allow("WhereElasticIps", ["ec2:DescribeAddresses"], ["*"]),
            _elastic_ips(arns),
        ]
    if function == "bootstrap":
        return [
            _logs(arns, function),
            _allow("AdminKeySecret", ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"],
                   [arns.secret]),
            _allow("AdminKeySecretKey", ["kms:Decrypt", "kms:GenerateDataKey"], [arns.key],
                   {"StringEquals": {"kms:ViaService": f"secretsmanager.{arns.region}.amazonaws.com"}}),
            _allow("AdminKeyItem", ["dynamodb:GetItem", "dynamodb:PutItem"], [arns.table],
                   {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ADMIN#*"]}}),
            _table_key(arns),
            # Looking up the account's IoT data endpoint; this action has no resource type.
            _allow("IotEndpoint", ["iot:DescribeEndpoint"], ["*"]),
        ]
    raise ValueError(f"unknown function {function!r}; one of {', '.join(FUNCTIONS)}")
