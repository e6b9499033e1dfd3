"""Typed ids and the bearer tokens shown once to users (chalicelib.domain.ids)."""

from __future__ import annotations

import hashlib
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain import ids
from chalicelib.domain.ids import Token, hash_secret, is_id, new_id, new_token, parse_token, secret_matches

OS = random.SystemRandom()  # what the service passes in
TOKEN_KIND_OF_RECORD = {"enrollment": "enrollment_key", "host": "host", "admin": "admin_key"}
URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# --- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "prefix"), [("network", "net_"), ("host", "host_"),
                                              ("enrollment_key", "key_"), ("admin_key", "adm_")])
def test_new_ids_are_prefixed_by_kind_and_recognised(kind: str, prefix: str) -> None:
    value = new_id(kind, OS)
    assert re.fullmatch(re.escape(prefix) + r"[0-9a-z]{12}", value)
    assert is_id(kind, value)
    assert not any(is_id(other, value) for other in ids.ID_PREFIXES if other != kind)


@given(st.sampled_from(sorted(ids.ID_PREFIXES)), st.integers(4, 40), st.randoms(use_true_random=False))
def test_ids_of_any_supported_length_are_recognised(kind: str, length: int, rng: random.Random) -> None:
    value = new_id(kind, rng=rng, length=length)
    assert len(value) == len(ids.ID_PREFIXES[kind]) + 1 + length
    assert is_id(kind, value)


def test_new_ids_do_not_repeat() -> None:
    assert len({new_id("host", OS) for _ in range(2000)}) == 2000


@pytest.mark.parametrize("value", [
    "", "net_", "net_abc", "net_" + "a" * 41, "net_ABCDEFGH", "net_abcd-efg", "net_abcd_efgh",
    "host_abcdefgh", "netabcdefgh", "NET_abcdefgh", " net_abcdefgh", "net_abcdefgh ", "net_abcdéfgh",
])
def test_strings_that_are_not_network_ids(value: str) -> None:
    assert not is_id("network", value)


def test_network_id_bounds() -> None:
    assert is_id("network", "net_abcd")
    assert is_id("network", "net_" + "z" * 40)


# --- tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ids.TOKEN_KINDS))
def test_new_token_round_trips_through_its_string(kind: str) -> None:
    token = new_token(kind, new_id(TOKEN_KIND_OF_RECORD[kind], OS), OS)
    text = str(token)
    assert text.startswith(f"skm_{ids.TOKEN_KINDS[kind]}_")
    assert parse_token(text) == token
    assert len(token.secret) >= 43  # 256 bits


@given(st.sampled_from(sorted(ids.TOKEN_KINDS)), st.randoms(use_true_random=False),
       st.text(alphabet=URLSAFE, min_size=1, max_size=60))
def test_tokens_whose_secret_contains_underscores_round_trip(
        kind: str, rng: random.Random, secret: str) -> None:
    # token_urlsafe secrets may contain '_' anywhere, including first and last.
    token = Token(kind, new_id(TOKEN_KIND_OF_RECORD[kind], rng=rng), secret)
    assert parse_token(str(token)) == token


def test_new_tokens_have_fresh_secrets() -> None:
    assert len({new_token("host", "host_abcdefghijkl", OS).secret for _ in range(200)}) == 200


@pytest.mark.parametrize("raw", [
    "",
    "skm_",
    "skm_ek_key_abcdefghijkl",              # no secret
    "skm_ek_key_abcdefghijkl_",             # empty secret
    "skm_xx_key_abcdefghijkl_secret",       # unknown kind
    "skm_EK_key_abcdefghijkl_secret",
    "SKM_ek_key_abcdefghijkl_secret",
    "Bearer skm_ek_key_abcdefghijkl_secret",
    " skm_ek_key_abcdefghijkl_secret",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "sk-abcdefghijklmnopqrstuvwxyz",
    "skm_ek_key_abcdefghijkl_" + "s" * 200,  # longer than any token issued
])
def test_foreign_or_truncated_strings_are_not_tokens(raw: str) -> None:
    assert parse_token(raw) is None


@given(st.text(max_size=80).filter(lambda s: not s.startswith("skm_")))
def test_strings_without_the_prefix_are_never_tokens(raw: str) -> None:
    assert parse_token(raw) is None


def test_tampered_token_does_not_match_the_stored_hash() -> None:
    token = new_token("enrollment", "key_abcdefghijkl", OS)
    stored = token.secret_hash
    text = str(token)
    flipped = text[:-1] + ("A" if text[-1] != "A" else "B")
    tampered = parse_token(flipped)
    assert tampered is not None and tampered.record_id == token.record_id
    assert not secret_matches(tampered.secret, stored)
    assert secret_matches(parse_token(text).secret, stored)  # type: ignore[union-attr]
    # Swapping the kind marker names another kind of record (looked up elsewhere), or nothing.
    assert parse_token(text.replace("skm_ek_", "skm_ak_", 1)).kind == "admin"  # type: ignore[union-attr]
    assert parse_token(text.replace("skm_ek_", "skm_zz_", 1)) is None


# --- secrets --------------------------------------------------------------------------------


@given(st.text(), st.text())
def test_secret_matches_only_its_own_hash(secret: str, other: str) -> None:
    stored = hash_secret(secret)
    assert secret_matches(secret, stored)
    assert secret_matches(other, stored) == (other == secret)


def test_stored_hash_is_sha256_hex_and_never_the_secret() -> None:
    token = new_token("admin", "adm_abcdefghijkl", OS)
    assert token.secret_hash == hashlib.sha256(token.secret.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", token.secret_hash)
    assert token.secret not in token.secret_hash
