"""The shapes ``/config`` sends are the wire protocol's, field for field.

``/config`` carries the records the agent computes from (``members``, ``deltas``) in the
protocol's own shape; the API's pydantic models only describe them for OpenAPI, so a field
added to the protocol and not to the model (or the other way round) fails here.
"""

from __future__ import annotations

from dataclasses import replace

from chalicelib.adapters.dynamodb import mapping
from chalicelib.api import schemas
from chalicelib.domain import protocol
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.domain.models import Gateway, Member, MemberRole, Network

NET = Network(id=NetworkId("net_shapes000001"), name="lab", ipv4_cidr="100.64.0.0/16",
              ipv6_cidr="fd00:1::/64", seq=4)
MEMBER = Member(network_id=NET.id, host_id=HostId("host_000000000001"), name="h1",
                public_key="A" * 43 + "=", ipv4="100.64.0.1", ipv6="fd00:1::1", listen_port=51820,
                endpoints=("198.18.0.1:51820",))


# Every field a role can have (no valid network has them all on one member; the shape does).
ROLE = MemberRole(gateway=Gateway(remote_access=True, egress=("10.20.0.0/16",), internet=True),
                  internet_gateway=HostId("host_000000000002"), full_tunnel=True,
                  relayed_by=HostId("host_000000000003"),
                  pinned=(("10.30.0.0/16", HostId("host_000000000003")),),
                  placed=(("10.31.0.0/16", HostId("host_000000000004")),),
                  pair_relays=((HostId("host_000000000005"), HostId("host_000000000002")),))


def test_a_member_in_config_is_the_protocols_member_record():
    wire = protocol.member_to_wire(replace(MEMBER, role=ROLE))
    assert set(schemas.WireMember.model_fields) == set(wire)
    assert set(schemas.WireRole.model_fields) == set(wire["role"])
    assert set(schemas.WireGateway.model_fields) == set(wire["role"]["gateway"])
    for role in (MemberRole(), ROLE, MemberRole(Gateway(egress=("10.0.0.0/8",))),
                 MemberRole(internet_gateway=HostId("host_000000000002")),
                 MemberRole(relayed_by=HostId("host_000000000003")),
                 MemberRole(pair_relays=((HostId("host_000000000005"), HostId("host_000000000002")),))):
        member = replace(MEMBER, role=role)
        wire = protocol.member_to_wire(member)
        assert schemas.WireMember(**wire).model_dump() == wire
        assert protocol.member_from_wire(NET.id, wire) == member


def test_a_delta_in_a_catch_up_is_the_broadcast_as_it_went_out():
    for delta in (protocol.Delta(NET.id, 5, upsert=(MEMBER,), remove=("host_000000000002",)),
                  protocol.Delta(NET.id, 6, network=NET.with_changes(seq=6, mtu=1380))):
        wire = protocol.to_wire(delta)
        assert schemas.WireDelta.model_validate(wire).model_dump(exclude_none=True) == wire


def test_the_stored_role_map_keeps_every_field_of_a_role() -> None:
    """What the DynamoDB adapter writes of a role (its wire form) reads back as the same role."""
    no_auto = replace(ROLE, gateway=Gateway(egress=("10.0.0.0/8",), auto_relay=False))
    for role in (MemberRole(), ROLE, no_auto):
        assert mapping.role(mapping.role_map(role)) == role
