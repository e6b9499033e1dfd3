"""The OpenAPI document carries the rules the server enforces, from the domain's own constants."""

from __future__ import annotations

import base64
import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.api.openapi import document
from chalicelib.domain import ipam, validate
from chalicelib.domain.ids import id_pattern, is_id
from chalicelib.errors import InvalidInputError

# No deadline: each example is microseconds, but the shared build machine can stall any one of them.
_unhurried = settings(deadline=None)


def _props(model: str) -> dict:
    schema = document()["components"]["schemas"][model]
    out = {}
    for name, prop in schema["properties"].items():
        # `X | None` is anyOf [X, null]; the rule is on X.
        out[name] = next((p for p in prop.get("anyOf", []) if p.get("type") != "null"), prop)
    return out


def test_request_bodies_carry_patterns_lengths_and_ranges():
    net = _props("NetworkCreate")
    assert net["name"]["pattern"] == validate.NAME_PATTERN and net["name"]["maxLength"] == 63
    assert net["ipv4_cidr"]["pattern"] == ipam.IPV4_CIDR_PATTERN
    assert net["ipv6_cidr"]["pattern"] == ipam.IPV6_CIDR_PATTERN
    assert (net["listen_port"]["minimum"], net["listen_port"]["maximum"]) == (1, 65535)
    assert (net["keepalive"]["minimum"], net["keepalive"]["maximum"]) == (0, 3600)
    assert (net["mtu"]["minimum"], net["mtu"]["maximum"]) == (1280, 9000)
    assert _props("NetworkPatch")["mtu"] == net["mtu"]

    key = _props("EnrollmentKeyCreate")
    assert key["networks"]["items"]["pattern"] == id_pattern("network") == "^net_[0-9a-z]{4,40}$"
    assert (key["uses"]["minimum"], key["uses"]["maximum"]) == (1, 1_000_000)
    assert key["tags"]["items"]["pattern"] == validate.TAG_PATTERN and key["tags"]["maxItems"] == 32
    expiry = document()["components"]["schemas"]["EnrollmentKeyCreate"]["properties"]["expires_at"]
    assert {"string", "integer", "null"} == {p.get("type") for p in expiry["anyOf"]}

    for model in ("HostRegister", "HostPatch"):
        host = _props(model)
        assert host["wg_public_key"]["pattern"] == validate.WIREGUARD_KEY_PATTERN
        assert host["endpoints"]["items"]["pattern"] == validate.ENDPOINT_PATTERN
        assert host["endpoints"]["items"]["maxLength"] == validate.ENDPOINT_MAX
        assert host["endpoints"]["maxItems"] == 8
        assert (host["listen_port"]["minimum"], host["listen_port"]["maximum"]) == (1, 65535)
    assert _props("HostPatch")["tags"]["items"]["pattern"] == validate.TAG_PATTERN


def test_path_ids_carry_their_shape():
    shapes = {}
    for ops in document()["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    shapes[p["name"]] = p["schema"]["pattern"]
    assert shapes == {"network_id": id_pattern("network"), "key_id": id_pattern("enrollment_key"),
                      "host_id": id_pattern("host"), "client_id": id_pattern("client"),
                      "relay_host_id": id_pattern("host"), "group_id": id_pattern("group")}


def test_every_pattern_is_a_regex_both_python_and_json_schema_read_alike():
    # JSON Schema patterns are ECMA-262: keep to the common subset (no lookbehind, no \Z, no (?P).
    doc = repr(document())
    for pattern in re.findall(r"'pattern': '((?:[^'\\]|\\.)*)'", doc):
        pattern = pattern.encode().decode("unicode_escape")
        re.compile(pattern)
        assert pattern.startswith("^") and pattern.endswith("$"), pattern
        assert not re.search(r"\(\?[P<=!]|\\[AZz]", pattern), pattern


@_unhurried
@given(st.from_regex(validate.NAME_PATTERN, fullmatch=True))
def test_names_the_document_allows_are_accepted(name):
    assert validate.name(name) == name


@_unhurried
@given(st.from_regex(validate.TAG_PATTERN, fullmatch=True))
def test_tags_the_document_allows_are_accepted(tag):
    assert validate.tags([tag]) == (tag,)


@_unhurried
@given(st.binary(min_size=32, max_size=32).filter(any))
def test_every_wireguard_key_matches_the_documented_pattern(raw):
    key = base64.b64encode(raw).decode()
    assert re.fullmatch(validate.WIREGUARD_KEY_PATTERN, key)
    assert validate.wireguard_key(key) == key


@_unhurried
@given(st.from_regex(validate.WIREGUARD_KEY_PATTERN, fullmatch=True))
def test_keys_of_the_documented_shape_are_keys(key):
    if base64.b64decode(key) == bytes(32):
        with pytest.raises(InvalidInputError, match="all zeros"):
            validate.wireguard_key(key)
    else:
        assert validate.wireguard_key(key) == key


_hostnames = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,10}){0,3}", fullmatch=True).filter(
    lambda h: not h.replace(".", "").isdigit())


@_unhurried
@given(st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]"), _hostnames),
       st.integers(1, 65535))
def test_every_endpoint_accepted_has_the_documented_shape(host, port):
    endpoint = f"{host}:{port}"
    assert validate.endpoint(endpoint) == endpoint
    assert re.fullmatch(validate.ENDPOINT_PATTERN, endpoint)
    assert len(endpoint) <= validate.ENDPOINT_MAX


@_unhurried
@given(st.from_regex(validate.ENDPOINT_PATTERN, fullmatch=True))
def test_endpoints_of_the_documented_shape_are_accepted_or_refused_with_a_reason(endpoint):
    try:
        validate.endpoint(endpoint)
    except InvalidInputError as e:
        assert endpoint[:20] in e.message


def test_an_endpoint_with_a_zone_index_is_refused():
    # fe80::1%eth0 names an interface of one host; on its peers it means nothing.
    with pytest.raises(InvalidInputError, match="not an IPv6 address"):
        validate.endpoint("[fe80::1%eth0]:51820")


@_unhurried
@given(st.from_regex(ipam.IPV4_CIDR_PATTERN, fullmatch=True))
def test_ipv4_ranges_of_the_documented_shape_parse_or_say_why(cidr):
    try:
        assert ipam.parse_ipv4_range(cidr) == ipaddress.ip_network(cidr)
    except InvalidInputError as e:
        assert "ipv4_cidr" in e.message


@_unhurried
@given(st.text(max_size=60))
def test_is_id_agrees_with_the_documented_pattern(value):
    assert is_id("host", value) == bool(re.fullmatch(id_pattern("host"), value))
