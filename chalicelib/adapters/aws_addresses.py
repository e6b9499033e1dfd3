"""The ``AddressMover`` port on EC2 (issue 11): an HA gateway group's Elastic IP follows its active member.

``ec2:AssociateAddress`` with ``AllowReassociation=True`` takes the address from whichever member had
it and gives it to the new active member's network interface or instance, in one call; calling it
again for the same target is harmless. The calls are bounded (:data:`EC2_CONFIG`): the report and
correction paths wait for them only briefly (:attr:`chalicelib.service.deps.Settings.address_move_wait`)
and the scheduled failover pass checks where the address is (``ec2:DescribeAddresses``) and moves it
again when a move did not land.

The role may associate only addresses, interfaces and instances tagged for its stack
(``infra/grants.py``): an admin tags a group's Elastic IP and its members' interfaces (or instances)
with ``skymesh:stack = <stack name>``.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import NotFoundError
from .aws_iot_data import aws_error_code, aws_error_message, unavailable_error

__all__ = ["Ec2AddressMover", "LocalAddressMover", "EC2_CONFIG"]

log = logging.getLogger("skymesh")

#: One attempt, short timeouts: a move that does not answer in time is confirmed (or done again) by
#: the scheduled pass, never retried while a member waits for its vote.
EC2_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=1, read_timeout=3)

_NOT_FOUND = ("InvalidAllocationID.NotFound", "InvalidNetworkInterfaceID.NotFound",
              "InvalidInstanceID.NotFound", "InvalidNetworkInterfaceID.Malformed",
              "InvalidInstanceID.Malformed", "InvalidAllocationID.Malformed")


class Ec2AddressMover:
    """Moves Elastic IPs with an ``ec2`` client (boto3, made with :data:`EC2_CONFIG`)."""

    def __init__(self, client: Any) -> None:
        self._ec2 = client

    def move(self, allocation_id: str, target: str) -> None:
        where = {"NetworkInterfaceId": target} if target.startswith("eni-") else {"InstanceId": target}
        try:
            self._ec2.associate_address(AllocationId=allocation_id, AllowReassociation=True, **where)
        except (ClientError, BotoCoreError) as err:
            raise _error(err, "ec2:AssociateAddress", allocation_id, target) from err

    def where(self, allocation_id: str) -> frozenset[str] | None:
        try:
            (address,) = self._ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"]
        except (ClientError, BotoCoreError) as err:
            raise _error(err, "ec2:DescribeAddresses", allocation_id, None) from err
        found = {address.get("NetworkInterfaceId"), address.get("InstanceId")} - {None, ""}
        return frozenset(str(x) for x in found) or None


def _error(err: Exception, label: str, allocation_id: str, target: str | None) -> Exception:
    if isinstance(err, ClientError) and aws_error_code(err) in _NOT_FOUND:
        what = f"Elastic IP {allocation_id}" if "Allocation" in aws_error_code(err) else f"{target}"
        return NotFoundError(f"{what} does not exist in this account and region ({aws_error_message(err)}); "
                             "fix the group's aws settings (PATCH …/gateway-groups/{id} with aws)",
                             code="aws_address_not_found")
    return unavailable_error(err, label)


class LocalAddressMover:
    """Local mode and on premises: the new active member adds the floating address to its uplink and
    announces it itself (agent/floating.py), so the control plane has nothing to move."""

    def move(self, allocation_id: str, target: str) -> None:
        log.info("address %s: nothing to move here, the active member announces it (%s)",
                 allocation_id, target)

    def where(self, allocation_id: str) -> frozenset[str] | None:
        return None
