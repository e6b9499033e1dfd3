"""What a host sends when it registers: its own WireGuard key and a CSR of its own TLS key."""

from __future__ import annotations

import base64
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.oid import NameOID


def wg_public_key() -> str:
    key = x25519.X25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def csr_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "host")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def host_body(name: str, **extra: Any) -> dict[str, Any]:
    """The body of ``POST /v1/hosts``."""
    return {"name": name, "wg_public_key": wg_public_key(), "listen_port": 51820,
            "endpoints": ["198.18.0.10:51820"], "csr_pem": csr_pem(), **extra}
