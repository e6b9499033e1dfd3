"""/v1/networks/{network_id}/latency (issue 10: probes)."""

from __future__ import annotations

from . import schemas as s
from .endpoints import ADMIN, Api, Call

api = Api(__name__, "latency")


@api.route("/v1/networks/{network_id}/latency", "GET", auth=ADMIN, response=s.LatencyMatrix,
           summary="The latency matrix: who measured whom through the tunnel (RTT, loss, up), "
                   "from the members' latest reports")
def get_latency(call: Call) -> s.LatencyMatrix:
    network_id = call.params["network_id"]
    return s.LatencyMatrix(network_id=network_id, rows=[s.LatencyRow.model_validate(
        {"from": e.source, "to": e.target, "rtt_ms": e.rtt_ms, "loss_pct": e.loss_pct, "up": e.up,
         "age_s": e.age}) for e in call.service.latency.matrix(network_id)])
