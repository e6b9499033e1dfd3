"""The Elastic IP of an HA gateway group on EC2 (issue 11), with moto: the adapter moves an address
between two network interfaces (and instances), reassociating it; an unknown allocation is a clear error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib.adapters.aws_addresses import EC2_CONFIG, Ec2AddressMover
from chalicelib.errors import NotFoundError

from .conftest import REGION


@pytest.fixture
def ec2(moto_aws: None) -> Iterator[Any]:
    yield boto3.client("ec2", region_name=REGION, config=EC2_CONFIG)


def _enis(ec2: Any, n: int) -> list[str]:
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    return [ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
            for _ in range(n)]


def _on(ec2: Any, allocation_id: str) -> str | None:
    (address,) = ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"]
    return address.get("NetworkInterfaceId")


def test_an_elastic_ip_moves_between_two_network_interfaces_and_back(ec2: Any) -> None:
    eni1, eni2 = _enis(ec2, 2)
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    mover = Ec2AddressMover(ec2)
    assert mover.where(allocation) is None
    mover.move(allocation, eni1)
    assert _on(ec2, allocation) == eni1 and mover.where(allocation) == {eni1}
    mover.move(allocation, eni2)  # reassociation: taken from eni1 in the same call
    assert _on(ec2, allocation) == eni2 and mover.where(allocation) == {eni2}
    mover.move(allocation, eni2)  # idempotent
    assert _on(ec2, allocation) == eni2
    mover.move(allocation, eni1)
    assert _on(ec2, allocation) == eni1


def test_an_elastic_ip_moves_to_an_instance(ec2: Any) -> None:
    image = ec2.describe_images()["Images"][0]["ImageId"]
    (instance,) = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"]
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    Ec2AddressMover(ec2).move(allocation, instance["InstanceId"])
    (address,) = ec2.describe_addresses(AllocationIds=[allocation])["Addresses"]
    assert address["InstanceId"] == instance["InstanceId"]
    assert instance["InstanceId"] in (Ec2AddressMover(ec2).where(allocation) or ())


def test_an_unknown_allocation_is_a_clear_error(ec2: Any) -> None:
    (eni,) = _enis(ec2, 1)
    mover = Ec2AddressMover(ec2)
    with pytest.raises(NotFoundError) as e:
        mover.move("eipalloc-0123456789abcdef0", eni)
    assert "Elastic IP eipalloc-0123456789abcdef0 does not exist" in e.value.message
    assert e.value.code == "aws_address_not_found"
    with pytest.raises(NotFoundError):
        mover.where("eipalloc-0123456789abcdef0")
