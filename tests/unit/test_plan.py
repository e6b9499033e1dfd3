"""Network records → every host's WireGuard interface, peers and routes (chalicelib.domain.plan)."""

from __future__ import annotations

import base64
import ipaddress
import random
from collections import Counter
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.domain.models import Member, Network
from chalicelib.domain.plan import HostView, NetworkRecords, network_plan

NET_ID = NetworkId("net_topology0001")


def host_view(host_id: str, network: Network, members: Iterable[Member]) -> HostView:
    """One host's plan, read from the whole plan of the network."""
    return network_plan(NetworkRecords.of(network, members))[host_id]


def assert_every_host_sees_exactly_n_minus_1_peers(network: Network, members: Sequence[Member]) -> None:
    """Shared mesh invariant: every member peers with every other member exactly once, never itself."""
    n = len(members)
    for me in members:
        view = host_view(me.host_id, network, members)
        peer_ids = [p.host_id for p in view.peers]
        assert len(view.peers) == n - 1, f"{me.host_id} sees {len(view.peers)} peers, expected {n - 1}"
        assert me.host_id not in peer_ids, f"{me.host_id} peers with itself"
        assert Counter(peer_ids) == Counter(m.host_id for m in members if m.host_id != me.host_id)
        assert me.public_key not in {p.public_key for p in view.peers}


# --- strategies -----------------------------------------------------------------------------


@st.composite
def meshes(draw: st.DrawFn, max_members: int = 12) -> tuple[Network, list[Member]]:
    """A network and 1..max_members members with unique host ids, keys and addresses."""
    v4 = ipaddress.IPv4Network((0x64400000 | (draw(st.integers(0, 63)) << 16), draw(st.integers(10, 24))),
                               strict=False)
    v6 = ipaddress.IPv6Network(((0xFD << 120) | (draw(st.integers(0, 2**40 - 1)) << 80),
                                draw(st.sampled_from([48, 56, 64, 96, 112]))), strict=False)
    network = Network(id=NET_ID, name=draw(st.sampled_from(["lab", "prod", "edge-1"])),
                      ipv4_cidr=str(v4), ipv6_cidr=str(v6),
                      keepalive=draw(st.integers(0, 120)), mtu=draw(st.integers(1280, 1500)),
                      seq=draw(st.integers(0, 10**6)))
    n = draw(st.integers(1, max_members))
    host_ids = [f"host_{i:012x}" for i in draw(st.lists(st.integers(0, 2**48 - 1), min_size=n,
                                                        max_size=n, unique=True))]
    keys = draw(st.lists(st.binary(min_size=32, max_size=32), min_size=n, max_size=n, unique=True))
    v4_offsets = draw(st.lists(st.integers(1, v4.num_addresses - 2), min_size=n, max_size=n, unique=True))
    v6_offsets = draw(st.lists(st.integers(1, min(v6.num_addresses - 1, 2**32)),
                               min_size=n, max_size=n, unique=True))
    endpoint = st.one_of(st.none(), st.builds("203.0.113.{}:{}".format, st.integers(1, 254),
                                              st.integers(1, 65535)))
    members = []
    for i in range(n):
        ep = draw(endpoint)
        members.append(Member(
            network_id=NET_ID,
            host_id=HostId(host_ids[i]),
            name=f"h{i}",
            public_key=base64.b64encode(keys[i]).decode(),
            ipv4=str(v4.network_address + v4_offsets[i]),
            ipv6=str(v6.network_address + v6_offsets[i]),
            listen_port=draw(st.integers(1, 65535)),
            endpoints=() if ep is None else (ep,),
        ))
    return network, members


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=40)
@given(meshes())
def test_every_host_sees_every_other_member_exactly_once(mesh: tuple[Network, list[Member]]) -> None:
    assert_every_host_sees_exactly_n_minus_1_peers(*mesh)


@settings(max_examples=40)
@given(meshes())
def test_peers_carry_the_members_single_addresses_and_no_allowed_ip_twice(
        mesh: tuple[Network, list[Member]]) -> None:
    network, members = mesh
    by_id = {m.host_id: m for m in members}
    for me in members:
        view = host_view(me.host_id, network, members)
        allowed = [ip for p in view.peers for ip in p.allowed_ips]
        assert len(allowed) == len(set(allowed)), "two peers claim the same allowed IP"
        own = {f"{me.ipv4}/32", f"{me.ipv6}/128"}
        assert own.isdisjoint(allowed), "a peer routes this host's own address"
        for p in view.peers:
            m = by_id[p.host_id]
            assert p.allowed_ips == (f"{m.ipv4}/32", f"{m.ipv6}/128")
            assert p.public_key == m.public_key
            assert p.name == m.name
            assert p.endpoint == (m.endpoints[0] if m.endpoints else None)
            assert p.keepalive == network.keepalive


@settings(max_examples=40)
@given(meshes())
def test_interface_addresses_carry_the_network_prefixes(mesh: tuple[Network, list[Member]]) -> None:
    network, members = mesh
    v4 = ipaddress.ip_network(network.ipv4_cidr)
    v6 = ipaddress.ip_network(network.ipv6_cidr)
    for me in members:
        view = host_view(me.host_id, network, members)
        assert view.interface.addresses == (f"{me.ipv4}/{v4.prefixlen}", f"{me.ipv6}/{v6.prefixlen}")
        assert view.interface.listen_port == me.listen_port
        assert view.interface.mtu == network.mtu
        assert view.routes == (str(v4), str(v6))
        assert (view.network_id, view.seq) == (network.id, network.seq)


@settings(max_examples=40)
@given(meshes(), st.randoms(use_true_random=False))
def test_view_does_not_depend_on_member_order(mesh: tuple[Network, list[Member]], rnd: random.Random) -> None:
    network, members = mesh
    shuffled = list(members)
    rnd.shuffle(shuffled)
    for me in members:
        a: HostView = host_view(me.host_id, network, members)
        b: HostView = host_view(me.host_id, network, reversed(shuffled))  # any iterable
        assert a == b


# --- examples -------------------------------------------------------------------------------


def _member(i: int, endpoints: tuple[str, ...] = ()) -> Member:
    return Member(network_id=NET_ID, host_id=HostId(f"host_{i:012d}"), name=f"h{i}",
                  public_key=base64.b64encode(bytes([i + 1]) * 32).decode(),
                  ipv4=f"100.64.0.{i + 1}", ipv6=f"fd00:1::{i + 1:x}", listen_port=51820,
                  endpoints=endpoints)


NETWORK = Network(id=NET_ID, name="lab", ipv4_cidr="100.64.0.0/16", ipv6_cidr="fd00:1::/64", seq=9)


def test_three_host_mesh_example() -> None:
    members = [_member(0, ("198.51.100.1:51820", "10.0.0.1:51820")), _member(1), _member(2)]
    assert_every_host_sees_exactly_n_minus_1_peers(NETWORK, members)
    view = host_view("host_000000000001", NETWORK, members)
    assert view.interface.addresses == ("100.64.0.2/16", "fd00:1::2/64")
    assert [(p.host_id, p.endpoint, p.allowed_ips) for p in view.peers] == [
        ("host_000000000000", "198.51.100.1:51820", ("100.64.0.1/32", "fd00:1::1/128")),
        ("host_000000000002", None, ("100.64.0.3/32", "fd00:1::3/128")),
    ]


def test_single_member_network_has_no_peers() -> None:
    view = host_view("host_000000000000", NETWORK, [_member(0)])
    assert view.peers == ()
    assert view.routes == ("100.64.0.0/16", "fd00:1::/64")


def test_host_outside_the_network_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        host_view("host_999999999999", NETWORK, [_member(0), _member(1)])
