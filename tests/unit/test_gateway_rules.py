"""The rules of gateways the domain holds: egress prefixes as the document describes them, where
clients reach a gateway, and that a client kept unserved blocks no later change."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import plan, validate
from chalicelib.domain.errors import ConflictError, InvalidInputError
from chalicelib.domain.ids import ClientId, HostId, NetworkId
from chalicelib.domain.models import Client, Gateway, Member, MemberRole, Network

NET = Network(id=NetworkId("net_rules0000001"), name="n", ipv4_cidr="100.64.0.0/16", ipv6_cidr="fd00:1::/64")


NO_ROLE = MemberRole()


def _member(i: int, role: MemberRole = NO_ROLE, endpoints: tuple[str, ...] = ("198.18.0.1:51820",)) -> Member:
    return Member(NET.id, HostId(f"host_{i:012d}"), f"h{i}", f"{i:043d}=", f"100.64.0.{i}", f"fd00:1::{i}",
                  51820, endpoints, role)


@settings(deadline=None)
@given(st.one_of(st.tuples(st.ip_addresses(v=4), st.integers(1, 32)),
                 st.tuples(st.ip_addresses(v=6), st.integers(1, 128))))
def test_every_prefix_accepted_has_the_documented_shape_and_is_canonical(address_and_length):
    address, length = address_and_length
    net = ipaddress.ip_network(f"{address}/{length}", strict=False)
    if net.is_multicast or net.is_loopback or net.is_link_local or net.is_unspecified:
        with pytest.raises(InvalidInputError):
            validate.prefix(str(net), "egress")
        return
    assert validate.prefix(str(net), "egress") == str(net)
    assert re.fullmatch(validate.PREFIX_PATTERN, str(net)) and len(str(net)) <= validate.PREFIX_MAX


def test_a_prefix_with_host_bits_is_refused_with_its_canonical_form():
    with pytest.raises(InvalidInputError, match=r"its network is 10\.20\.0\.0/16"):
        validate.prefix("10.20.3.4/16", "egress")
    assert validate.prefixes(["FD12::/48", "fd12::/48"], "egress", 2) == ("fd12::/48",)
    with pytest.raises(InvalidInputError, match="at most 1"):
        validate.prefixes(["10.0.0.0/8", "10.1.0.0/16"], "egress", 1)


def test_clients_reach_a_gateway_at_its_own_endpoint_else_the_hosts_first():
    assert plan.gateway_endpoint(_member(1, MemberRole(Gateway(remote_access=True)))) == "198.18.0.1:51820"
    own = MemberRole(Gateway(remote_access=True, endpoint="gw.example.com:443"))
    assert plan.gateway_endpoint(_member(1, own)) == "gw.example.com:443"
    assert plan.gateway_endpoint(_member(1, endpoints=())) is None


def test_a_full_tunnel_client_of_a_gateway_without_remote_access_is_kept_unserved_and_blocks_nothing():
    phone = Client(ClientId("cli_000000000001"), NET.id, "phone", "C" * 43 + "=", "100.64.1.1", "fd00:1::1:1",
                   HostId("host_000000000001"), full_tunnel=True)
    egress_only = MemberRole(Gateway(egress=("10.20.0.0/16",)))
    records = plan.NetworkRecords.of(NET, [_member(1, egress_only), _member(2)], [phone])
    plan.check(records)
    assert not records.served(phone)
    serving = MemberRole(Gateway(remote_access=True))
    with pytest.raises(ConflictError, match="no internet gateway"):
        plan.check(plan.NetworkRecords.of(NET, [_member(1, serving), _member(2)], [phone]))
