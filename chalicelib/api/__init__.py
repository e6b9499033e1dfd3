"""REST API v1 as Chalice blueprints: parse → service → serialize."""

from __future__ import annotations

from . import clients, hosts, keys, meta, networks

ALL = (networks.api, keys.api, hosts.api, meta.api, clients.api)

__all__ = ["ALL"]
