"""Validation of values people and agents send: names, WireGuard keys, endpoints, ports.

Each function returns the normalised value or raises
:class:`~chalicelib.errors.InvalidInputError` with a message that says what to fix.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

from ..errors import InvalidInputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._/-]{0,62}$")
MAX_ENDPOINTS = 8


def name(value: str, field: str = "name") -> str:
    """1–63 characters: letters, digits, ``.``, ``_``, ``-``; starts with a letter or digit."""
    if not _NAME.fullmatch(value):
        raise InvalidInputError(
            f"{field} {value!r} is not valid: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return value


def tags(values: list[str]) -> tuple[str, ...]:
    for t in values:
        if not _TAG.fullmatch(t):
            raise InvalidInputError(f"tag {t!r} is not valid: use 1-63 letters, digits, ':', '.', "
                                    "'_', '/' or '-'")
    if len(values) > 32:
        raise InvalidInputError("at most 32 tags")
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
    if not 1 <= value <= 65535:
        raise InvalidInputError(f"{field} {value} is out of range: use 1-65535")
    return value


def endpoint(value: str, field: str = "endpoints") -> str:
    """``host:port``: an IPv4 address, ``[IPv6]`` or a DNS name, and a port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()):
        raise InvalidInputError(f"{field} entry {value!r} must be host:port, e.g. "
                                "203.0.113.7:51820 or [2001:db8::7]:51820")
    port(int(port_text), f"{field} entry {value!r} port")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise InvalidInputError(f"{field} entry {value!r}: {host} is not an IPv6 address") from None
        return value
    try:
        ipaddress.IPv4Address(host)
        return value
    except ValueError:
        pass
    if ":" in host:
        raise InvalidInputError(f"{field} entry {value!r}: write IPv6 addresses in brackets, "
                                "e.g. [2001:db8::7]:51820")
    if not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
        raise InvalidInputError(f"{field} entry {value!r}: {host!r} is not an IP address or DNS name")
    return value


def endpoints(values: list[str]) -> tuple[str, ...]:
    if len(values) > MAX_ENDPOINTS:
        raise InvalidInputError(f"at most {MAX_ENDPOINTS} endpoints")
    return tuple(dict.fromkeys(endpoint(v) for v in values))


def format_endpoint(ip: str, listen_port: int) -> str:
    addr = ipaddress.ip_address(ip)
    return f"[{addr}]:{listen_port}" if addr.version == 6 else f"{addr}:{listen_port}"
