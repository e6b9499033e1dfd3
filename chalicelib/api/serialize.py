"""Domain records → API bodies."""

from __future__ import annotations

import datetime as dt
from typing import overload

from ..domain import plan, protocol
from ..domain.models import Client, EnrollmentKey, Gateway, Host, Member, Network
from ..service import Connection, IssuedClient, NetworkConfig, RelaySet
from . import schemas as s


@overload
def when(ts: int) -> dt.datetime: ...
@overload
def when(ts: int | None) -> dt.datetime | None: ...
def when(ts: int | None) -> dt.datetime | None:
    """A unix time as an aware UTC datetime; ``None`` stays ``None``."""
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


def network(n: Network) -> s.Network:
    return s.Network(id=n.id, name=n.name, ipv4_cidr=n.ipv4_cidr, ipv6_cidr=n.ipv6_cidr,
                     listen_port=n.listen_port, keepalive=n.keepalive, mtu=n.mtu, seq=n.seq,
                     created_at=when(n.created_at))


def enrollment_key(k: EnrollmentKey, now: int) -> dict:
    return dict(id=k.id, networks=list(k.networks), uses_total=k.uses_total,
                uses_left=k.uses_left, expires_at=when(k.expires_at), unlimited=k.unlimited,
                tags=list(k.tags), revoked=k.revoked, usable=k.refusal(now) is None,
                created_at=when(k.created_at), relay=k.relay)


def host(h: Host) -> s.Host:
    st = h.status
    return s.Host(
        id=h.id, name=h.name, wg_public_key=h.public_key, listen_port=h.listen_port,
        endpoints=list(h.endpoints), observed_endpoint=h.observed_endpoint,
        addresses=[s.HostAddress(network_id=n, ipv4=a[0], ipv6=a[1])
                   for n, a in sorted(h.addresses.items())],
        tags=list(h.tags), enrollment_key_id=h.enrollment_key_id, created_at=when(h.created_at),
        status=s.HostStatus(
            online=st.online, last_seen=when(st.last_seen), agent_version=st.agent_version,
            reported_endpoints=list(st.reported_endpoints),
            peers=[s.PeerStatus(public_key=p.public_key, latest_handshake_age=p.latest_handshake_age,
                                rx_bytes=p.rx_bytes, tx_bytes=p.tx_bytes) for p in st.peers],
        ),
    )


def network_config(c: NetworkConfig) -> s.NetworkSnapshot:
    view = c.view
    return s.NetworkSnapshot(
        seq=c.snapshot.seq,
        network=network(c.snapshot.network),
        members=[s.WireMember(**protocol.member_to_wire(m)) for m in c.snapshot.members],
        clients=[s.WireClient(**protocol.client_to_wire(cl)) for cl in c.snapshot.clients],
        groups=[s.WireGroup(**protocol.group_to_wire(g)) for g in c.snapshot.groups],
        interface=s.Interface(addresses=list(view.interface.addresses),
                              listen_port=view.interface.listen_port, mtu=view.interface.mtu),
        peers=[s.Peer(host_id=p.host_id, name=p.name, public_key=p.public_key, endpoint=p.endpoint,
                      allowed_ips=list(p.allowed_ips), persistent_keepalive=p.keepalive)
               for p in view.peers],
        routes=list(view.routes),
    )


def catch_up(u: protocol.CatchUp) -> s.CatchUp:
    return s.CatchUp(network_id=u.network_id, seq=u.seq,
                           deltas=[s.WireDelta.model_validate(protocol.to_wire(d)) for d in u.deltas])


# ----------------------------------------------------------------------------- issue 9: gateways
def gateway_role(g: Gateway) -> s.GatewayRole:
    return s.GatewayRole(remote_access=g.remote_access, egress=list(g.egress), internet=g.internet,
                         endpoint=g.endpoint, auto_relay=g.auto_relay)


def gateway(m: Member) -> s.Gateway:
    """A member that is a gateway (``m.gateway`` is set)."""
    assert m.gateway is not None
    return s.Gateway(network_id=m.network_id, host_id=m.host_id, name=m.name, ipv4=m.ipv4, ipv6=m.ipv6,
                     **gateway_role(m.gateway).model_dump(), effective_endpoint=plan.gateway_endpoint(m))


def network_member(m: Member) -> s.NetworkMember:
    return s.NetworkMember(network_id=m.network_id, host_id=m.host_id, name=m.name, ipv4=m.ipv4, ipv6=m.ipv6,
                           gateway=None if m.gateway is None else gateway_role(m.gateway),
                           internet_gateway=m.role.internet_gateway, full_tunnel=m.role.full_tunnel,
                           pinned=dict(m.role.pinned), placed=dict(m.role.placed))


# ----------------------------------------------------------------------------- issue 9: clients
def client(c: Client, link: Connection) -> s.Client:
    """A remote-access client with its link as its gateway last reported it."""
    return s.Client(
        id=c.id, network_id=c.network_id, name=c.name, public_key=c.public_key, ipv4=c.ipv4, ipv6=c.ipv6,
        gateway=c.gateway, enabled=c.enabled, dns=list(c.dns), extra_addresses=list(c.extra_addresses),
        post_up=c.post_up, post_down=c.post_down, full_tunnel=c.full_tunnel, keepalive=c.keepalive,
        server_keyed=c.server_keyed, created_at=when(c.created_at), connected=link.connected,
        latest_handshake=when(link.latest_handshake), endpoint=link.endpoint, rx_bytes=link.rx_bytes,
        tx_bytes=link.tx_bytes)


def client_issued(issued: IssuedClient) -> s.ClientIssued:
    """A client just created or re-keyed, with its file and QR code when the server made its key
    (a new client has no link yet; a re-keyed one loses its old key's)."""
    return s.ClientIssued(client=client(issued.client, Connection()), config=issued.config,
                          qr_svg=issued.qr_svg)


# ----------------------------------------------------------------------------- issue 10: relays
def member_ref(m: Member) -> s.NetworkMemberRef:
    return s.NetworkMemberRef(network_id=m.network_id, host_id=m.host_id, name=m.name, ipv4=m.ipv4,
                              ipv6=m.ipv6)


def relay(r: RelaySet) -> s.Relay:
    return s.Relay(**member_ref(r.relay).model_dump(), relayed=[member_ref(m) for m in r.relayed])
