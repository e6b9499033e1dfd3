"""WireGuard key pairs (X25519, base64 as ``wg genkey`` / ``wg pubkey`` print them).

Used where a key pair is made for someone else: the control plane makes one for a
remote-access client that brings no public key (its private half is returned once and never
stored), and ``skymesh client create`` makes one on the admin's machine. A host agent makes
its own (``agent/keys.py``); hosts' private keys never leave the host.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

__all__ = ["KeyPair", "new_key_pair", "public_key_of"]


class KeyPair(tuple[str, str]):
    """``(private_key, public_key)``, both base64. Its ``repr`` hides the private key, so a
    pair that ends up in a log line or a traceback does not give it away."""

    @property
    def private_key(self) -> str:
        return self[0]

    @property
    def public_key(self) -> str:
        return self[1]

    def __repr__(self) -> str:
        return f"KeyPair(public_key={self[1]!r})"

    __str__ = __repr__


def new_key_pair() -> KeyPair:
    """A fresh X25519 key pair from the operating system's randomness."""
    key = x25519.X25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return KeyPair((base64.b64encode(raw).decode(), _public(key)))


def public_key_of(private_key: str) -> str:
    """The public key of a base64 private key (as ``wg pubkey`` prints it)."""
    return _public(x25519.X25519PrivateKey.from_private_bytes(base64.b64decode(private_key)))


def _public(key: x25519.X25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
