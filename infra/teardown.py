"""Remove what the API made in AWS IoT at run time, so ``cdk destroy`` can delete the stack.

CloudFormation knows nothing of the things, certificates, thing groups and network
policies the API creates as hosts register; and it cannot delete the host policy
while certificates still have it attached. This revokes every host certificate,
deletes every host thing and every network's thing group and policy of one stack::

    python -m infra.teardown --stack skymesh            # shows what it would remove
    python -m infra.teardown --stack skymesh --yes      # removes it

Run it with the credentials you deploy with. Hosts lose their connection to the
broker at once; their WireGuard tunnels stay up (the agent fails open).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from chalicelib.adapters.aws_iot_identity import IotIdentity

__all__ = ["Plan", "plan", "execute", "main"]


@dataclass
class Plan:
    """Everything of one stack in the IoT registry: hosts (thing -> certificate ids), networks."""

    stack: str
    hosts: dict[str, list[str]] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)
    loose_certificates: list[str] = field(default_factory=list)  #: no thing attached

    def describe(self) -> str:
        lines = [f"stack {self.stack}: {len(self.hosts)} host(s), {len(self.networks)} network(s)"]
        lines += [f"  host {h}: revoke {len(c)} certificate(s), delete thing"
                  for h, c in sorted(self.hosts.items())]
        lines += [f"  network {n}: delete thing group and policy" for n in sorted(self.networks)]
        lines += [f"  certificate {c}: revoke (no thing)" for c in self.loose_certificates]
        return "\n".join(lines)


def _pages(call: Any, key: str, **params: Any) -> Iterator[Any]:
    token = None
    while True:
        page = call(**params, **({"nextToken": token} if token else {}))
        yield from page.get(key, [])
        token = page.get("nextToken")
        if not token:
            return


def _cert_id(arn: str) -> str:
    return arn.rsplit("/", 1)[1]


def plan(iot: Any, stack: str) -> Plan:
    """What :func:`execute` would remove for ``stack`` (reads only)."""
    result = Plan(stack)
    prefix = f"{stack}-net-"
    for group in _pages(iot.list_thing_groups, "thingGroups", namePrefixFilter=prefix):
        result.networks.append(group["groupName"][len(prefix):])
        for thing in _pages(iot.list_things_in_thing_group, "things", thingGroupName=group["groupName"]):
            result.hosts.setdefault(thing, [])
    for target in _pages(iot.list_targets_for_policy, "targets", policyName=f"{stack}-host"):
        if ":cert/" not in target:
            continue
        things = list(_pages(iot.list_principal_things, "things", principal=target))
        if not things:
            result.loose_certificates.append(_cert_id(target))
        for thing in things:
            result.hosts.setdefault(thing, []).append(_cert_id(target))
    return result


def execute(iot: Any, todo: Plan) -> None:
    """Revoke and delete everything in ``todo`` (idempotent: what is gone is skipped)."""
    identity = IotIdentity(iot, endpoint="unused", policy_name=f"{todo.stack}-host",
                           network_prefix=f"{todo.stack}-net-")
    for host, certificates in sorted(todo.hosts.items()):
        # revoke() also revokes every other certificate attached to the thing.
        identity.revoke(host, certificates[0] if certificates else "0" * 64)  # type: ignore[arg-type]
    for cert_id in todo.loose_certificates:
        identity.revoke("unattached-certificate", cert_id)  # type: ignore[arg-type]
    for network in todo.networks:
        identity.remove_network(network)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.teardown", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="skymesh", help="stack name (default: skymesh)")
    parser.add_argument("--region", help="AWS region (default: your AWS configuration's)")
    parser.add_argument("--yes", action="store_true", help="remove; without it, only show the plan")
    args = parser.parse_args(argv)

    import boto3

    iot = boto3.session.Session(region_name=args.region).client("iot")
    todo = plan(iot, args.stack)
    print(todo.describe())
    if not args.yes:
        print("nothing removed; run again with --yes to remove the above")
        return 0
    execute(iot, todo)
    print("removed; now `cdk destroy` can delete the stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
