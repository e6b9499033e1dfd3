"""/v1/networks/{network_id}/topology (issue 12): what the plan makes of a network now, for the
dashboard's graph and hosts table: who peers with whom, the gateway and relay each host uses for
each range (given the failover's placements and what its latest report found down), the pairs
relayed automatically, the clients and their gateways, and the links the reports found down.

Its bodies are here, beside the one route that answers them (not in :mod:`.schemas`): they are
read by the dashboard only, and change with it.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from ..service.netmap import network_view
from .endpoints import ADMIN, Api, Call
from .serialize import when

api = Api(__name__, "topology")


class TopologyGatewayRole(BaseModel):
    remote_access: bool
    egress: list[str]
    internet: bool
    auto_relay: bool


class TopologyRoute(BaseModel):
    """Where a host sends one destination beyond the network's ranges, as its plan says now."""

    destination: str = Field(description="an egress range, or 0.0.0.0/0: internet access (full tunnel; "
                                         "IPv6 goes with it)")
    next_hop: str | None = Field(description="the peer whose entry carries it at this host: the gateway "
                                             "itself, or a relay; null: no entry carries it")
    gateway: str | None = Field(description="the member where it leaves the mesh; null: none found")
    candidates: list[str] = Field(description="the gateways this host may use for it, the plan's ranking "
                                              "best first (failover placement, pin, or its own order); two "
                                              "or more: HA. Empty for a relayed host: its relay chooses")


class TopologyVia(BaseModel):
    to: str = Field(description="a member this host does not reach directly")
    next_hop: str = Field(description="the peer that carries it: a relay, or an automatic relay's via")


class TopologyHost(BaseModel):
    host_id: str
    name: str
    ipv4: str
    ipv6: str
    online: bool
    last_seen: dt.datetime | None
    gateway: TopologyGatewayRole | None = Field(description="its gateway role here; null: none")
    relayed_by: str | None = Field(description="the member that relays it (its one peer); null: none")
    relays: list[str] = Field(description="the members it relays")
    peer_count: int = Field(description="the members it has a WireGuard entry for")
    via: list[TopologyVia] = Field(description="the members it reaches through another peer; it peers "
                                               "directly with every other member (a list of those would "
                                               "make the answer grow with the square of the network)")
    routes: list[TopologyRoute] = Field(description="by destination")
    down: list[str] = Field(description="the hosts its latest report found down (its agent skips "
                                        "those gateways)")


class TopologyClient(BaseModel):
    id: str
    name: str
    gateway: str = Field(description="the member it connects through")
    served: bool = Field(description="enabled, and its gateway has remote access")


class TopologyPair(BaseModel):
    a: str
    b: str
    via: str = Field(description="the auto-relay gateway between them")


class TopologyDownLink(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True)

    source: str = Field(alias="from", description="the host that probed")
    to: str
    loss_pct: int
    age_s: int = Field(description="seconds since the report that said it")


class Topology(BaseModel):
    network_id: str
    seq: int
    hosts: list[TopologyHost] = Field(description="in host id order")
    clients: list[TopologyClient] = Field(description="in id order")
    pairs: list[TopologyPair] = Field(description="pairs of members relayed automatically")
    down_links: list[TopologyDownLink] = Field(description="what the members' latest probe reports "
                                                           "found down, by from, then to")


@api.route("/v1/networks/{network_id}/topology", "GET", auth=ADMIN, response=Topology,
           summary="What the plan makes of a network now: peers, the gateway and relay each host uses "
                   "for each range, relayed pairs, clients, and the links found down")
def get_topology(call: Call) -> Topology:
    v = network_view(call.service.deps, call.params["network_id"])
    r = v.records
    hosts = []
    for h in v.map.hosts:
        m = r.members[h.host_id]
        gw = m.role.gateway
        st = v.statuses.get(h.host_id)
        hosts.append(TopologyHost(
            host_id=h.host_id, name=h.name, ipv4=m.ipv4, ipv6=m.ipv6,
            online=bool(st and st.online), last_seen=when(st.last_seen if st else None),
            gateway=None if gw is None else TopologyGatewayRole(
                remote_access=gw.remote_access, egress=list(gw.egress), internet=gw.internet,
                auto_relay=gw.auto_relay),
            relayed_by=h.relay, relays=list(r.relayed(h.host_id)), peer_count=len(h.peers),
            via=[TopologyVia(to=t, next_hop=n) for t, n in h.via],
            routes=[TopologyRoute(destination=x.destination, next_hop=x.next_hop, gateway=x.gateway,
                                  candidates=list(x.candidates)) for x in h.routes],
            down=list(h.down)))
    return Topology(
        network_id=r.network.id, seq=r.network.seq, hosts=hosts,
        clients=[TopologyClient(id=c.client_id, name=c.name, gateway=c.gateway, served=c.served)
                 for c in v.map.clients],
        pairs=[TopologyPair(a=p.a, b=p.b, via=p.via) for p in v.map.pairs],
        down_links=[TopologyDownLink.model_validate({"from": e.source, "to": e.target,
                                                     "loss_pct": e.loss_pct, "age_s": e.age})
                    for e in v.down_links])
