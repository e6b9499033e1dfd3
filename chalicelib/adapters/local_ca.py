"""A tiny certificate authority for the local stack (the stand-in for AWS IoT issuance).

Pure functions over ``cryptography`` objects plus two file helpers. Keys are
ECDSA P-256. A certificate's id is its serial number in lowercase hex, the same
string :func:`certificate_id` returns and :func:`serial_from_id` parses back.

Nothing here logs; private keys are only ever written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import InvalidInputError
from ..fsutil import write_atomic

__all__ = [
    "CertificateAuthority",
    "PublicKey",
    "generate_key",
    "create_ca",
    "issue_server_certificate",
    "issue_client_certificate",
    "sign_csr",
    "build_crl",
    "certificate_id",
    "serial_from_id",
    "cert_pem",
    "key_pem",
    "load_certificate",
    "load_private_key",
    "write_private_key",
    "write_public_file",
]

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_SKEW = dt.timedelta(minutes=5)
_MIN_RSA_BITS = 2048
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_MAX_CSR_BYTES = 16_384


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA's key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> str:
        return cert_pem(self.cert)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def _ski(public_key: PublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def _aki(ca: CertificateAuthority) -> x509.AuthorityKeyIdentifier:
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def create_ca(common_name: str = "skymesh local CA", days: int = 3650) -> CertificateAuthority:
    """A new self-signed CA allowed to sign certificates and CRLs (path length 0)."""
    key = generate_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "skymesh"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key=key, cert=cert)


def _leaf(
    ca: CertificateAuthority,
    public_key: PublicKey,
    common_name: str,
    usage: x509.ObjectIdentifier,
    days: int,
    san: x509.SubjectAlternativeName | None = None,
) -> x509.Certificate:
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(ca), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def issue_server_certificate(
    ca: CertificateAuthority,
    public_key: PublicKey,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    days: int = 825,
) -> x509.Certificate:
    """A TLS server certificate whose SANs are exactly these names and addresses.

    ``localhost`` and ``127.0.0.1`` are always added, so clients that connect to
    the loopback address (awscrt needs an IP SAN for that) verify it too.
    """
    names = list(dict.fromkeys([*dns_names, "localhost"]))
    ips = list(dict.fromkeys([*ip_addresses, "127.0.0.1"]))
    san = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    )
    return _leaf(ca, public_key, names[0], ExtendedKeyUsageOID.SERVER_AUTH, days, san)


def issue_client_certificate(
    ca: CertificateAuthority, public_key: PublicKey, common_name: str, days: int = 3650
) -> x509.Certificate:
    """A TLS client certificate with subject ``CN=common_name`` (the broker username)."""
    return _leaf(ca, public_key, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, days)


def _check_key(public_key: object) -> PublicKey:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, _ALLOWED_CURVES):
            raise InvalidInputError(
                f"the CSR's EC key uses curve {public_key.curve.name}; use P-256 or P-384"
            )
        return public_key
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < _MIN_RSA_BITS:
            raise InvalidInputError(
                f"the CSR's RSA key has {public_key.key_size} bits; use at least {_MIN_RSA_BITS}"
            )
        return public_key
    raise InvalidInputError("the CSR's key must be ECDSA (P-256/P-384) or RSA")


def sign_csr(
    ca: CertificateAuthority, csr_pem: str | bytes, common_name: str, days: int = 3650
) -> x509.Certificate:
    """A client certificate for ``CN=common_name`` carrying the CSR's own public key.

    The CSR's subject is ignored (the caller decides the name); its signature
    must verify, which proves the requester holds the private key. Raises
    :class:`InvalidInputError` for anything that is not one valid PEM CSR.
    """
    raw = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    if len(raw) > _MAX_CSR_BYTES:
        raise InvalidInputError(f"the CSR is larger than {_MAX_CSR_BYTES} bytes")
    if b"-----BEGIN CERTIFICATE REQUEST-----" not in raw:
        raise InvalidInputError(
            "csr must be a PEM certificate signing request "
            "('-----BEGIN CERTIFICATE REQUEST-----')"
        )
    try:
        csr = x509.load_pem_x509_csr(raw)
        public_key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InvalidInputError(f"csr is not a valid PEM certificate signing request: {e}") from None
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm, InvalidSignature):
        valid = False
    if not valid:
        raise InvalidInputError("the CSR's signature does not verify with its own public key")
    return issue_client_certificate(ca, _check_key(public_key), common_name, days)


def build_crl(
    ca: CertificateAuthority, revoked_serials: Iterable[int], days: int = 3650
) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` listing ``revoked_serials`` (valid ``days``; rebuild to renew)."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - _SKEW)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(_aki(ca), critical=False)
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
    )
    for serial in sorted(set(revoked_serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


def certificate_id(cert: x509.Certificate) -> str:
    """The id of a certificate: its serial number in lowercase hex."""
    return format(cert.serial_number, "x")


def serial_from_id(certificate_id: str) -> int:
    """The serial number named by a certificate id; :class:`InvalidInputError` if it is not one."""
    try:
        serial = int(certificate_id, 16)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{certificate_id!r} is not a certificate id (hex serial)") from None
    if serial <= 0 or serial.bit_length() > 159:
        raise InvalidInputError(f"{certificate_id!r} is not a certificate id (hex serial)")
    return serial


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The unencrypted PKCS#8 PEM of ``key``. Handle as a secret."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} does not hold an EC private key")
    return key


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` as PEM to ``path`` atomically; the file is mode 0600 from its creation."""
    write_atomic(path, key_pem(key), 0o600)


def write_public_file(path: Path, data: str | bytes) -> None:
    """Write a non-secret file (certificate, CRL, ACL) atomically with mode 0644."""
    write_atomic(path, data.encode() if isinstance(data, str) else data, 0o644)
