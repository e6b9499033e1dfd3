"""Local CA: CSR signing keeps the CSR's key, refuses bad CSRs; CRLs and server SANs."""

from __future__ import annotations

import base64
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from chalicelib.adapters import local_ca
from chalicelib.adapters.local_identity import LocalCaIdentity, ensure_ca
from chalicelib.errors import InvalidInputError

from .conftest import make_csr


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def identity(tmp_path) -> LocalCaIdentity:
    ensure_ca(tmp_path)
    return LocalCaIdentity(tmp_path, "127.0.0.1", 8883)


def test_issue_keeps_the_csr_key_and_names_the_host(identity, tmp_path):
    key, csr = make_csr("whatever-the-agent-wrote")
    issued = identity.issue("host_abcd", csr)
    cert = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    assert _spki(cert.public_key()) == _spki(key.public_key())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "host_abcd"
    assert issued.certificate_id == format(cert.serial_number, "x")
    ca = x509.load_pem_x509_certificate(issued.ca_pem.encode())
    cert.verify_directly_issued_by(ca)
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("bad", [
    "",
    "not a csr",
    "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
])
def test_malformed_csr_is_invalid_input(identity, bad):
    with pytest.raises(InvalidInputError) as e:
        identity.issue("host_abcd", bad)
    assert "CSR" in e.value.message or "csr" in e.value.message


def test_csr_with_a_signature_that_does_not_verify_is_refused(identity):
    key = ec.generate_private_key(ec.SECP256R1())
    good = (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .sign(key, hashes.SHA256()))
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # flip a bit inside the signature: no proof of holding the key
    pem = ("-----BEGIN CERTIFICATE REQUEST-----\n"
           + base64.encodebytes(bytes(der)).decode()
           + "-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(InvalidInputError):
        identity.issue("host_abcd", pem)


def test_weak_rsa_key_is_refused(identity):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
           .sign(weak, hashes.SHA256()))
    with pytest.raises(InvalidInputError, match="2048"):
        identity.issue("host_abcd", csr.public_bytes(serialization.Encoding.PEM).decode())


@pytest.mark.parametrize("host_id", ["", "host a", "host/a", "host+#", "skymesh-control-api"])
def test_unusable_host_ids_are_refused(identity, host_id):
    _, csr = make_csr()
    with pytest.raises(InvalidInputError):
        identity.issue(host_id, csr)
    with pytest.raises(InvalidInputError):
        identity.set_networks(host_id, [])


def test_bad_certificate_id_is_refused(identity):
    with pytest.raises(InvalidInputError):
        identity.revoke("host_abcd", "not-hex")


def test_crl_lists_revoked_serials(identity, tmp_path):
    _, csr = make_csr()
    issued = identity.issue("host_abcd", csr)
    identity.revoke("host_abcd", issued.certificate_id)
    identity.revoke("host_abcd", issued.certificate_id)  # idempotent
    crl = x509.load_pem_x509_crl((tmp_path / "broker" / "crl.pem").read_bytes())
    ca = ensure_ca(tmp_path)
    assert crl.is_signature_valid(ca.cert.public_key())
    assert [r.serial_number for r in crl] == [int(issued.certificate_id, 16)]
    assert "topic deny sm/#" in (tmp_path / "broker" / "acl").read_text()
    # a new certificate for the same host restores its base rights
    identity.issue("host_abcd", make_csr()[1])
    assert (tmp_path / "broker" / "acl.d" / "host_abcd").read_text() == "user host_abcd\n"


def test_server_certificate_sans():
    ca = local_ca.create_ca()
    key = local_ca.generate_key()
    cert = local_ca.issue_server_certificate(ca, key.public_key(), ["localhost"], ["198.18.0.1"])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("127.0.0.1")}


def test_control_client_certificate_is_reused(identity, tmp_path):
    a = identity.issue_control_client("api")
    b = identity.issue_control_client("api")
    assert a == b and a.common_name == "skymesh-control-api"
    assert a.cert_path.read_bytes() == b.cert_path.read_bytes()
    assert stat.S_IMODE(a.key_path.stat().st_mode) == 0o600
    assert "user skymesh-control-api\ntopic readwrite sm/#\ntopic readwrite $aws/#" in (
        tmp_path / "broker" / "acl").read_text()
