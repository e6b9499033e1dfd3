"""The network map (issue 12): every answer read off the plan, per member with what it found down."""

from __future__ import annotations

from dataclasses import replace

from chalicelib.domain.ids import HostId
from chalicelib.domain.models import AUTO, Gateway, Member, MemberRole, Network
from chalicelib.domain.netmap import network_map
from chalicelib.domain.plan import INTERNET, NetworkRecords, active_gateway, network_plan

NET = Network(id="net_a", name="a", ipv4_cidr="100.64.0.0/16", ipv6_cidr="fd00::/64")


def member(i: int, **role: object) -> Member:
    return Member("net_a", HostId(f"host_{i}"), f"h{i}", f"k{i}", f"100.64.0.{i}", f"fd00::{i}", 51820,
                  role=MemberRole(**role))  # type: ignore[arg-type]


def test_a_pair_relayed_automatically_reaches_each_other_through_its_via_and_nothing_else_moves():
    via = member(3, gateway=Gateway(auto_relay=True))
    a, b = member(1, pair_relays=((HostId("host_2"), HostId("host_3")),)), member(2)
    m = network_map(NetworkRecords.of(NET, [a, b, via, member(4)]), {})
    hosts = {h.host_id: h for h in m.hosts}
    assert [(p.a, p.b, p.via) for p in m.pairs] == [("host_1", "host_2", "host_3")]
    assert hosts["host_1"].via == (("host_2", "host_3"),) and hosts["host_2"].via == (("host_1", "host_3"),)
    assert hosts["host_4"].via == () and len(hosts["host_4"].peers) == 3
    assert hosts["host_1"].peers == ("host_3", "host_4")


def test_internet_with_auto_goes_where_the_plan_sends_it_and_moves_with_what_the_host_found_down():
    gws = [member(i, gateway=Gateway(internet=True)) for i in (1, 2)]
    user = member(5, internet_gateway=AUTO, full_tunnel=True)
    records = NetworkRecords.of(NET, [*gws, user])
    first = active_gateway(records, HostId("host_5"), INTERNET)
    other = HostId("host_2" if first == "host_1" else "host_1")
    (route,) = next(h for h in network_map(records, {}).hosts if h.host_id == "host_5").routes
    assert (route.destination, route.next_hop, route.gateway) == (INTERNET, first, first)
    assert set(route.candidates) == {"host_1", "host_2"} and route.candidates[0] == first
    # its agent found the first one down: the map follows its plan with that (the agent's fast path)
    down = {HostId("host_5"): frozenset({first})}
    (route,) = next(h for h in network_map(records, down).hosts if h.host_id == "host_5").routes
    assert route.gateway == other
    carried = [p.host_id for p in network_plan(replace(records, down=down[HostId("host_5")]))["host_5"].peers
               if INTERNET in p.allowed_ips]
    assert carried == [other]
