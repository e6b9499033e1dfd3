"""Reading the synthesized template as AWS would: intrinsics, IAM decisions, IoT policy decisions.

Small on purpose: only the intrinsics and condition operators the stack uses.
Anything else raises, so a new construct cannot slip past the checks unread.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
IOT_ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}:"
THING_NAME_VARIABLE = "${iot:Connection.Thing.ThingName}"


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass
class Resolver:
    """Resolves ``Ref``/``Fn::GetAtt``/``Fn::Join``/``Fn::Sub`` with fixed pseudo parameters.

    ``physical`` maps a logical id to what ``Ref`` returns; ``attributes`` maps
    (logical id, attribute) to what ``Fn::GetAtt`` returns. Log groups, the table
    and the KMS key get their ARN from the template itself.
    """

    template: Mapping[str, Any]
    stack_name: str
    physical: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    def pseudo(self, name: str) -> str:
        return {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": self.stack_name}[name]

    def ref(self, name: str) -> str:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.physical:
            return self.physical[name]
        resource = self.template["Resources"][name]
        if resource["Type"] == "AWS::Logs::LogGroup":
            return self.resolve(resource["Properties"]["LogGroupName"])
        if resource["Type"] == "AWS::SecretsManager::Secret":  # Ref of a secret is its ARN
            return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"
        return f"{name}-physical-id"

    def get_att(self, name: str, attribute: str) -> str:
        if (name, attribute) in self.attributes:
            return self.attributes[(name, attribute)]
        kind = self.template["Resources"][name]["Type"]
        if attribute == "Arn":
            if kind == "AWS::DynamoDB::Table":
                return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{self.ref(name)}"
            if kind == "AWS::Logs::LogGroup":
                return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{self.ref(name)}:*"
            if kind == "AWS::KMS::Key":
                return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{name}"
            return f"arn:aws:placeholder:{REGION}:{ACCOUNT}:{name}"
        raise KeyError(f"no value for Fn::GetAtt {name}.{attribute}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                return self.get_att(*(arg.split(".", 1) if isinstance(arg, str) else arg))
            if key == "Fn::Join":
                return arg[0].join(str(self.resolve(part)) for part in arg[1])
            if key == "Fn::Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: self.ref(m.group(1)), arg)
            if key.startswith("Fn::"):
                raise NotImplementedError(f"intrinsic {key} is not understood by the test resolver")
        return {k: self.resolve(v) for k, v in value.items()}


# --- IAM ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """One permission a call needs: an action on a resource, with the request's context."""

    action: str
    resource: str
    context: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def context_dict(self) -> dict[str, tuple[str, ...]]:
        return dict(self.context)


def _matches(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, tuple[str, ...]]) -> bool:
    patterns = [str(p) for p in as_list(expected)]
    values = context.get(key)
    if values is None:  # a key the request does not carry never satisfies a condition here
        return False
    if operator == "StringEquals":
        return any(v in patterns for v in values)
    if operator in ("StringLike", "ArnLike"):
        return any(_matches(v, p) for v in values for p in patterns)
    if operator == "ForAllValues:StringLike":
        return all(any(_matches(v, p) for p in patterns) for v in values)
    if operator == "Bool":
        return any(v.lower() in [p.lower() for p in patterns] for v in values)
    raise NotImplementedError(f"condition operator {operator} is not understood by the test evaluator")


def statement_allows(statement: Mapping[str, Any], need: Need) -> bool:
    if statement.get("Effect") != "Allow":
        return False
    if not any(_matches(need.action.lower(), a.lower()) for a in as_list(statement["Action"])):
        return False
    if not any(_matches(need.resource, r) for r in as_list(statement["Resource"])):
        return False
    context = need.context_dict()
    return all(_condition_holds(op, key, expected, context)
               for op, block in statement.get("Condition", {}).items()
               for key, expected in block.items())


def allows(statements: Iterable[Mapping[str, Any]], need: Need) -> bool:
    """Whether an identity policy made of ``statements`` allows ``need`` (no Deny is used)."""
    return any(statement_allows(s, need) for s in statements)


def role_statements(template: Mapping[str, Any], role_id: str, resolver: Resolver) -> list[dict[str, Any]]:
    role = template["Resources"][role_id]
    assert role["Type"] == "AWS::IAM::Role", role_id
    return [s for p in role["Properties"].get("Policies", [])
            for s in resolver.resolve(p["PolicyDocument"])["Statement"]]


# --- IoT policies ---------------------------------------------------------------------------


def iot_allows(documents: Iterable[Mapping[str, Any]], action: str, resource: str, *,
               thing_name: str, attached: bool = True) -> bool:
    """AWS IoT's decision for a connection of ``thing_name`` under these policy documents."""
    context = {"iot:Connection.Thing.IsAttached": ("true" if attached else "false",)}
    for document in documents:
        for statement in document["Statement"]:
            if statement.get("Effect") != "Allow":
                continue
            if action not in as_list(statement["Action"]):
                continue
            resources = [r.replace(THING_NAME_VARIABLE, thing_name) for r in as_list(statement["Resource"])]
            if not any(_matches(resource, r) for r in resources):
                continue
            if all(_condition_holds(op, key, expected, context)
                   for op, block in statement.get("Condition", {}).items()
                   for key, expected in block.items()):
                return True
    return False
