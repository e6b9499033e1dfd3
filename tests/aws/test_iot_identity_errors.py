"""IotIdentity error paths, with botocore's Stubber (which bypasses botocore's own retries)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from chalicelib.adapters.aws_iot_identity import AMAZON_ROOT_CA_1, IotIdentity, load_csr
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.errors import InvalidInputError, NotFoundError, UnavailableError

from .conftest import POLICY, REGION, no_sleep

CERT_ID = "a" * 64
CERT_ARN = f"arn:aws:iot:{REGION}:123456789012:cert/{CERT_ID}"
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def stubbed() -> Iterator[tuple[IotIdentity, Stubber]]:
    client = boto3.client("iot", region_name=REGION)
    identity = IotIdentity(client, endpoint="x-ats.iot.us-east-1.amazonaws.com",
                           policy_name=POLICY, sleep=no_sleep, delete_thing_attempts=3)
    with Stubber(client) as stub:
        yield identity, stub
        stub.assert_no_pending_responses()


def _created(stub: Stubber) -> None:
    stub.add_response(
        "create_certificate_from_csr",
        {"certificateArn": CERT_ARN, "certificateId": CERT_ID, "certificatePem": CERT_PEM},
        {"certificateSigningRequest": ANY, "setAsActive": True},
    )


def _attached(stub: Stubber) -> None:
    stub.add_response("attach_policy", {}, {"policyName": POLICY, "target": CERT_ARN})
    stub.add_response("attach_thing_principal", {},
                      {"thingName": "host_a1", "principal": CERT_ARN})


def test_throttling_is_retried_then_succeeds(
    stubbed: tuple[IotIdentity, Stubber], make_csr: Callable[..., str]
) -> None:
    identity, stub = stubbed
    stub.add_client_error("create_thing", "ThrottlingException", "Rate exceeded", 429)
    stub.add_response("create_thing", {"thingName": "host_a1"})
    stub.add_client_error("create_certificate_from_csr", "ThrottlingException", "Rate", 429)
    _created(stub)
    _attached(stub)
    issued = identity.issue(HostId("host_a1"), make_csr())
    assert issued.certificate_id == CERT_ID and issued.certificate_pem == CERT_PEM


def test_existing_thing_is_reused(
    stubbed: tuple[IotIdentity, Stubber], make_csr: Callable[..., str]
) -> None:
    identity, stub = stubbed
    stub.add_client_error("create_thing", "ResourceAlreadyExistsException",
                          "Thing host_a1 already exists with different attributes", 409)
    _created(stub)
    _attached(stub)
    assert identity.issue(HostId("host_a1"), make_csr()).certificate_id == CERT_ID


def test_access_denied_is_unavailable_with_the_action_to_grant(
    stubbed: tuple[IotIdentity, Stubber], make_csr: Callable[..., str]
) -> None:
    identity, stub = stubbed
    stub.add_client_error("create_thing", "AccessDeniedException",
                          "User: arn:aws:sts::123456789012:assumed-role/api is not authorized",
                          403)
    with pytest.raises(UnavailableError) as info:
        identity.issue(HostId("host_a1"), make_csr())
    assert info.value.code == "aws_access_denied"
    assert "iot:CreateThing" in info.value.message
    assert "Grant the control plane's role" in info.value.message


def test_csr_refused_by_aws_is_invalid_input(
    stubbed: tuple[IotIdentity, Stubber], make_csr: Callable[..., str]
) -> None:
    identity, stub = stubbed
    stub.add_response("create_thing", {"thingName": "host_a1"})
    stub.add_client_error("create_certificate_from_csr", "InvalidRequestException",
                          "The CSR is not valid", 400)
    with pytest.raises(InvalidInputError, match="refused the csr"):
        identity.issue(HostId("host_a1"), make_csr())


def test_failure_after_certificate_creation_rolls_back(
    stubbed: tuple[IotIdentity, Stubber], make_csr: Callable[..., str]
) -> None:
    identity, stub = stubbed
    stub.add_response("create_thing", {"thingName": "host_a1"})
    _created(stub)
    stub.add_response("attach_policy", {}, {"policyName": POLICY, "target": CERT_ARN})
    stub.add_client_error("attach_thing_principal", "AccessDeniedException", "denied", 403)
    # The rollback, in this order:
    stub.add_response("update_certificate", {},
                      {"certificateId": CERT_ID, "newStatus": "INACTIVE"})
    stub.add_client_error("detach_thing_principal", "ResourceNotFoundException", "none", 404)
    stub.add_response("detach_policy", {}, {"policyName": POLICY, "target": CERT_ARN})
    stub.add_response("delete_certificate", {},
                      {"certificateId": CERT_ID, "forceDelete": True})
    with pytest.raises(UnavailableError, match="iot:AttachThingPrincipal"):
        identity.issue(HostId("host_a1"), make_csr())


def test_rollback_that_cannot_delete_revokes(
    stubbed: tuple[IotIdentity, Stubber], make_csr: Callable[..., str]
) -> None:
    identity, stub = stubbed
    stub.add_response("create_thing", {"thingName": "host_a1"})
    _created(stub)
    stub.add_client_error("attach_policy", "ServiceUnavailableException", "down", 503)
    stub.add_client_error("attach_policy", "ServiceUnavailableException", "down", 503)
    stub.add_client_error("attach_policy", "ServiceUnavailableException", "down", 503)
    stub.add_response("update_certificate", {})
    stub.add_client_error("detach_thing_principal", "ResourceNotFoundException", "none", 404)
    stub.add_client_error("detach_policy", "ResourceNotFoundException", "none", 404)
    stub.add_client_error("delete_certificate", "DeleteConflictException", "busy", 409)
    stub.add_response("update_certificate", {},
                      {"certificateId": CERT_ID, "newStatus": "REVOKED"})
    with pytest.raises(UnavailableError, match="retry in a few seconds"):
        identity.issue(HostId("host_a1"), make_csr())


def test_revoke_tolerates_everything_missing(stubbed: tuple[IotIdentity, Stubber]) -> None:
    identity, stub = stubbed
    stub.add_client_error("list_thing_principals", "ResourceNotFoundException", "no thing", 404)
    stub.add_client_error("describe_certificate", "ResourceNotFoundException", "no cert", 404)
    stub.add_client_error("list_thing_groups_for_thing", "ResourceNotFoundException", "x", 404)
    stub.add_client_error("delete_thing", "ResourceNotFoundException", "no thing", 404)
    identity.revoke(HostId("host_a1"), CERT_ID)


def test_revoke_tolerates_already_detached(stubbed: tuple[IotIdentity, Stubber]) -> None:
    identity, stub = stubbed
    stub.add_response("list_thing_principals", {"principals": []})
    stub.add_response("describe_certificate", {"certificateDescription": {
        "certificateArn": CERT_ARN, "certificateId": CERT_ID, "status": "ACTIVE"}})
    stub.add_response("update_certificate", {},
                      {"certificateId": CERT_ID, "newStatus": "REVOKED"})
    stub.add_client_error("detach_policy", "ResourceNotFoundException", "not attached", 404)
    stub.add_client_error("detach_thing_principal", "ResourceNotFoundException", "no", 404)
    stub.add_response("list_thing_groups_for_thing", {"thingGroups": [
        {"groupName": "net-net_x", "groupArn": "arn:aws:iot:r:a:thinggroup/net-net_x"}]})
    stub.add_client_error("remove_thing_from_thing_group", "ResourceNotFoundException", "", 404)
    stub.add_response("delete_thing", {}, {"thingName": "host_a1"})
    identity.revoke(HostId("host_a1"), CERT_ID)


def test_revoke_waits_for_asynchronous_detach(stubbed: tuple[IotIdentity, Stubber]) -> None:
    identity, stub = stubbed
    stub.add_response("list_thing_principals", {"principals": [CERT_ARN]})
    stub.add_response("describe_certificate", {"certificateDescription": {
        "certificateArn": CERT_ARN, "certificateId": CERT_ID, "status": "REVOKED"}})
    stub.add_response("detach_policy", {})
    stub.add_response("detach_thing_principal", {})
    stub.add_response("list_thing_groups_for_thing", {"thingGroups": []})
    stub.add_client_error("delete_thing", "InvalidRequestException",
                          "Cannot delete thing host_a1 because it has attached principals", 400)
    stub.add_response("delete_thing", {})
    identity.revoke(HostId("host_a1"), CERT_ID)


def test_revoke_access_denied_raises(stubbed: tuple[IotIdentity, Stubber]) -> None:
    identity, stub = stubbed
    stub.add_response("list_thing_principals", {"principals": []})
    stub.add_response("describe_certificate", {"certificateDescription": {
        "certificateArn": CERT_ARN, "certificateId": CERT_ID, "status": "ACTIVE"}})
    stub.add_client_error("update_certificate", "AccessDeniedException", "denied", 403)
    with pytest.raises(UnavailableError, match="iot:UpdateCertificate"):
        identity.revoke(HostId("host_a1"), CERT_ID)


GROUP_ARN = f"arn:aws:iot:{REGION}:123456789012:thinggroup/net-net_new"


def _group_ready(stub: Stubber, *, made: bool = False) -> None:
    """The calls that make sure group ``net-net_new`` exists with its policy attached."""
    if made:
        stub.add_client_error("describe_thing_group", "ResourceNotFoundException", "no", 404,
                              expected_params={"thingGroupName": "net-net_new"})
        stub.add_response("create_thing_group",
                          {"thingGroupName": "net-net_new", "thingGroupArn": GROUP_ARN},
                          {"thingGroupName": "net-net_new", "thingGroupProperties": ANY})
    else:
        stub.add_response("describe_thing_group", {"thingGroupArn": GROUP_ARN},
                          {"thingGroupName": "net-net_new"})
    stub.add_response("create_policy", {"policyName": "net-net_new"},
                      {"policyName": "net-net_new", "policyDocument": ANY})
    stub.add_response("attach_policy", {}, {"policyName": "net-net_new", "target": GROUP_ARN})


def test_set_networks_creates_a_missing_group_and_its_policy(
    stubbed: tuple[IotIdentity, Stubber]
) -> None:
    identity, stub = stubbed
    stub.add_response("list_thing_groups_for_thing", {"thingGroups": [], "nextToken": "p2"})
    stub.add_response("list_thing_groups_for_thing", {"thingGroups": [
        {"groupName": "net-net_old", "groupArn": "arn:aws:iot:r:a:thinggroup/net-net_old"}]},
        {"thingName": "host_a1", "maxResults": 250, "nextToken": "p2"})
    stub.add_response("remove_thing_from_thing_group", {},
                      {"thingGroupName": "net-net_old", "thingName": "host_a1"})
    _group_ready(stub, made=True)
    stub.add_response("add_thing_to_thing_group", {},
                      {"thingGroupName": "net-net_new", "thingName": "host_a1"})
    identity.set_networks(HostId("host_a1"), [NetworkId("net_new")])


def test_network_policy_names_only_that_networks_topics(stubbed: tuple[IotIdentity, Stubber]) -> None:
    identity, stub = stubbed
    documents: list[str] = []

    class Capture:
        def __eq__(self, other: object) -> bool:
            documents.append(str(other))
            return True

    stub.add_response("list_thing_groups_for_thing", {"thingGroups": []})
    stub.add_response("describe_thing_group", {"thingGroupArn": GROUP_ARN})
    stub.add_response("create_policy", {}, {"policyName": "net-net_new", "policyDocument": Capture()})
    stub.add_response("attach_policy", {})
    stub.add_response("add_thing_to_thing_group", {})
    identity.set_networks(HostId("host_a1"), [NetworkId("net_new")])
    resources = [st["Resource"] for st in json.loads(documents[0])["Statement"]]
    assert resources == [f"arn:aws:iot:{REGION}:123456789012:topicfilter/sm/n/net_new",
                         f"arn:aws:iot:{REGION}:123456789012:topic/sm/n/net_new"]


def test_interrupted_join_is_completed_by_the_next_one(stubbed: tuple[IotIdentity, Stubber]) -> None:
    """Group and policy made, policy never attached (a crash in between): the next join attaches."""
    identity, stub = stubbed
    stub.add_response("list_thing_groups_for_thing", {"thingGroups": []})
    stub.add_response("describe_thing_group", {"thingGroupArn": GROUP_ARN})
    stub.add_client_error("create_policy", "ResourceAlreadyExistsException", "exists", 409)
    stub.add_response("attach_policy", {}, {"policyName": "net-net_new", "target": GROUP_ARN})
    stub.add_response("add_thing_to_thing_group", {})
    identity.set_networks(HostId("host_a1"), [NetworkId("net_new")])


def test_a_ready_group_is_not_checked_again(stubbed: tuple[IotIdentity, Stubber]) -> None:
    identity, stub = stubbed
    for host in ("host_a1", "host_b2"):
        stub.add_response("list_thing_groups_for_thing", {"thingGroups": []},
                          {"thingName": host, "maxResults": 250})
        if host == "host_a1":
            _group_ready(stub)
        stub.add_response("add_thing_to_thing_group", {},
                          {"thingGroupName": "net-net_new", "thingName": host})
        identity.set_networks(HostId(host), [NetworkId("net_new")])


def test_set_networks_group_made_concurrently(stubbed: tuple[IotIdentity, Stubber]) -> None:
    identity, stub = stubbed
    stub.add_response("list_thing_groups_for_thing", {"thingGroups": []})
    stub.add_client_error("describe_thing_group", "ResourceNotFoundException", "no", 404)
    stub.add_client_error("create_thing_group", "ResourceAlreadyExistsException", "exists", 409)
    stub.add_response("describe_thing_group", {"thingGroupArn": GROUP_ARN})
    stub.add_client_error("create_policy", "ResourceAlreadyExistsException", "exists", 409)
    stub.add_response("attach_policy", {})
    stub.add_response("add_thing_to_thing_group", {})
    identity.set_networks(HostId("host_a1"), [NetworkId("net_new")])


def test_throttled_policy_calls_are_retried(stubbed: tuple[IotIdentity, Stubber]) -> None:
    identity, stub = stubbed
    stub.add_response("list_thing_groups_for_thing", {"thingGroups": []})
    stub.add_response("describe_thing_group", {"thingGroupArn": GROUP_ARN})
    stub.add_client_error("create_policy", "ThrottlingException", "Rate exceeded", 400)
    stub.add_response("create_policy", {})
    stub.add_client_error("attach_policy", "ThrottlingException", "Rate exceeded", 400)
    stub.add_response("attach_policy", {})
    stub.add_response("add_thing_to_thing_group", {})
    identity.set_networks(HostId("host_a1"), [NetworkId("net_new")])


def test_policy_creation_denied_names_the_action_and_leaves_host_out(
    stubbed: tuple[IotIdentity, Stubber]
) -> None:
    identity, stub = stubbed
    stub.add_response("list_thing_groups_for_thing", {"thingGroups": []})
    stub.add_response("describe_thing_group", {"thingGroupArn": GROUP_ARN})
    stub.add_client_error("create_policy", "AccessDeniedException", "not authorized", 403)
    with pytest.raises(UnavailableError, match="iot:CreatePolicy") as info:
        identity.set_networks(HostId("host_a1"), [NetworkId("net_new")])
    assert info.value.code == "aws_access_denied"


def test_set_networks_for_a_host_that_vanished(stubbed: tuple[IotIdentity, Stubber]) -> None:
    identity, stub = stubbed
    stub.add_response("list_thing_groups_for_thing", {"thingGroups": []})
    _group_ready(stub)
    stub.add_client_error("add_thing_to_thing_group", "ResourceNotFoundException", "no", 404)
    with pytest.raises(NotFoundError, match="iot:AddThingToThingGroup"):
        identity.set_networks(HostId("host_a1"), [NetworkId("net_new")])


def test_remove_network_detaches_and_deletes_policy_and_group(
    stubbed: tuple[IotIdentity, Stubber]
) -> None:
    identity, stub = stubbed
    stub.add_response("describe_thing_group", {"thingGroupArn": GROUP_ARN})
    stub.add_response("detach_policy", {}, {"policyName": "net-net_new", "target": GROUP_ARN})
    stub.add_client_error("delete_policy", "ResourceNotFoundException", "gone", 404)
    stub.add_response("delete_thing_group", {}, {"thingGroupName": "net-net_new"})
    identity.remove_network("net_new")


def test_bad_names_are_refused_before_aws() -> None:
    client = boto3.client("iot", region_name=REGION)
    identity = IotIdentity(client, endpoint="e", policy_name=POLICY)
    with Stubber(client):
        with pytest.raises(InvalidInputError, match="network id"):
            identity.set_networks(HostId("host_a1"), [NetworkId("net/x")])
        with pytest.raises(InvalidInputError, match="host id"):
            identity.revoke(HostId("host a1"), CERT_ID)
    with pytest.raises(ValueError, match="thing_prefix"):
        IotIdentity(client, endpoint="e", policy_name=POLICY, thing_prefix="a/b")


def _csr_of(key: Any) -> x509.CertificateSigningRequest:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "host_a1")])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, algorithm)


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


@pytest.mark.parametrize(
    "key, needle",
    [
        (rsa.generate_private_key(65537, 1024), "1024-bit RSA"),
        (ec.generate_private_key(ec.SECP256K1()), "secp256k1"),
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ],
)
def test_csr_with_a_key_iot_cannot_sign_is_refused(key: Any, needle: str) -> None:
    pem = _csr_of(key).public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(InvalidInputError, match=needle):
        load_csr(pem)


def test_csr_with_a_forged_signature_is_refused() -> None:
    real = _csr_of(ec.generate_private_key(ec.SECP256R1()))
    der = real.public_bytes(serialization.Encoding.DER)
    sig = real.signature
    # Change the last byte of the signature's s value: still well-formed DER.
    forged = sig[:-1] + bytes([sig[-1] ^ 0x01])
    assert der.endswith(sig)
    with pytest.raises(InvalidInputError, match="does not verify"):
        load_csr(_pem(der[: -len(sig)] + forged))


def test_rsa_2048_csr_is_accepted() -> None:
    pem = _csr_of(rsa.generate_private_key(65537, 2048)).public_bytes(
        serialization.Encoding.PEM).decode()
    assert load_csr(pem).subject.rfc4514_string() == "CN=host_a1"


def test_bundled_ca_is_amazon_root_ca_1() -> None:
    cert = x509.load_pem_x509_certificate(AMAZON_ROOT_CA_1.encode())
    assert cert.fingerprint(hashes.SHA256()).hex() == (
        "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e")


def test_discard_leaves_the_rest_to_the_next_sweep_while_aws_still_detaches(
    stubbed: tuple[IotIdentity, Stubber]
) -> None:
    """Detaching is asynchronous: the thing (and so the certificate) cannot be deleted yet.
    The certificate is already inactive and detached; the caller hears to try later."""
    identity, stub = stubbed
    stub.add_response("list_thing_principals", {"principals": [CERT_ARN]})
    stub.add_response("describe_certificate", {"certificateDescription": {
        "certificateArn": CERT_ARN, "certificateId": CERT_ID, "status": "ACTIVE"}})
    stub.add_response("update_certificate", {}, {"certificateId": CERT_ID, "newStatus": "INACTIVE"})
    stub.add_response("detach_policy", {}, {"policyName": POLICY, "target": CERT_ARN})
    stub.add_response("detach_thing_principal", {}, {"thingName": "host_a1", "principal": CERT_ARN})
    stub.add_response("list_thing_groups_for_thing", {"thingGroups": []})
    for _ in range(3):  # delete_thing_attempts
        stub.add_client_error("delete_thing", "InvalidRequestException",
                              "Cannot delete thing host_a1 because it has attached principals", 400)
    with pytest.raises(UnavailableError, match="next sweep"):
        identity.discard(HostId("host_a1"), CERT_ID)


def test_discard_reports_a_certificate_aws_will_not_delete_yet(
    stubbed: tuple[IotIdentity, Stubber]
) -> None:
    identity, stub = stubbed
    stub.add_client_error("list_thing_principals", "ResourceNotFoundException", "no thing", 404)
    stub.add_response("describe_certificate", {"certificateDescription": {
        "certificateArn": CERT_ARN, "certificateId": CERT_ID, "status": "INACTIVE"}})
    stub.add_client_error("detach_policy", "ResourceNotFoundException", "not attached", 404)
    stub.add_client_error("detach_thing_principal", "ResourceNotFoundException", "no", 404)
    stub.add_client_error("list_thing_groups_for_thing", "ResourceNotFoundException", "x", 404)
    stub.add_client_error("delete_thing", "ResourceNotFoundException", "no thing", 404)
    stub.add_client_error("delete_certificate", "CertificateStateException",
                          "Certificate is still attached", 409)
    with pytest.raises(UnavailableError, match="not deleted yet"):
        identity.discard(HostId("host_a1"), CERT_ID)
