"""REST API v1 as Chalice blueprints: parse → service → serialize."""

from __future__ import annotations

from . import clients, gateways, hosts, keys, meta, networks, relays

ALL = (networks.api, keys.api, hosts.api, meta.api,
       gateways.api, clients.api,  # issue 9
       relays.api)  # issue 10

__all__ = ["ALL"]
