"""IotIdentity against moto's IoT registry: issue, set_networks, revoke."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iot.models import iot_backends

from chalicelib.adapters.aws_iot_identity import AMAZON_ROOT_CA_1, IotIdentity
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.errors import InvalidInputError, UnavailableError

from .conftest import POLICY, REGION, no_sleep

ENDPOINT = "abc123-ats.iot.us-east-1.amazonaws.com"


def _identity(iot: Any, **kw: Any) -> IotIdentity:
    return IotIdentity(iot, endpoint=ENDPOINT, policy_name=POLICY, sleep=no_sleep, **kw)


def _groups(iot: Any, thing: str) -> set[str]:
    return {g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"]}


def _thing_exists(iot: Any, thing: str) -> bool:
    return any(t["thingName"] == thing for t in iot.list_things()["things"])


def test_endpoint_and_port(iot: Any) -> None:
    identity = _identity(iot, port=443)
    assert identity.mqtt_endpoint == ENDPOINT
    assert identity.mqtt_port == 443


def test_issue_makes_active_certificate_attached_to_policy_and_thing(
    iot: Any, make_csr: Callable[..., str]
) -> None:
    issued = _identity(iot).issue(HostId("host_a1"), make_csr())

    desc = iot.describe_certificate(certificateId=issued.certificate_id)["certificateDescription"]
    assert desc["status"] == "ACTIVE"
    assert desc["certificatePem"] == issued.certificate_pem
    x509.load_pem_x509_certificate(issued.certificate_pem.encode())  # a real certificate
    arn = desc["certificateArn"]
    assert [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]] == [POLICY]
    assert iot.list_principal_things(principal=arn)["things"] == ["host_a1"]
    attrs = iot.describe_thing(thingName="host_a1")["attributes"]
    assert attrs == {"host_id": "host_a1"}
    assert issued.ca_pem == AMAZON_ROOT_CA_1


def test_issue_twice_reuses_the_thing(iot: Any, make_csr: Callable[..., str]) -> None:
    identity = _identity(iot)
    first = identity.issue(HostId("host_a1"), make_csr())
    second = identity.issue(HostId("host_a1"), make_csr())
    assert first.certificate_id != second.certificate_id
    assert len(iot.list_thing_principals(thingName="host_a1")["principals"]) == 2


def test_issue_uses_thing_prefix(iot: Any, make_csr: Callable[..., str]) -> None:
    identity = _identity(iot, thing_prefix="dev-")
    identity.issue(HostId("host_a1"), make_csr())
    assert identity.thing_name("host_a1") == "dev-host_a1"
    assert _thing_exists(iot, "dev-host_a1")


@pytest.mark.parametrize(
    "csr, needle",
    [
        ("", "empty"),
        ("hello", "not PEM"),
        ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
         "could not be parsed"),
        ("-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 20000, "at most"),
    ],
)
def test_malformed_csr_is_invalid_input_and_touches_nothing(
    iot: Any, csr: str, needle: str
) -> None:
    with pytest.raises(InvalidInputError, match=needle) as info:
        _identity(iot).issue(HostId("host_a1"), csr)
    assert info.value.code == "invalid_csr"
    assert iot.list_things()["things"] == []
    assert iot.list_certificates()["certificates"] == []


def test_missing_policy_rolls_back_the_certificate(
    iot: Any, make_csr: Callable[..., str]
) -> None:
    identity = IotIdentity(iot, endpoint=ENDPOINT, policy_name="no-such-policy", sleep=no_sleep)
    with pytest.raises(UnavailableError, match="no-such-policy"):
        identity.issue(HostId("host_a1"), make_csr())
    assert iot.list_certificates()["certificates"] == []
    assert iot.list_thing_principals(thingName="host_a1")["principals"] == []


def test_set_networks_adds_and_removes_groups(iot: Any, make_csr: Callable[..., str]) -> None:
    identity = _identity(iot)
    identity.issue(HostId("host_a1"), make_csr())

    identity.set_networks(HostId("host_a1"), [NetworkId("net_x"), NetworkId("net_y")])
    assert _groups(iot, "host_a1") == {"net-net_x", "net-net_y"}

    identity.set_networks(HostId("host_a1"), [NetworkId("net_y"), NetworkId("net_z")])
    assert _groups(iot, "host_a1") == {"net-net_y", "net-net_z"}
    # The group of a network left stays for its other hosts.
    iot.describe_thing_group(thingGroupName="net-net_x")

    identity.set_networks(HostId("host_a1"), [])
    assert _groups(iot, "host_a1") == set()


def test_set_networks_shares_groups_between_hosts(iot: Any) -> None:
    identity = _identity(iot, thing_prefix="dev-")
    identity.set_networks(HostId("host_a1"), [NetworkId("net_x")])  # thing made on demand
    identity.set_networks(HostId("host_b2"), [NetworkId("net_x")])
    things = iot.list_things_in_thing_group(thingGroupName="dev-net-net_x")["things"]
    assert sorted(things) == ["dev-host_a1", "dev-host_b2"]


def test_set_networks_leaves_foreign_groups_alone(iot: Any) -> None:
    identity = _identity(iot)
    identity.set_networks(HostId("host_a1"), [NetworkId("net_x")])
    iot.create_thing_group(thingGroupName="fleet-eu")
    iot.add_thing_to_thing_group(thingGroupName="fleet-eu", thingName="host_a1")
    identity.set_networks(HostId("host_a1"), [NetworkId("net_y")])
    assert _groups(iot, "host_a1") == {"fleet-eu", "net-net_y"}


def test_set_networks_refuses_more_groups_than_iot_allows(iot: Any) -> None:
    identity = _identity(iot)
    with pytest.raises(InvalidInputError, match="at most 10") as info:
        identity.set_networks(HostId("host_a1"), [NetworkId(f"net_{i}") for i in range(11)])
    assert info.value.code == "too_many_networks"


def test_revoke_revokes_detaches_and_deletes(iot: Any, make_csr: Callable[..., str]) -> None:
    identity = _identity(iot)
    issued = identity.issue(HostId("host_a1"), make_csr())
    identity.set_networks(HostId("host_a1"), [NetworkId("net_x")])
    arn = iot.describe_certificate(certificateId=issued.certificate_id)[
        "certificateDescription"]["certificateArn"]

    identity.revoke(HostId("host_a1"), issued.certificate_id)

    desc = iot.describe_certificate(certificateId=issued.certificate_id)["certificateDescription"]
    assert desc["status"] == "REVOKED"
    assert iot.list_attached_policies(target=arn)["policies"] == []
    assert iot.list_principal_things(principal=arn)["things"] == []
    assert not _thing_exists(iot, "host_a1")
    assert iot.list_things_in_thing_group(thingGroupName="net-net_x")["things"] == []


def test_revoke_also_revokes_other_certificates_of_the_host(
    iot: Any, make_csr: Callable[..., str]
) -> None:
    identity = _identity(iot)
    old = identity.issue(HostId("host_a1"), make_csr())
    new = identity.issue(HostId("host_a1"), make_csr())
    identity.revoke(HostId("host_a1"), old.certificate_id)
    for cid in (old.certificate_id, new.certificate_id):
        assert iot.describe_certificate(certificateId=cid)["certificateDescription"][
            "status"] == "REVOKED"
    assert not _thing_exists(iot, "host_a1")


def test_revoke_is_idempotent(iot: Any, make_csr: Callable[..., str]) -> None:
    identity = _identity(iot)
    issued = identity.issue(HostId("host_a1"), make_csr())
    identity.revoke(HostId("host_a1"), issued.certificate_id)
    identity.revoke(HostId("host_a1"), issued.certificate_id)
    # Also when the certificate and the thing never existed.
    identity.revoke(HostId("host_zz"), "0" * 64)
    backend = iot_backends[DEFAULT_ACCOUNT_ID][REGION]
    assert backend.things == {}


def _certificate_ids(iot: Any) -> set[str]:
    return {c["certificateId"] for c in iot.list_certificates()["certificates"]}


def test_discard_deletes_thing_certificate_and_attachments(
    iot: Any, make_csr: Callable[..., str]
) -> None:
    """An identity whose registration never committed: nothing of it is left in IoT."""
    identity = _identity(iot)
    kept = identity.issue(HostId("host_k1"), make_csr())
    issued = identity.issue(HostId("host_a1"), make_csr())
    identity.set_networks(HostId("host_a1"), [NetworkId("net_x")])
    identity.set_networks(HostId("host_k1"), [NetworkId("net_x")])
    arn = iot.describe_certificate(certificateId=issued.certificate_id)[
        "certificateDescription"]["certificateArn"]

    identity.discard(HostId("host_a1"), issued.certificate_id)

    assert _certificate_ids(iot) == {kept.certificate_id}
    assert iot.list_attached_policies(target=arn)["policies"] == []
    assert iot.list_principal_things(principal=arn)["things"] == []
    assert not _thing_exists(iot, "host_a1")
    assert [t for t in iot.list_things_in_thing_group(thingGroupName="net-net_x")["things"]] == ["host_k1"]
    # The other host is untouched.
    assert iot.describe_certificate(certificateId=kept.certificate_id)[
        "certificateDescription"]["status"] == "ACTIVE"


def test_discard_without_a_certificate_id_finds_what_is_attached_and_is_idempotent(
    iot: Any, make_csr: Callable[..., str]
) -> None:
    """The registration died before it recorded its certificate: the thing names it."""
    identity = _identity(iot)
    identity.issue(HostId("host_a1"), make_csr())
    identity.discard(HostId("host_a1"), None)
    assert _certificate_ids(iot) == set()
    assert not _thing_exists(iot, "host_a1")
    identity.discard(HostId("host_a1"), None)
    identity.discard(HostId("host_zz"), "0" * 64)  # never existed
