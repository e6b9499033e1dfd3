"""IAM in the template: no ``*`` action anywhere; a ``*`` resource only for an action IAM
cannot scope; every resource of the type the action acts on.

Which actions exist and which resource types each one takes comes from the IAM
service reference that cfn-lint ships (``cfnlint/data/AdditionalSpecs/Policies.json``),
so the check follows AWS's definitions rather than ours.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import cfnlint
import pytest

from infra.grants import FUNCTIONS

from .conftest import Synthesized
from .evaluate import Resolver, as_list


@lru_cache(maxsize=1)
def _iam_reference() -> dict[str, Any]:
    path = Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json"
    return json.loads(path.read_text())


def _resource_types(action: str) -> list[str] | None:
    """The resource types ``action`` takes ([] = none, so "*"); None when IAM has no such action."""
    service, _, name = action.partition(":")
    actions = _iam_reference().get(service, {}).get("Actions", {})
    if name.lower() not in actions:
        return None
    return list(actions[name.lower()].get("Resources", []))


def _arn_patterns(service: str, resource_type: str) -> list[str]:
    by_name = {k.lower(): v for k, v in _iam_reference()[service]["Resources"].items()}
    formats = by_name[resource_type.lower()]["ARNFormats"]
    return [re.sub(r"\$\{[A-Za-z]+\}", "[^:]*", f) for f in formats]


def _role_statements(synthesized: Synthesized) -> dict[str, list[dict[str, Any]]]:
    resolver = Resolver(synthesized.template, synthesized.stack_name)
    out = {}
    for role_id, role in synthesized.resources("AWS::IAM::Role").items():
        statements = [s for p in role["Properties"].get("Policies", [])
                      for s in resolver.resolve(p["PolicyDocument"])["Statement"]]
        out[role_id] = statements
    return out


def test_no_policy_elsewhere_than_in_the_roles(synthesized: Synthesized) -> None:
    """Every grant is in one role's inline policy, where the tests below read it."""
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User", "AWS::IAM::Group"):
        assert synthesized.resources(kind) == {}, kind
    for role in synthesized.resources("AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]


def test_every_function_has_its_own_role_assumed_only_by_lambda(synthesized: Synthesized) -> None:
    roles = synthesized.resources("AWS::IAM::Role")
    lambda_roles = {k for k, r in roles.items()
                    if r["Properties"]["AssumeRolePolicyDocument"]["Statement"]
                    == [{"Action": "sts:AssumeRole", "Effect": "Allow",
                         "Principal": {"Service": "lambda.amazonaws.com"}}]}
    used = [f["Properties"]["Role"]["Fn::GetAtt"][0]
            for kind in ("AWS::Serverless::Function", "AWS::Lambda::Function")
            for f in synthesized.resources(kind).values()]
    assert len(used) == len(FUNCTIONS) and set(used) == lambda_roles
    # The rest: the rule's error role, assumed by AWS IoT only.
    (other,) = set(roles) - lambda_roles
    assert roles[other]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "iot.amazonaws.com"}


def test_no_wildcard_actions(synthesized: Synthesized) -> None:
    for role_id, statements in _role_statements(synthesized).items():
        for statement in statements:
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                assert "*" not in action and "?" not in action, (role_id, action)


def test_every_action_exists_in_iam(synthesized: Synthesized) -> None:
    for role_id, statements in _role_statements(synthesized).items():
        for statement in statements:
            for action in as_list(statement["Action"]):
                assert _resource_types(action) is not None, f"{role_id}: IAM has no action {action}"


def test_star_resource_only_where_iam_allows_nothing_narrower(synthesized: Synthesized) -> None:
    stars = set()
    for role_id, statements in _role_statements(synthesized).items():
        for statement in statements:
            if "*" in as_list(statement["Resource"]):
                for action in as_list(statement["Action"]):
                    assert _resource_types(action) == [], (
                        f"{role_id}: {action} takes {_resource_types(action)}; name them, not *")
                    stars.add(action)
    assert stars == {"iot:CreateCertificateFromCsr", "iot:DescribeEndpoint", "ec2:DescribeAddresses"}


def test_every_resource_is_of_a_type_the_action_acts_on(synthesized: Synthesized) -> None:
    for role_id, statements in _role_statements(synthesized).items():
        for statement in statements:
            resources = [r for r in as_list(statement["Resource"]) if r != "*"]
            for action in as_list(statement["Action"]):
                service = action.split(":")[0]
                types = _resource_types(action) or []
                patterns = [p for t in types for p in _arn_patterns(service, t)]
                for resource in resources:
                    assert any(re.fullmatch(p, resource) for p in patterns), (
                        f"{role_id}: {action} on {resource} (takes {types})")


@pytest.mark.parametrize("function, forbidden", [
    # (issue 11: a report with gateway-group rows records the group's active member and broadcasts it)
    ("host_report", ["dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "iot:CreateThing",
                     "iot:AttachPolicy", "secretsmanager:GetSecretValue"]),
    ("mark_offline", ["dynamodb:PutItem", "dynamodb:DeleteItem", "iot:Publish"]),
    ("sweep_broadcasts", ["dynamodb:PutItem", "iot:CreateCertificateFromCsr", "iot:AttachPolicy"]),
    ("sweep_orphans", ["dynamodb:PutItem", "dynamodb:BatchWriteItem", "iot:CreateCertificateFromCsr",
                       "iot:AttachPolicy", "iot:AttachThingPrincipal", "iot:CreateThing", "iot:Publish"]),
    ("bootstrap", ["dynamodb:Query", "dynamodb:UpdateItem", "iot:Publish", "iot:CreatePolicy"]),
    # The failover functions move hosts between gateways: they never delete a record, create or
    # change an identity, or change who may read what.
    *[(fn, ["dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "iot:CreateCertificateFromCsr",
            "iot:AttachPolicy", "iot:DetachPolicy", "iot:UpdateCertificate", "iot:CreateThing",
            "iot:DeleteThing", "iot:AddThingToThingGroup", "iot:RemoveThingFromThingGroup",
            "iot:CreatePolicy", "secretsmanager:GetSecretValue"])
      for fn in ("failover_report", "failover")],
])
def test_functions_cannot_do_what_they_never_need(
    synthesized: Synthesized, function: str, forbidden: list[str]
) -> None:
    pascal = "".join(p.capitalize() for p in function.split("_"))
    role_id = synthesized.logical_id("AWS::IAM::Role", f"{pascal}Role")  # not FailoverReportRole for failover
    granted = {a for s in _role_statements(synthesized)[role_id] for a in as_list(s["Action"])}
    assert granted.isdisjoint(forbidden), granted & set(forbidden)


def test_key_policy_lets_only_the_account_and_this_regions_logs_use_the_key(
    synthesized: Synthesized
) -> None:
    (key,) = synthesized.resources("AWS::KMS::Key").values()
    statements = Resolver(synthesized.template, synthesized.stack_name).resolve(
        key["Properties"]["KeyPolicy"])["Statement"]
    principals = sorted(json.dumps(s["Principal"], sort_keys=True) for s in statements)
    assert principals == sorted([
        # The account (IAM policies then decide: the roles above); CDK's default, which
        # keeps the key manageable. In a key policy, Resource "*" is this key.
        json.dumps({"AWS": "arn:aws:iam::123456789012:root"}),
        json.dumps({"Service": "logs.us-east-1.amazonaws.com"}, sort_keys=True),
    ])
    (logs,) = [s for s in statements if "Service" in s["Principal"]]
    assert logs["Condition"] == {"ArnLike": {
        "kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-east-1:123456789012:log-group:*"}}
    assert not any("*" in a for a in as_list(logs["Action"]))


def test_iot_host_policy_has_no_wildcard_topics(synthesized: Synthesized) -> None:
    """Every topic a host may touch names that host (policy variable) exactly."""
    (policy,) = synthesized.resources("AWS::IoT::Policy").values()
    document = Resolver(synthesized.template, synthesized.stack_name).resolve(
        policy["Properties"]["PolicyDocument"])
    for statement in document["Statement"]:
        assert not any("*" in a for a in as_list(statement["Action"]))
        for resource in as_list(statement["Resource"]):
            assert "*" not in resource and "+" not in resource and "#" not in resource, resource
            assert "${iot:Connection.Thing.ThingName}" in resource, resource
