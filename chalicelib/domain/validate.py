"""Validation of values people and agents send: names, WireGuard keys, endpoints, ports.

Each function returns the normalised value or raises
:class:`~chalicelib.domain.errors.InvalidInputError` with a message that says what to fix.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from typing import Any

from .errors import InvalidInputError

# The rules below are the one source for both these checks and the OpenAPI document
# (chalicelib/api/schemas.py puts them into the request models' JSON Schema).
NAME_MAX = 63
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
TAG_MAX, MAX_TAGS = 63, 32
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:._/-]{0,62}$"
# 32 bytes in canonical base64: 42 free characters, one whose low 2 bits are zero, and "=".
WIREGUARD_KEY_PATTERN = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"
PORT_MIN, PORT_MAX = 1, 65535
KEEPALIVE_MAX = 3600
MTU_MIN, MTU_MAX = 1280, 9000  # 1280: IPv6's minimum MTU
MAX_ENDPOINTS = 8
# The shape of an endpoint: [IPv6]:port, or an IPv4 address or DNS name and :port.
# `endpoint` also checks the address, the name's labels and the port's range.
ENDPOINT_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"
ENDPOINT_MAX = 253 + 1 + 5  # the longest DNS name, ":" and a port
# Request bodies are flat (an object of scalars and lists of strings); anything nested
# deeper is not ours, and refusing it before parsing keeps the parser's recursion bounded.
MAX_JSON_DEPTH = 32

_NAME = re.compile(NAME_PATTERN)
_TAG = re.compile(TAG_PATTERN)
_ENDPOINT = re.compile(ENDPOINT_PATTERN)
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def quoted(value: str, limit: int = 64) -> str:
    """``value`` quoted for a message, cut short so that a huge input gives a short message."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"


def json_document(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON text nested at most ``max_depth`` arrays/objects deep.

    The depth is counted on the raw text (strings skipped) before the recursive parser
    sees it, so tens of thousands of ``[`` cost one linear scan and a 400, not a
    ``RecursionError``.

    >>> json_document(b'{"a": [1, "]]"]}')
    {'a': [1, ']]']}
    """
    depth = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", raw)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        if depth > max_depth:
            raise InvalidInputError(f"body is nested deeper than {max_depth} levels; "
                                    "send a flat JSON object as the API documents")
    try:
        return json.loads(raw)
    except RecursionError:  # only if max_depth were set above the interpreter's limit
        raise InvalidInputError("body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"body is not valid JSON: {e}") from None


def name(value: str, field: str = "name") -> str:
    """1–63 characters: letters, digits, ``.``, ``_``, ``-``; starts with a letter or digit."""
    if not _NAME.fullmatch(value):
        raise InvalidInputError(
            f"{field} {quoted(value)} is not valid: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return value


def tags(values: list[str]) -> tuple[str, ...]:
    for t in values:
        if not _TAG.fullmatch(t):
            raise InvalidInputError(f"tag {quoted(t)} is not valid: use 1-63 letters, digits, ':', '.', "
                                    "'_', '/' or '-'")
    if len(values) > MAX_TAGS:
        raise InvalidInputError(f"at most {MAX_TAGS} tags")
    return tuple(dict.fromkeys(values))


def wireguard_key(value: str, field: str = "wg_public_key") -> str:
    """A WireGuard key: 32 bytes in standard base64 (44 characters ending in ``=``)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    # Only the canonical spelling: `wg` refuses keys whose unused low bits are set.
    if len(raw) != 32 or base64.b64encode(raw).decode() != value:
        raise InvalidInputError(
            f"{field} is not a WireGuard public key: expected 44 characters of base64 "
            "(32 bytes), as printed by `wg pubkey`")
    if raw == bytes(32):
        raise InvalidInputError(f"{field} is all zeros; generate a real key with `wg genkey`")
    return value


def port(value: int, field: str) -> int:
    if not PORT_MIN <= value <= PORT_MAX:
        raise InvalidInputError(f"{field} {value} is out of range: use {PORT_MIN}-{PORT_MAX}")
    return value


def keepalive(value: int) -> int:
    """Persistent keepalive in seconds; 0 turns it off."""
    if not 0 <= value <= KEEPALIVE_MAX:
        raise InvalidInputError(f"keepalive {value} is out of range: use 0 (off) to {KEEPALIVE_MAX} seconds")
    return value


def mtu(value: int) -> int:
    if not MTU_MIN <= value <= MTU_MAX:
        raise InvalidInputError(f"mtu {value} is out of range: use {MTU_MIN}-{MTU_MAX} "
                                f"({MTU_MIN} is IPv6's minimum)")
    return value


def endpoint(value: str, field: str = "endpoints") -> str:
    """``host:port``: an IPv4 address, ``[IPv6]`` or a DNS name, and a port."""
    host, sep, port_text = value.rpartition(":")
    shown = quoted(value)
    if not sep or not (port_text.isascii() and port_text.isdigit()):
        raise InvalidInputError(f"{field} entry {shown} must be host:port, e.g. "
                                "203.0.113.7:51820 or [2001:db8::7]:51820")
    # int() of thousands of digits is slow, and refused past Python's digit limit.
    if len(port_text) > len(str(PORT_MAX)):
        raise InvalidInputError(f"{field} entry {shown} port is out of range: use {PORT_MIN}-{PORT_MAX}")
    port(int(port_text), f"{field} entry {shown} port")
    bracketed = host.startswith("[") and host.endswith("]")
    if ":" in host and not bracketed:
        raise InvalidInputError(f"{field} entry {shown}: write IPv6 addresses in brackets, "
                                "e.g. [2001:db8::7]:51820")
    shaped = _ENDPOINT.fullmatch(value) is not None
    if bracketed:
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            shaped = False
        if not shaped:  # a zone index (%eth0) names an interface of this host only
            raise InvalidInputError(f"{field} entry {shown}: {quoted(host)} is not an IPv6 address "
                                    "(without a zone index)")
        return value
    if not shaped:
        raise InvalidInputError(f"{field} entry {shown}: {quoted(host)} is not an IP address or DNS name")
    try:
        ipaddress.IPv4Address(host)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
        raise InvalidInputError(f"{field} entry {shown}: {quoted(host)} is not an IP address or DNS name")
    return value


def endpoints(values: list[str]) -> tuple[str, ...]:
    if len(values) > MAX_ENDPOINTS:
        raise InvalidInputError(f"at most {MAX_ENDPOINTS} endpoints")
    return tuple(dict.fromkeys(endpoint(v) for v in values))


def format_endpoint(ip: str, listen_port: int) -> str:
    addr = ipaddress.ip_address(ip)
    return f"[{addr}]:{listen_port}" if addr.version == 6 else f"{addr}:{listen_port}"


# ------------------------------------------------------------------ routed prefixes (gateways' egress)
# The written form of a routed prefix for the OpenAPI document; `prefix` checks the rest.
PREFIX_PATTERN = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:.]+)/[0-9]{1,3}$"
PREFIX_MAX = 43  # the longest IPv6 address and "/128"


def prefix(value: str, field: str) -> str:
    """A range routed through the overlay (a LAN behind a gateway), IPv4 or IPv6, in its
    canonical form; host bits set, a default route, multicast, loopback, link-local or
    unspecified ranges are refused with a message that says what to send instead.

    >>> prefix("10.1.0.0/16", "egress")
    '10.1.0.0/16'
    >>> prefix("FD12:0::/48", "egress")
    'fd12::/48'
    """
    shown = quoted(value)
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        hint = "a CIDR range such as 192.168.10.0/24 or fd12:3456::/48"
        if "host bits set" in str(e):
            hint = f"its network is {ipaddress.ip_network(value, strict=False)}; send that"
        raise InvalidInputError(f"{field} entry {shown} is not a network range: {hint}") from None
    if "/" not in value:
        raise InvalidInputError(f"{field} entry {shown} needs a prefix length, e.g. {net}")
    if net.prefixlen == 0:
        raise InvalidInputError(f"{field} entry {shown} is a default route: for all traffic use an "
                                "internet gateway (internet: true) instead")
    if net.is_multicast or net.is_loopback or net.is_link_local or net.is_unspecified:
        raise InvalidInputError(f"{field} entry {shown} is a multicast, loopback, link-local or "
                                "unspecified range and cannot be routed through the overlay")
    return str(net)


def prefixes(values: list[str], field: str, limit: int) -> tuple[str, ...]:
    """Each of ``values`` as :func:`prefix` makes it, duplicates dropped, at most ``limit`` of them."""
    if len(values) > limit:
        raise InvalidInputError(f"{field}: at most {limit} ranges")
    return tuple(dict.fromkeys(prefix(v, field) for v in values))
