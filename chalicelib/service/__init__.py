"""Use cases: the only callers of the ports.

Each use case that changes what hosts see broadcasts its own change (through
:class:`~.stream.Stream`); :class:`Service` only assembles them.

>>> svc = Service(deps)                                   # doctest: +SKIP
>>> net = svc.networks.create(name="office", ipv4_cidr="100.64.0.0/16")  # doctest: +SKIP
"""

from __future__ import annotations

from .auth import Auth
from .clients import Clients, Connection, IssuedClient
from .deps import Deps, Settings
from .failover import Failover
from .gateways import Gateways
from .groups import Groups
from .hosts import HostConfig, Hosts, NetworkConfig, Registration
from .keys import EnrollmentKeys
from .latency import Latency
from .networks import Networks
from .orphans import Orphans
from .relays import Relays, RelaySet
from .status import Status
from .stream import Stream

__all__ = ["Service", "Deps", "Settings", "Registration", "NetworkConfig", "HostConfig", "Connection",
           "IssuedClient", "RelaySet"]


class Service:
    """The control plane's use cases, grouped by resource."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.auth = Auth(deps)
        self.stream = Stream(deps)
        self.keys = EnrollmentKeys(deps)
        self.hosts = Hosts(deps, self.stream)
        self.clients = Clients(deps, self.stream)  # remote-access clients (issue 9)
        self.networks = Networks(deps, self.stream, self.hosts, self.clients)
        self.groups = Groups(deps, self.stream)  # issue 11: HA gateway groups
        self.status = Status(deps, self.groups)
        self.orphans = Orphans(deps)
        # issue 9: gateways
        self.gateways = Gateways(deps, self.stream)
        # issue 10
        self.latency = Latency(deps)
        self.relays = Relays(deps, self.stream)
        self.failover = Failover(deps, self.stream, self.groups)

    def ensure_admin_key(self, existing: str | None = None) -> str:
        return self.auth.ensure_admin_key(existing)
