"""/v1/networks"""

from __future__ import annotations

from ..errors import InvalidInputError
from . import schemas as s
from . import serialize
from .endpoints import ADMIN, Api, Call, query_flag

api = Api(__name__, "networks")


@api.route("/v1/networks", "POST", auth=ADMIN, body=s.NetworkCreate, response=s.Network,
           status=201, summary="Create a network")
def create_network(call: Call) -> s.Network:
    b: s.NetworkCreate = call.body
    return serialize.network(call.service.networks.create(
        name=b.name, ipv4_cidr=b.ipv4_cidr, ipv6_cidr=b.ipv6_cidr, listen_port=b.listen_port,
        keepalive=b.keepalive, mtu=b.mtu))


@api.route("/v1/networks", "GET", auth=ADMIN, response=s.NetworkList, query_model=s.ListQuery,
           summary="List networks, one page at a time")
def list_networks(call: Call) -> s.NetworkList:
    page = call.service.networks.list(call.args.limit, call.args.cursor)
    return s.NetworkList(networks=[serialize.network(n) for n in page.items], next_cursor=page.cursor)


@api.route("/v1/networks/{network_id}", "GET", auth=ADMIN, response=s.Network,
           summary="Get a network")
def get_network(call: Call) -> s.Network:
    return serialize.network(call.service.networks.get(call.params["network_id"]))


@api.route("/v1/networks/{network_id}", "PATCH", auth=ADMIN, body=s.NetworkPatch,
           response=s.Network, summary="Change a network's name or settings")
def patch_network(call: Call) -> s.Network:
    b: s.NetworkPatch = call.body
    if b.ipv4_cidr is not None or b.ipv6_cidr is not None:
        raise InvalidInputError("a network's ranges cannot be changed after creation; create a "
                                "new network and move the hosts")
    return serialize.network(call.service.networks.update(
        call.params["network_id"], name=b.name, listen_port=b.listen_port,
        keepalive=b.keepalive, mtu=b.mtu))


@api.route("/v1/networks/{network_id}", "DELETE", auth=ADMIN, status=204,
           query=(("force", "true: remove the network's hosts from it first"),),
           summary="Delete a network (409 while it has hosts, unless force=true)")
def delete_network(call: Call) -> None:
    call.service.networks.delete(call.params["network_id"], force=query_flag(call, "force"))
