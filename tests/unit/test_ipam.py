"""Overlay address planning (chalicelib.domain.ipam): ranges people may pick, addresses hosts get."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import ipam
from chalicelib.errors import ConflictError, InvalidInputError

# --- strategies -----------------------------------------------------------------------------


@st.composite
def networks(draw: st.DrawFn, v4_prefixes: tuple[int, int] = (8, 30),
             v6_prefixes: tuple[int, int] = (64, 126)) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A range inside 10.0.0.0/8 or fd00::/8 (never multicast, loopback or link-local)."""
    if draw(st.booleans()):
        prefix = draw(st.integers(*v4_prefixes))
        base = int(ipaddress.IPv4Address("10.0.0.0")) | draw(st.integers(0, 2**24 - 1))
        return ipaddress.IPv4Network((base, prefix), strict=False)
    prefix = draw(st.integers(*v6_prefixes))
    base = (0xFD << 120) | draw(st.integers(0, 2**120 - 1))
    return ipaddress.IPv6Network((base, prefix), strict=False)


@st.composite
def range_and_used(draw: st.DrawFn) -> tuple[str, set[str]]:
    """A range and some of its assignable addresses already taken (never all of them)."""
    net = draw(networks())
    first = int(net.network_address) + 1
    count = ipam.usable_count(str(net))
    offsets = draw(st.sets(st.integers(0, count - 1), max_size=min(count - 1, 40)))
    return str(net), {str(ipaddress.ip_address(first + o)) for o in offsets}


def _claim_all(cidr: str, used: set[str], rng: random.Random) -> list[str]:
    """Allocate until the range is exhausted; the addresses handed out, in order."""
    got: list[str] = []
    limit = ipam.usable_count(cidr) + 1
    with pytest.raises(ipam.AddressExhaustedError, match="no free address left"):
        for _ in range(limit):
            address = ipam.allocate(cidr, used, rng)
            got.append(address)
            used.add(address)
    return got


# --- allocate -------------------------------------------------------------------------------


@given(range_and_used(), st.integers(0, 2**32))
def test_allocate_returns_a_free_assignable_address_of_the_range(
        case: tuple[str, set[str]], seed: int) -> None:
    cidr, used = case
    net = ipaddress.ip_network(cidr)
    address = ipaddress.ip_address(ipam.allocate(cidr, used, random.Random(seed)))
    assert address in net
    assert address != net.network_address
    if net.version == 4:
        assert address != net.broadcast_address
    assert str(address) not in used


@given(range_and_used(), st.integers(0, 2**32))
def test_allocate_is_deterministic_for_a_seeded_rng(case: tuple[str, set[str]], seed: int) -> None:
    cidr, used = case
    first = [ipam.allocate(cidr, used, random.Random(seed)) for _ in range(3)]
    assert first == [ipam.allocate(cidr, used, random.Random(seed)) for _ in range(3)]


def test_allocate_spreads_choices_rather_than_first_free() -> None:
    picks = {ipam.allocate("100.64.0.0/16", set(), random.Random(seed)) for seed in range(20)}
    assert len(picks) > 10


@settings(max_examples=60, deadline=None)
@given(networks(v4_prefixes=(26, 30), v6_prefixes=(122, 126)), st.integers(0, 2**32))
def test_allocating_until_exhaustion_yields_every_usable_address_once(
        net: ipaddress.IPv4Network | ipaddress.IPv6Network, seed: int) -> None:
    cidr = str(net)
    got = _claim_all(cidr, set(), random.Random(seed))
    assert len(got) == len(set(got)) == ipam.usable_count(cidr)
    expected = {str(a) for a in net.hosts()} if net.version == 4 else {
        str(a) for a in net if a != net.network_address}
    assert set(got) == expected


@pytest.mark.parametrize(("cidr", "count"), [
    ("100.64.0.0/29", 6), ("100.64.0.0/24", 254), ("10.0.0.0/8", 2**24 - 2),
    ("fd00::/120", 255), ("fd00::/64", 2**64 - 1),
])
def test_usable_count_excludes_network_and_ipv4_broadcast(cidr: str, count: int) -> None:
    assert ipam.usable_count(cidr) == count


def test_exhausted_range_is_a_conflict_naming_the_range() -> None:
    used = {"100.64.0.1", "100.64.0.2"}
    with pytest.raises(ipam.AddressExhaustedError, match=r"100\.64\.0\.0/30") as info:
        ipam.allocate("100.64.0.0/30", used, random.Random(0))
    assert isinstance(info.value, ConflictError)
    assert info.value.code == "addresses_exhausted"


@settings(max_examples=50, deadline=None)
@given(st.booleans(), st.integers(0, 2**32))
def test_addresses_of_other_families_and_ranges_in_used_do_not_count(v6: bool, seed: int) -> None:
    cidr = "fd00:1::/125" if v6 else "100.64.0.0/29"
    foreign = {
        # other ranges of the same family, the other family, and the same host bits elsewhere
        "100.64.0.9", "100.64.1.1", "10.0.0.1", "fd00:2::1", "fd00:1:0:1::1", "::ffff:100.64.0.1",
        "fd00::1", "100.63.255.255",
    }
    alone = ipam.allocate(cidr, set(), random.Random(seed))
    assert ipam.allocate(cidr, set(foreign), random.Random(seed)) == alone
    got = _claim_all(cidr, set(foreign), random.Random(seed))
    assert len(set(got)) == ipam.usable_count(cidr)


def test_network_and_broadcast_in_used_do_not_reduce_capacity() -> None:
    used = {"100.64.0.0", "100.64.0.7", "100.64.0.1", "100.64.0.2", "100.64.0.3", "100.64.0.4"}
    assert ipam.allocate("100.64.0.0/29", used, random.Random(0)) in {"100.64.0.5", "100.64.0.6"}


# --- parse_ipv4_range / parse_ipv6_range --------------------------------------------------


@given(st.integers(8, 29), st.integers(0, 2**24 - 1))
def test_ipv4_ranges_from_slash_8_to_slash_29_are_accepted(prefix: int, bits: int) -> None:
    net = ipaddress.IPv4Network((int(ipaddress.IPv4Address("10.0.0.0")) | bits, prefix), strict=False)
    assert ipam.parse_ipv4_range(str(net)) == net
    assert ipam.parse_ipv4_range(f"  {net} ") == net


@given(st.one_of(st.integers(0, 7), st.integers(30, 32)))
def test_ipv4_prefixes_outside_8_to_29_are_refused_with_the_allowed_span(prefix: int) -> None:
    net = ipaddress.IPv4Network(("100.64.0.0", prefix), strict=False)
    with pytest.raises(InvalidInputError, match=r"use /8 to /29"):
        ipam.parse_ipv4_range(str(net))


@given(st.integers(32, 120), st.integers(0, 2**120 - 1))
def test_ipv6_ranges_from_slash_32_to_slash_120_are_accepted(prefix: int, bits: int) -> None:
    net = ipaddress.IPv6Network(((0xFD << 120) | bits, prefix), strict=False)
    assert ipam.parse_ipv6_range(str(net)) == net


@given(st.one_of(st.integers(8, 31), st.integers(121, 128)))
def test_ipv6_prefixes_outside_32_to_120_are_refused_with_the_allowed_span(prefix: int) -> None:
    net = ipaddress.IPv6Network(("fd00::", prefix), strict=False)
    with pytest.raises(InvalidInputError, match=r"use /32 to /120"):
        ipam.parse_ipv6_range(str(net))


@given(st.integers(8, 28), st.integers(0, 2**24 - 1))
def test_ipv4_range_with_host_bits_set_hints_the_network(prefix: int, bits: int) -> None:
    address = ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.0.0.0")) | bits)
    net = ipaddress.IPv4Network((address, prefix), strict=False)
    if address == net.network_address:
        address += 1
    with pytest.raises(InvalidInputError, match=f"did you mean {net}\\?"):
        ipam.parse_ipv4_range(f"{address}/{prefix}")


def test_ipv6_range_with_host_bits_set_hints_the_network() -> None:
    with pytest.raises(InvalidInputError, match=r"did you mean fd00:1234::/64\?"):
        ipam.parse_ipv6_range("fd00:1234::7/64")


@pytest.mark.parametrize(("parse", "cidr", "message"), [
    (ipam.parse_ipv4_range, "fd00::/64", "expected IPv4"),
    (ipam.parse_ipv6_range, "100.64.0.0/16", "expected IPv6"),
    (ipam.parse_ipv4_range, "224.0.0.0/8", "multicast"),
    (ipam.parse_ipv4_range, "127.0.0.0/8", "loopback"),
    (ipam.parse_ipv4_range, "169.254.0.0/16", "link-local"),
    (ipam.parse_ipv6_range, "fe80::/64", "link-local"),
    (ipam.parse_ipv6_range, "ff02::/64", "multicast"),
    (ipam.parse_ipv4_range, "100.64.0.0/banana", "not a valid network range"),
    (ipam.parse_ipv4_range, "banana", "not a valid network range"),
    (ipam.parse_ipv4_range, "", "must be a CIDR string such as 100.64.0.0/16"),
    (ipam.parse_ipv6_range, None, "must be a CIDR string such as fd00:1234::/64"),
    (ipam.parse_ipv4_range, 1684275200, "must be a CIDR string"),
])
def test_unusable_ranges_are_refused_with_a_reason(
        parse: Callable[[object], object], cidr: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse(cidr)


def test_refusal_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match=r"^overlay 'x' "):
        ipam.parse_ipv4_range("x", field="overlay")


# --- random_ula_64 ----------------------------------------------------------------------------


@given(st.integers(0, 2**64))
def test_random_ula_is_a_slash_64_inside_fd00_slash_8(seed: int) -> None:
    text = ipam.random_ula_64(random.Random(seed))
    net = ipaddress.IPv6Network(text)  # strict: no host bits
    assert net.prefixlen == 64
    assert net.subnet_of(ipaddress.IPv6Network("fd00::/8"))
    assert ipam.parse_ipv6_range(text) == net
    assert ipam.random_ula_64(random.Random(seed)) == text


def test_random_ula_differs_between_networks() -> None:
    rng = random.Random(7)
    assert len({ipam.random_ula_64(rng) for _ in range(50)}) == 50


# --- first_overlap ------------------------------------------------------------------------------


def _overlap_model(cidr: str, others: list[tuple[str, str]]) -> str | None:
    """Two ranges of one family overlap when their [first, last] integer intervals intersect."""
    a = ipaddress.ip_network(cidr)
    for name, other in others:
        b = ipaddress.ip_network(other)
        if a.version == b.version and (
            int(a.network_address) <= int(b.broadcast_address)
            and int(b.network_address) <= int(a.broadcast_address)
        ):
            return name
    return None


small_ranges = st.one_of(
    st.builds(lambda b, p: str(ipaddress.IPv4Network((0x0A000000 | (b << 8), p), strict=False)),
              st.integers(0, 15), st.integers(16, 28)),
    st.builds(lambda b, p: str(ipaddress.IPv6Network(((0xFD << 120) | (b << 64), p), strict=False)),
              st.integers(0, 15), st.integers(56, 120)),
)


@given(small_ranges, st.lists(st.tuples(st.text(min_size=1, max_size=8), small_ranges), max_size=6))
def test_first_overlap_matches_interval_model(cidr: str, others: list[tuple[str, str]]) -> None:
    assert ipam.first_overlap(cidr, others) == _overlap_model(cidr, others)


def test_first_overlap_reports_the_first_overlapping_network_in_order() -> None:
    others = [("lab", "10.1.0.0/16"), ("prod", "10.0.0.0/8"), ("dev", "10.0.5.0/24")]
    assert ipam.first_overlap("10.0.5.128/25", others) == "prod"
    assert ipam.first_overlap("10.2.0.0/16", [("v6", "fd00::/8"), ("lab", "10.1.0.0/16")]) is None
