"""Validation of what people and agents send (chalicelib.domain.validate)."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain import validate
from chalicelib.errors import InvalidInputError


def _wg_pubkey(private: bytes) -> str:
    """What `wg pubkey` prints for a private key."""
    public = x25519.X25519PrivateKey.from_private_bytes(private).public_key()
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


# --- wireguard_key --------------------------------------------------------------------------


@given(st.binary(min_size=32, max_size=32))
def test_real_x25519_public_keys_are_accepted_unchanged(private: bytes) -> None:
    key = _wg_pubkey(private)
    assert validate.wireguard_key(key) == key


@given(st.binary(min_size=1, max_size=64).filter(lambda b: len(b) != 32))
def test_keys_of_the_wrong_length_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInputError, match="expected 44 characters of base64"):
        validate.wireguard_key(base64.b64encode(raw).decode())


@pytest.mark.parametrize("value", [
    "",
    "not a key",
    _wg_pubkey(bytes(range(32)))[:-1],                 # padding dropped: 43 characters
    _wg_pubkey(bytes(range(32))) + "\n",               # as pasted from a terminal
    " " + _wg_pubkey(bytes(range(32))),
    _wg_pubkey(bytes(range(32)))[:20] + "!" + _wg_pubkey(bytes(range(32)))[21:],
    base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # url-safe alphabet: '-' and '_'
    "é" * 44,
    base64.b64encode(bytes(33)).decode()[:44],
])
def test_non_base64_or_malformed_keys_are_refused(value: str) -> None:
    with pytest.raises(InvalidInputError, match="wg_public_key is not a WireGuard public key"):
        validate.wireguard_key(value)


def test_all_zero_key_is_refused_with_advice() -> None:
    with pytest.raises(InvalidInputError, match="all zeros.*wg genkey"):
        validate.wireguard_key("A" * 43 + "=")


def test_key_refusal_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match="^peer_key "):
        validate.wireguard_key("x", field="peer_key")


def test_non_canonical_base64_key_is_refused() -> None:
    key = _wg_pubkey(bytes(range(32)))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = key[:42] + alphabet[alphabet.index(key[42]) ^ 1] + "="
    assert base64.b64decode(twin) == base64.b64decode(key)
    with pytest.raises(InvalidInputError):
        validate.wireguard_key(twin)


# --- endpoint(s) ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "203.0.113.7:51820", "[2001:db8::7]:51820", "[::1]:1", "vpn.example.com:51820",
    "localhost:65535", "a-b.c-d.example:443", "host1:51820", "10.0.0.1:1",
])
def test_endpoint_forms_are_accepted(value: str) -> None:
    assert validate.endpoint(value) == value


@given(st.ip_addresses(v=4), st.integers(1, 65535))
def test_any_ipv4_with_a_valid_port_is_accepted(ip: object, port: int) -> None:
    assert validate.endpoint(f"{ip}:{port}") == f"{ip}:{port}"


@given(st.ip_addresses(v=6), st.integers(1, 65535))
def test_any_bracketed_ipv6_with_a_valid_port_is_accepted(ip: object, port: int) -> None:
    assert validate.endpoint(f"[{ip}]:{port}") == f"[{ip}]:{port}"


@pytest.mark.parametrize(("value", "message"), [
    ("203.0.113.7", "must be host:port"),
    ("vpn.example.com", "must be host:port"),
    ("203.0.113.7:", "must be host:port"),
    ("203.0.113.7:http", "must be host:port"),
    ("[2001:db8::7]", "must be host:port"),
    ("2001:db8::7", "write IPv6 addresses in brackets"),
    ("2001:db8::7:51820", "write IPv6 addresses in brackets"),
    ("[not-ipv6]:51820", "is not an IPv6 address"),
    ("[203.0.113.7]:51820", "is not an IPv6 address"),
    ("bad_host:51820", "is not an IP address or DNS name"),
    ("-vpn.example.com:51820", "is not an IP address or DNS name"),
    ("vpn..example.com:51820", "is not an IP address or DNS name"),
    ("203.0.113:51820", "is not an IP address or DNS name"),
    ("203.0.113.256:51820", "is not an IP address or DNS name"),
    (":51820", "is not an IP address or DNS name"),
    ("a" * 64 + ".example:51820", "is not an IP address or DNS name"),
])
def test_malformed_endpoints_are_refused_with_a_reason(value: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        validate.endpoint(value)


@given(st.one_of(st.integers(max_value=0), st.integers(min_value=65536, max_value=10**6)))
def test_ports_out_of_range_are_refused(port: int) -> None:
    for value in (f"203.0.113.7:{port}", f"[2001:db8::7]:{port}", f"vpn.example.com:{port}"):
        with pytest.raises(InvalidInputError):
            validate.endpoint(value)


def test_port_refusal_says_the_range() -> None:
    with pytest.raises(InvalidInputError, match="use 1-65535"):
        validate.endpoint("203.0.113.7:65536")
    with pytest.raises(InvalidInputError, match="listen_port 0 is out of range"):
        validate.port(0, "listen_port")
    assert validate.port(51820, "listen_port") == 51820


@pytest.mark.parametrize("value", [
    "203.0.113.7:\u00b2",
    "203.0.113.7:\u0665\u0661\u0668\u0662\u0660",
])
def test_ports_must_be_ascii_digits(value: str) -> None:
    with pytest.raises(InvalidInputError):
        validate.endpoint(value)


def test_endpoints_are_deduplicated_in_order_and_bounded() -> None:
    assert validate.endpoints(["10.0.0.1:1", "[::1]:2", "10.0.0.1:1"]) == ("10.0.0.1:1", "[::1]:2")
    assert validate.endpoints([]) == ()
    with pytest.raises(InvalidInputError, match="at most 8 endpoints"):
        validate.endpoints([f"10.0.0.{i}:1" for i in range(1, 10)])
    with pytest.raises(InvalidInputError, match="must be host:port"):
        validate.endpoints(["10.0.0.1:1", "nope"])


def test_format_endpoint_brackets_ipv6_only() -> None:
    assert validate.format_endpoint("203.0.113.7", 51820) == "203.0.113.7:51820"
    assert validate.format_endpoint("2001:0db8::0007", 51820) == "[2001:db8::7]:51820"
    assert validate.endpoint(validate.format_endpoint("2001:db8::7", 1)) == "[2001:db8::7]:1"


# --- names and tags ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "web-1", "db_2.prod", "9lives", "A" * 63])
def test_valid_names_are_accepted(value: str) -> None:
    assert validate.name(value) == value


@pytest.mark.parametrize("value", ["", "-web", ".hidden", "_x", "web 1", "web/1", "wéb", "a" * 64, "web\t"])
def test_invalid_names_are_refused_with_the_rule(value: str) -> None:
    with pytest.raises(InvalidInputError, match="use 1-63 letters, digits"):
        validate.name(value)


def test_name_refusal_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match="^network name ' x' is not valid"):
        validate.name(" x", field="network name")


@pytest.mark.parametrize("check", [
    lambda: validate.name("web\n"),
    lambda: validate.tags(["env\n"]),
    lambda: validate.endpoint("vpn.example.com\n:51820"),
], ids=["name", "tag", "endpoint-host"])
def test_trailing_newline_is_refused(check: Callable[[], object]) -> None:
    with pytest.raises(InvalidInputError):
        check()


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True).filter(lambda s: "\n" not in s))
def test_every_name_matching_the_rule_is_accepted(value: str) -> None:
    assert validate.name(value) == value


def test_tags_are_deduplicated_in_order() -> None:
    tags = ["env:prod", "team/net", "env:prod", "a.b_c-d"]
    assert validate.tags(tags) == ("env:prod", "team/net", "a.b_c-d")
    assert validate.tags([]) == ()


@pytest.mark.parametrize("value", ["", ":env", "env prod", "x" * 64, "ünï"])
def test_invalid_tags_are_refused(value: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(f"tag {value!r} is not valid")):
        validate.tags(["ok", value])


def test_at_most_32_tags() -> None:
    assert len(validate.tags([f"t{i}" for i in range(32)])) == 32
    with pytest.raises(InvalidInputError, match="at most 32 tags"):
        validate.tags([f"t{i}" for i in range(33)])
