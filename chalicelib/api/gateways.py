"""/v1/networks/{network_id}/gateways and /v1/networks/{network_id}/members (issue 9)."""

from __future__ import annotations

from ..service.gateways import KEEP
from . import schemas as s
from . import serialize
from .endpoints import ADMIN, Api, Call, query_flag

api = Api(__name__, "gateways")

_GATEWAY = "/v1/networks/{network_id}/gateways/{host_id}"


@api.route(_GATEWAY, "PUT", auth=ADMIN, body=s.GatewayPut, response=s.Gateway,
           summary="Make a member a gateway (remote access, egress ranges, internet), or change its role")
def put_gateway(call: Call) -> s.Gateway:
    b: s.GatewayPut = call.body
    return serialize.gateway(call.service.gateways.set(
        call.params["network_id"], call.params["host_id"], remote_access=b.remote_access, egress=b.egress,
        internet=b.internet, endpoint=b.endpoint if "endpoint" in b.model_fields_set else KEEP,
        auto_relay=b.auto_relay))


@api.route(_GATEWAY, "GET", auth=ADMIN, response=s.Gateway, summary="Get a gateway of a network")
def get_gateway(call: Call) -> s.Gateway:
    return serialize.gateway(call.service.gateways.get(call.params["network_id"], call.params["host_id"]))


@api.route("/v1/networks/{network_id}/gateways", "GET", auth=ADMIN, response=s.GatewayList,
           summary="List the gateways of a network")
def list_gateways(call: Call) -> s.GatewayList:
    return s.GatewayList(gateways=[serialize.gateway(m)
                                   for m in call.service.gateways.list(call.params["network_id"])])


@api.route(_GATEWAY, "DELETE", auth=ADMIN, status=204,
           query=(("force", "true: also while clients or hosts use it (they stay, unserved)"),),
           summary="Remove a member's gateway role and every route through it (409 while in use, "
                   "unless force=true)")
def delete_gateway(call: Call) -> None:
    call.service.gateways.unset(call.params["network_id"], call.params["host_id"],
                                force=query_flag(call, "force"))


@api.route("/v1/networks/{network_id}/members/{host_id}", "PATCH", auth=ADMIN, body=s.MemberPatch,
           response=s.NetworkMember, summary="Choose a member's internet gateway, full or split tunnel, "
                                             "and the gateway of each range several gateways serve")
def patch_member(call: Call) -> s.NetworkMember:
    b: s.MemberPatch = call.body
    return serialize.network_member(call.service.gateways.set_member(
        call.params["network_id"], call.params["host_id"],
        internet_gateway=b.internet_gateway if "internet_gateway" in b.model_fields_set else KEEP,
        full_tunnel=b.full_tunnel, pins=b.pinned))
