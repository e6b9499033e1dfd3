"""Overlay address planning: validating network ranges and choosing free addresses.

Allocation is random rather than first-free: many hosts enrolling at the same
moment then rarely race for the same address, and the storage layer's
conditional write settles the rare collision (the caller picks again).

>>> import random
>>> allocate("100.64.0.0/30", used={"100.64.0.1"}, rng=random.Random(1))
'100.64.0.2'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from .errors import ConflictError, InvalidInputError

if TYPE_CHECKING:
    import random  # only the type: the caller brings the randomness

__all__ = [
    "IPV4_MAX_PREFIX",
    "IPV6_MAX_PREFIX",
    "parse_ipv4_range",
    "parse_ipv6_range",
    "random_ula_64",
    "first_overlap",
    "allocate",
    "usable_count",
    "AddressExhaustedError",
]

IPV4_MIN_PREFIX = 8
IPV4_MAX_PREFIX = 29  # 6 usable addresses: smaller ranges are not a mesh
IPV6_MIN_PREFIX = 32
IPV6_MAX_PREFIX = 120
# The written form of a range as the OpenAPI document gives it; parse_ipv4_range and
# parse_ipv6_range check the address, the prefix length and what the range may be.
IPV4_CIDR_PATTERN = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$"
IPV6_CIDR_PATTERN = r"^[0-9A-Fa-f:.]+/[0-9]{1,3}$"

AnyNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressExhaustedError(ConflictError):
    code = "addresses_exhausted"


def _parse(cidr: object, version: int, field: str) -> AnyNetwork:
    if not isinstance(cidr, str) or not cidr:
        raise InvalidInputError(f"{field} must be a CIDR string such as "
                                f"{'100.64.0.0/16' if version == 4 else 'fd00:1234::/64'}")
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as e:
        hint = ""
        if "host bits set" in str(e):
            loose = ipaddress.ip_network(cidr.strip(), strict=False)
            hint = f"; did you mean {loose}?"
        raise InvalidInputError(f"{field} {cidr!r} is not a valid network range{hint}") from None
    if net.version != version:
        raise InvalidInputError(f"{field} {cidr!r} is an IPv{net.version} range; "
                                f"expected IPv{version}")
    if net.is_multicast or net.is_loopback or net.is_link_local or net.is_unspecified:
        raise InvalidInputError(f"{field} {cidr!r} is a multicast, loopback, link-local or "
                                "unspecified range and cannot carry an overlay")
    return net


def parse_ipv4_range(cidr: object, field: str = "ipv4_cidr") -> ipaddress.IPv4Network:
    """Validate an IPv4 overlay range: /8 to /29, not multicast/loopback/link-local."""
    net = _parse(cidr, 4, field)
    assert isinstance(net, ipaddress.IPv4Network)
    if not IPV4_MIN_PREFIX <= net.prefixlen <= IPV4_MAX_PREFIX:
        raise InvalidInputError(
            f"{field} {cidr!r} has prefix /{net.prefixlen}; use /{IPV4_MIN_PREFIX} to "
            f"/{IPV4_MAX_PREFIX} (the smallest usable range, /{IPV4_MAX_PREFIX}, holds 6 hosts)"
        )
    return net


def parse_ipv6_range(cidr: object, field: str = "ipv6_cidr") -> ipaddress.IPv6Network:
    """Validate an IPv6 overlay range: /32 to /120."""
    net = _parse(cidr, 6, field)
    assert isinstance(net, ipaddress.IPv6Network)
    if not IPV6_MIN_PREFIX <= net.prefixlen <= IPV6_MAX_PREFIX:
        raise InvalidInputError(f"{field} {cidr!r} has prefix /{net.prefixlen}; "
                                f"use /{IPV6_MIN_PREFIX} to /{IPV6_MAX_PREFIX}")
    return net


def random_ula_64(rng: random.Random) -> str:
    """A unique local /64 as RFC 4193 makes them: ``fd`` + 40-bit global id + 16-bit subnet."""
    global_id = rng.getrandbits(40)
    value = (0xFD << 120) | (global_id << 80)
    return str(ipaddress.IPv6Network((value, 64)))


def first_overlap(cidr: str, others: Iterable[tuple[str, str]]) -> str | None:
    """The name of the first ``(name, cidr)`` in ``others`` whose range overlaps ``cidr``."""
    net = ipaddress.ip_network(cidr)
    for name, other in others:
        o = ipaddress.ip_network(other)
        if o.version == net.version and net.overlaps(o):
            return name
    return None


def _bounds(net: AnyNetwork) -> tuple[int, int]:
    """First and last assignable address as integers."""
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    return first, last


def usable_count(cidr: str) -> int:
    first, last = _bounds(ipaddress.ip_network(cidr))
    return max(0, last - first + 1)


def allocate(cidr: str, used: Collection[str], rng: random.Random) -> str:
    """A free address of ``cidr`` that is not in ``used``, chosen at random.

    ``used`` may hold addresses of other ranges and families; they are ignored.
    Skips the network address (and the IPv4 broadcast address). Raises
    :class:`AddressExhaustedError` when every address is taken.
    """
    net = ipaddress.ip_network(cidr)
    first, last = _bounds(net)
    size = last - first + 1
    addresses = (ipaddress.ip_address(a) for a in used)
    taken = {int(a) for a in addresses if a.version == net.version and first <= int(a) <= last}
    make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    if len(taken) < size:
        for _ in range(32):
            candidate = first + rng.randrange(size)
            if candidate not in taken:
                return str(make(candidate))
        # Dense range: scan from a random start so concurrent callers still spread out.
        start = rng.randrange(size)
        for i in range(size):
            candidate = first + (start + i) % size
            if candidate not in taken:
                return str(make(candidate))
    raise AddressExhaustedError(f"network range {cidr} has no free address left "
                                f"({size} addresses, all assigned)")
