"""/v1/networks/{network_id}/relays (issue 10): members that relay hosts that cannot be reached directly."""

from __future__ import annotations

from . import schemas as s
from . import serialize
from .endpoints import ADMIN, Api, Call

api = Api(__name__, "relays")

_RELAY = "/v1/networks/{network_id}/relays/{relay_host_id}"


@api.route(_RELAY, "PUT", auth=ADMIN, body=s.RelayPut, response=s.Relay,
           summary="Set the hosts a member relays, exactly (one write, one broadcast)")
def put_relay(call: Call) -> s.Relay:
    b: s.RelayPut = call.body
    return serialize.relay(call.service.relays.set(call.params["network_id"], call.params["relay_host_id"],
                                                   b.relayed))


@api.route("/v1/networks/{network_id}/relays", "GET", auth=ADMIN, response=s.RelayList,
           summary="List the relays of a network with the hosts each relays, and the pairs relayed "
                   "automatically")
def list_relays(call: Call) -> s.RelayList:
    relays = call.service.relays.list(call.params["network_id"])
    pairs = call.service.relays.pairs(call.params["network_id"])
    return s.RelayList(relays=[serialize.relay(r) for r in relays],
                       pairs=[s.RelayPair(a=serialize.member_ref(a), b=serialize.member_ref(b),
                                          via=serialize.member_ref(via)) for a, b, via in pairs])


@api.route(_RELAY, "DELETE", auth=ADMIN, status=204,
           summary="Stop a relay: every host it relays is reached directly again (404: it relays none)")
def delete_relay(call: Call) -> None:
    call.service.relays.unset(call.params["network_id"], call.params["relay_host_id"])
