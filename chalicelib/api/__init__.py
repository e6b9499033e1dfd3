"""REST API v1 as Chalice blueprints: parse → service → serialize."""

from __future__ import annotations

from . import clients, gateways, groups, hosts, keys, latency, meta, networks, relays, topology

ALL = (networks.api, keys.api, hosts.api, meta.api,
       gateways.api, clients.api,  # issue 9
       latency.api, relays.api,  # issue 10
       groups.api,  # issue 11
       topology.api)  # issue 12

__all__ = ["ALL"]
