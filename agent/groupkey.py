"""A gateway group's shared WireGuard key, made on a member and sealed from member to member.

The control plane relays only what :func:`seal` returns, so neither its table, its logs nor
an attacker who reads them learns the group's private key (docs/ha-groups.md). A sealed copy
is an authenticated, HPKE-like box (RFC 9180's Auth mode in spirit, not its wire format):

- ``ikm = X25519(ephemeral, recipient) || X25519(sender, recipient)``: only the recipient can
  open it, and only a holder of the sender's WireGuard private key can have made it, so the
  control plane cannot slip its own key into a group;
- ``HKDF-SHA256(ikm, info = label || ephemeral public key || associated data)`` gives the
  ChaCha20-Poly1305 key and nonce (the ephemeral key is fresh each time, so a fixed derived
  nonce is never reused);
- the associated data (:func:`chalicelib.domain.groupkey.associated_data`) binds the network,
  the group, the key version, the group's public key and both members' public keys, so a copy
  cannot be replayed to another group, recipient or version, nor paired with an older key.

Every copy is :data:`~chalicelib.domain.groupkey.SEALED_SIZE` bytes. Opening either returns the
private key whose public half is the one announced, or raises; never a partial result.
"""

from __future__ import annotations

import base64
import binascii
import logging

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chalicelib import wgkeys
from chalicelib.domain.errors import InvalidInputError
from chalicelib.domain.groupkey import KEY_SIZE, SUITE, GroupKeyRecord, SealContext, sealed_bytes
from chalicelib.domain.ids import HostId

__all__ = ["GroupKeyError", "SealedKeyError", "GroupKeyMismatchError", "new_group_key", "seal",
           "open_sealed", "open_entry"]

log = logging.getLogger("skymesh.agent")

_INFO_LABEL = b"skymesh/gateway-group-key/v1/seal"
_NONCE_SIZE = 12


class GroupKeyError(Exception):
    """A group key could not be sealed or opened; the message says which check failed."""


class SealedKeyError(GroupKeyError):
    """A sealed copy does not open: changed, meant for another member, or for another context."""


class GroupKeyMismatchError(GroupKeyError):
    """A copy opened, but its key is not the group key the control plane announced."""


def new_group_key() -> wgkeys.KeyPair:
    """A fresh group key pair (made on a member; its ``repr`` shows only the public key)."""
    return wgkeys.new_key_pair()


def _key_bytes(value: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_SIZE:
        raise GroupKeyError(f"{what} is not a WireGuard key (32 bytes of base64)")
    return raw


def _private(value: str, what: str) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(_key_bytes(value, what))


def _public(value: str, what: str) -> x25519.X25519PublicKey:
    return x25519.X25519PublicKey.from_public_bytes(_key_bytes(value, what))


def _raw_public(key: x25519.X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _exchange(mine: x25519.X25519PrivateKey, theirs: x25519.X25519PublicKey) -> bytes:
    try:
        return mine.exchange(theirs)
    except ValueError:  # a low-order point: the shared secret would be all zeros
        raise SealedKeyError("a public key in the sealed copy's context is not usable (low order)") from None


def _associated_data(context: SealContext) -> bytes:
    try:
        return context.associated_data()
    except InvalidInputError as error:
        raise GroupKeyError(error.message) from None


def _aead(ikm: bytes, ephemeral_public: bytes, aad: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE + _NONCE_SIZE, salt=None,
               info=_INFO_LABEL + ephemeral_public + aad).derive(ikm)
    return ChaCha20Poly1305(okm[:KEY_SIZE]), okm[KEY_SIZE:]


def seal(group_private_key: str, context: SealContext, sender_private_key: str) -> str:
    """The group's private key sealed to ``context.recipient_public_key``, bound to ``context``
    (base64 of :data:`~chalicelib.domain.groupkey.SEALED_SIZE` bytes).

    Refuses a group key whose public half is not ``context.group_public_key``, and a sender key
    whose public half is not ``context.sender_public_key``: what is sealed is what is announced.
    """
    group = _private(group_private_key, "the group's private key")
    sender = _private(sender_private_key, "the sender's private key")
    if base64.b64encode(_raw_public(group)).decode() != context.group_public_key:
        raise GroupKeyMismatchError(f"the key to seal is not group {context.group_id}'s announced key "
                                    f"{context.group_public_key}")
    if base64.b64encode(_raw_public(sender)).decode() != context.sender_public_key:
        raise GroupKeyError("the sender's private key does not match the context's sender public key")
    recipient = _public(context.recipient_public_key, "the recipient's public key")
    ephemeral = x25519.X25519PrivateKey.generate()
    ephemeral_public = _raw_public(ephemeral)
    aad = _associated_data(context)
    aead, nonce = _aead(_exchange(ephemeral, recipient) + _exchange(sender, recipient), ephemeral_public, aad)
    plaintext = group.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    sealed = bytes([SUITE]) + ephemeral_public + aead.encrypt(nonce, plaintext, aad)
    log.debug("sealed group %s key version %d to %s", context.group_id, context.version,
              context.recipient_public_key)
    return base64.b64encode(sealed).decode()


def open_sealed(ciphertext: str, context: SealContext, recipient_private_key: str) -> str:
    """The group's private key (base64) from a copy sealed to us under exactly ``context``.

    Raises :class:`SealedKeyError` if the copy is malformed, changed in any byte, sealed to
    another key, by another sender or under any other context field; and
    :class:`GroupKeyMismatchError` if it opens to a key whose public half is not
    ``context.group_public_key``.
    """
    try:
        raw = sealed_bytes(ciphertext)
    except InvalidInputError as error:
        raise SealedKeyError(error.message) from None
    recipient = _private(recipient_private_key, "our private key")
    if base64.b64encode(_raw_public(recipient)).decode() != context.recipient_public_key:
        raise SealedKeyError("this copy was sealed to another WireGuard key than ours; a member holding "
                             "the group key must seal it again to our current key")
    ephemeral_public = raw[1:1 + KEY_SIZE]
    sender = _public(context.sender_public_key, "the sender's public key")
    ephemeral = x25519.X25519PublicKey.from_public_bytes(ephemeral_public)
    aad = _associated_data(context)
    aead, nonce = _aead(_exchange(recipient, ephemeral) + _exchange(recipient, sender), ephemeral_public, aad)
    try:
        plaintext = aead.decrypt(nonce, raw[1 + KEY_SIZE:], aad)
    except InvalidTag:
        raise SealedKeyError(
            f"the sealed copy of group {context.group_id}'s key version {context.version} does not open: "
            "it was changed, or sealed by another sender or for another group, member or version") from None
    private_key = base64.b64encode(plaintext).decode()
    if wgkeys.public_key_of(private_key) != context.group_public_key:
        raise GroupKeyMismatchError(f"the sealed copy holds a key other than group {context.group_id}'s "
                                    f"announced public key {context.group_public_key}")
    log.debug("opened group %s key version %d from %s", context.group_id, context.version,
              context.sender_public_key)
    return private_key


def open_entry(record: GroupKeyRecord, host: HostId, recipient_private_key: str) -> str:
    """``host``'s copy of the record's current key, opened (the agent's one call on a new record)."""
    entry = record.entry_for(host)
    if entry is None:
        raise SealedKeyError(f"group {record.group_id} has no copy of key version {record.version} "
                             f"for {host} "
                             "yet; a member holding the key will seal one")
    return open_sealed(entry.ciphertext, record.context_for(entry), recipient_private_key)
