"""Keys made on the host: the WireGuard key pair and the TLS key + CSR (never sent anywhere).

The WireGuard key pair is made by :mod:`chalicelib.wgkeys`, the one owner of X25519 keys
(the control plane makes remote-access clients' pairs with it too).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chalicelib import wgkeys

__all__ = ["new_wireguard_key", "wireguard_public_key", "new_tls_key", "csr_pem"]


def new_wireguard_key() -> str:
    """A new WireGuard private key, base64 (as ``wg genkey`` prints it)."""
    return wgkeys.new_key_pair().private_key


def wireguard_public_key(private_key: str) -> str:
    """The public key of a base64 private key (as ``wg pubkey`` prints it)."""
    return wgkeys.public_key_of(private_key)


def new_tls_key() -> str:
    """A new P-256 TLS client key, PEM (PKCS#8) — AWS IoT and Mosquitto both take it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def csr_pem(tls_key_pem: str, name: str) -> str:
    """A CSR for ``tls_key_pem``; the control plane sets the subject it signs."""
    key = serialization.load_pem_private_key(tls_key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()
