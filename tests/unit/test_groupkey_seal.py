"""Issue 11, the key: a group key sealed from member to member (agent/groupkey.py).

Only the recipient opens a copy, only under the exact context it was sealed for (network,
group, version, group public key, sender, recipient), and never to a key other than the one
announced; any changed byte or field is refused whole.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import groupkey
from agent.groupkey import GroupKeyError, GroupKeyMismatchError, SealedKeyError, open_sealed, seal
from chalicelib import wgkeys
from chalicelib.domain.groupkey import SEALED_B64_LENGTH, SEALED_SIZE, SUITE, SealContext

A, B, C = wgkeys.new_key_pair(), wgkeys.new_key_pair(), wgkeys.new_key_pair()
GROUP = groupkey.new_group_key()
CONTEXT = SealContext("net_abcd1234", "edge", 3, GROUP.public_key, A.public_key, B.public_key)
SEALED = seal(GROUP.private_key, CONTEXT, A.private_key)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.text("0123456789abcdefghijklmnopqrstuvwxyz", min_size=4, max_size=40)


def _other_key() -> str:
    return wgkeys.new_key_pair().public_key


def test_the_recipient_opens_the_group_key_and_a_member_may_seal_to_itself() -> None:
    assert open_sealed(SEALED, CONTEXT, B.private_key) == GROUP.private_key
    own = dataclasses.replace(CONTEXT, recipient_public_key=A.public_key)
    assert open_sealed(seal(GROUP.private_key, own, A.private_key), own, A.private_key) == GROUP.private_key


@FAST
@given(network=ids, group=ids, version=st.integers(1, 2**63 - 1))
def test_round_trip_under_any_context_with_a_constant_size(network: str, group: str, version: int) -> None:
    context = SealContext("net_" + network, group, version, GROUP.public_key, A.public_key, B.public_key)
    sealed = seal(GROUP.private_key, context, A.private_key)
    assert len(sealed) == SEALED_B64_LENGTH and len(base64.b64decode(sealed)) == SEALED_SIZE
    assert base64.b64decode(sealed)[0] == SUITE
    assert open_sealed(sealed, context, B.private_key) == GROUP.private_key


def test_two_seals_of_the_same_key_differ() -> None:
    # A fresh ephemeral key each time: equal ciphertexts would show that two copies hold one key.
    assert seal(GROUP.private_key, CONTEXT, A.private_key) != seal(GROUP.private_key, CONTEXT, A.private_key)


@FAST
@given(index=st.integers(0, SEALED_SIZE - 1), mask=st.integers(1, 255))
def test_any_changed_byte_is_refused(index: int, mask: int) -> None:
    raw = bytearray(base64.b64decode(SEALED))
    raw[index] ^= mask
    with pytest.raises(SealedKeyError):
        open_sealed(base64.b64encode(bytes(raw)).decode(), CONTEXT, B.private_key)


@pytest.mark.parametrize(("field", "value"), [
    ("network_id", "net_other123"),
    ("group_id", "edge2"),
    ("version", 4),
    ("version", 2),
    ("group_public_key", wgkeys.new_key_pair().public_key),
    ("sender_public_key", C.public_key),
])
def test_a_copy_does_not_open_under_any_other_context_field(field: str, value: str | int) -> None:
    changed = SealContext(**{**dataclasses.asdict(CONTEXT), field: value})  # type: ignore[arg-type]
    assert changed != CONTEXT
    with pytest.raises(SealedKeyError, match="does not open"):
        open_sealed(SEALED, changed, B.private_key)


def test_another_member_cannot_open_a_copy_meant_for_someone_else() -> None:
    # C claims to be the recipient: the box is bound to B's key, so C's exchange gives another secret.
    as_c = dataclasses.replace(CONTEXT, recipient_public_key=C.public_key)
    with pytest.raises(SealedKeyError, match="does not open"):
        open_sealed(SEALED, as_c, C.private_key)
    # And C holding the context that names B is told the copy is not for its key.
    with pytest.raises(SealedKeyError, match="another WireGuard key"):
        open_sealed(SEALED, CONTEXT, C.private_key)


def test_a_copy_made_without_the_senders_private_key_does_not_open() -> None:
    # The control plane (or anyone) seals its own key with C's private key but names A as sender.
    rogue = groupkey.new_group_key()
    named_a = dataclasses.replace(CONTEXT, group_public_key=rogue.public_key)
    made_by_c = dataclasses.replace(named_a, sender_public_key=C.public_key)
    forged = seal(rogue.private_key, made_by_c, C.private_key)
    with pytest.raises(SealedKeyError):
        open_sealed(forged, named_a, B.private_key)


def test_an_old_versions_copy_is_refused_as_the_current_key() -> None:
    v1 = groupkey.new_group_key()
    old_context = dataclasses.replace(CONTEXT, version=1, group_public_key=v1.public_key)
    old = seal(v1.private_key, old_context, A.private_key)
    # Replayed as version 2, with the old public key or with the new one: refused either way.
    for public_key in (v1.public_key, GROUP.public_key):
        with pytest.raises(SealedKeyError):
            replayed = dataclasses.replace(old_context, version=2, group_public_key=public_key)
            open_sealed(old, replayed, B.private_key)
    # Swapped with an older key under the current version: refused too.
    with pytest.raises(SealedKeyError):
        open_sealed(old, CONTEXT, B.private_key)


def test_seal_refuses_a_key_that_is_not_the_announced_one_and_a_sender_key_that_does_not_match() -> None:
    with pytest.raises(GroupKeyMismatchError):
        seal(wgkeys.new_key_pair().private_key, CONTEXT, A.private_key)
    with pytest.raises(GroupKeyError, match="sender"):
        seal(GROUP.private_key, CONTEXT, C.private_key)


def test_open_refuses_a_valid_box_holding_a_key_other_than_the_announced_one() -> None:
    # A member that seals bypassing seal()'s own check: the opened key must still match.
    other = wgkeys.new_key_pair()
    ephemeral = groupkey.x25519.X25519PrivateKey.generate()
    ephemeral_public = groupkey._raw_public(ephemeral)
    recipient = groupkey._public(B.public_key, "b")
    sender = groupkey._private(A.private_key, "a")
    aad = CONTEXT.associated_data()
    ikm = groupkey._exchange(ephemeral, recipient) + groupkey._exchange(sender, recipient)
    aead, nonce = groupkey._aead(ikm, ephemeral_public, aad)
    box = bytes([SUITE]) + ephemeral_public + aead.encrypt(nonce, base64.b64decode(other.private_key), aad)
    with pytest.raises(GroupKeyMismatchError, match="announced"):
        open_sealed(base64.b64encode(box).decode(), CONTEXT, B.private_key)


@pytest.mark.parametrize("bad", ["", "not base64!", SEALED[:-4], SEALED + "AAAA", SEALED[:-1] + "-",
                                 base64.b64encode(bytes([2]) + base64.b64decode(SEALED)[1:]).decode()])
def test_malformed_copies_are_refused_with_a_clear_error(bad: str) -> None:
    with pytest.raises(SealedKeyError, match="sealed group key|suite"):
        open_sealed(bad, CONTEXT, B.private_key)


def test_a_low_order_recipient_key_is_refused() -> None:
    zero = base64.b64encode(bytes(32)).decode()
    with pytest.raises(SealedKeyError, match="low order"):
        seal(GROUP.private_key, dataclasses.replace(CONTEXT, recipient_public_key=zero), A.private_key)


def test_associated_data_is_unambiguous() -> None:
    # Moving a character from one field to the next must give other bytes (length prefixes).
    one = dataclasses.replace(CONTEXT, network_id="net_ab", group_id="cd")
    two = dataclasses.replace(CONTEXT, network_id="net_abc", group_id="d")
    assert one.associated_data() != two.associated_data()


@pytest.mark.parametrize("version", [0, -1, 2**63])
def test_a_version_out_of_range_is_refused_before_anything_is_sealed(version: int) -> None:
    with pytest.raises(GroupKeyError, match="out of range"):
        seal(GROUP.private_key, dataclasses.replace(CONTEXT, version=version), A.private_key)
