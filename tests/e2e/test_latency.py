"""Probes end to end (issue 10): a real agent probes its gateway through the tunnel (ICMP over its
one socket, to the gateway's overlay address), its report reaches the control plane, and
``GET /v1/networks/{id}/latency`` shows the row; when the gateway's link goes down the host's
next report says so within seconds, and when it comes back, that too.

Lab (all underlay in 198.18.0.0/15; nothing leaves the machine)::

    bridge 198.18.0.0/24:  cp (control plane), g (the gateway), a (a host routing through it)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from skymesh.lab import wait_until
from skymesh.lab.mesh import LabAgent, diagnose

from .conftest import lab_with_control_plane

pytestmark = [pytest.mark.root, pytest.mark.slow]

CONVERGE = 45.0  # the gateway role reaching a (broadcast), its first probes and the report at once
DOWN_WITHIN = 10.0  # 3 missed probes a second apart, one report at once, the handler, one API read
EGRESS = "198.19.1.0/24"  # routed through g; nothing needs to be behind it for probes


def test_a_host_probes_its_gateway_through_the_tunnel_and_reports_it_down_and_up() -> None:
    with lab_with_control_plane() as (lab, cp):
        net = cp.admin.create_network("lat", "100.64.0.0/24")
        key = cp.admin.create_enrollment_key([net["id"]], uses=2)
        g, a = (LabAgent(lab.add_node(n)) for n in ("g", "a"))
        for agent in (g, a):
            agent.join(cp.api_url, key["token"])
            agent.start()

        def details() -> str:
            return diagnose([g, a]) + "\n===== control plane\n" + cp.log_tail(20)

        def row() -> dict[str, Any] | None:
            rows = cp.admin.call("GET", f"/v1/networks/{net['id']}/latency")["rows"]
            return next((r for r in rows if r["from"] == a.host_id and r["to"] == g.host_id), None)

        def shows(check: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
            return lambda: (r := row()) is not None and check(r)

        assert row() is None  # nobody is a gateway yet: nothing probed
        cp.admin.call("PUT", f"/v1/networks/{net['id']}/gateways/{g.host_id}", {"egress": [EGRESS]})
        wait_until(shows(lambda r: r["up"] and r["rtt_ms"] is not None), CONVERGE,
                   "a's report to show g up with an RTT", interval=0.5, details=details)
        first = row()
        assert first is not None and 0 < first["rtt_ms"] < 1000 and first["loss_pct"] <= 50, first

        g.node.run(["ip", "link", "set", "eth0", "down"], timeout=10, check=True)  # g is gone
        t0 = time.monotonic()
        wait_until(shows(lambda r: not r["up"]), DOWN_WITHIN, "a's report to say g is down",
                   interval=0.25, details=details)
        went_down = time.monotonic() - t0
        down = row()
        assert down is not None and down["loss_pct"] > 0, down

        g.node.run(["ip", "link", "set", "eth0", "up"], timeout=10, check=True)
        wait_until(shows(lambda r: r["up"]), CONVERGE, "a's report to say g is up again",
                   interval=0.5, details=details)
        print(f"reported down {went_down:.1f} s after g's link went down")
