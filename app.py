"""skymesh control plane: the Chalice app, its blueprints, schedules and event handlers."""

from __future__ import annotations

import logging
from typing import Any

from chalice import Chalice, Rate

from chalicelib.api import ALL
from chalicelib.api.chalice_errors import chalice_errors_in_our_shape
from chalicelib.wiring import get_service

app = Chalice(app_name="skymesh")
app.log.setLevel(logging.INFO)

for _api in ALL:
    app.register_blueprint(_api.blueprint)
# Chalice's own 405/415/500 answers in our {"error": {"code", "message"}} shape.
app.register_middleware(chalice_errors_in_our_shape, "http")


@app.lambda_function(name="host_report")
def host_report(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A host's status report, delivered by the IoT topic rule (locally: the rule bridge).

    The rule is ``SELECT *, topic(3) AS host_id FROM 'sm/h/+/status'``: the host id
    comes from the topic, which the broker only lets that host publish on. Anything
    else in the event is what a host sent: a report outside the protocol's bounds is
    logged in one line and answered ``recorded: false``; it never raises.
    """
    if not isinstance(event, dict) or not isinstance(event.get("host_id"), str):
        app.log.warning("host_report: dropped an event without a host id from the topic")
        return {"recorded": False}
    payload = {k: v for k, v in event.items() if k != "host_id"}
    return {"recorded": get_service().status.record(event["host_id"], payload)}


@app.lambda_function(name="failover_report")
def failover_report(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A status report that carries latency or ``direct``, delivered by its own IoT topic rule
    (locally: the rule bridge): the reporting host is placed again on the gateways it measured, and
    its network's automatic relays decided again when the report says something of pairs
    (failover functions, event-driven). Like ``host_report`` it never raises on what a host sent."""
    if not isinstance(event, dict) or not isinstance(event.get("host_id"), str):
        app.log.warning("failover_report: dropped an event without a host id from the topic")
        return {"moved": 0}
    payload = {k: v for k, v in event.items() if k != "host_id"}
    return {"moved": get_service().failover.after_report(event["host_id"], payload)}


@app.schedule(Rate(1, unit=Rate.MINUTES), name="failover")
def failover(event: Any) -> dict[str, Any]:
    """Place hosts on the gateways that share ranges: off dead or silent ones, onto clearly better
    ones, spread over equals (what the agents' own switching cannot see)."""
    return {"moved": get_service().failover.run()}


@app.schedule(Rate(1, unit=Rate.MINUTES), name="mark_offline")
def mark_offline(event: Any) -> dict[str, Any]:
    """Hosts whose reports stopped show offline."""
    return {"offline": get_service().status.mark_offline()}


@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweep_broadcasts")
def sweep_broadcasts(event: Any) -> dict[str, Any]:
    """Broadcast changes a failed or interrupted publish left pending."""
    return {"published": get_service().stream.sweep()}


@app.schedule(Rate(5, unit=Rate.MINUTES), name="sweep_orphans")
def sweep_orphans(event: Any) -> dict[str, Any]:
    """Remove the certificate and broker access of registrations that died before their commit."""
    return {"discarded": get_service().orphans.sweep()}
