"""The map of a network (issue 12: the dashboard's graph): what the plan makes of it now.

Read in two steps whatever the network's size, as the latency matrix is: the records (one
snapshot) and the members' latest statuses (one batched read without reported peers). Each
member's plan is computed with the gateways its latest report found down, as its agent's fast
path does (:func:`chalicelib.domain.netmap.network_map`), so the map says which gateway or relay
each host uses now; the links the reports found down come from the latency matrix
(:func:`.latency.matrix`), the one reading of those reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..domain.ids import HostId
from ..domain.models import HostStatus
from ..domain.netmap import NetworkMap, network_map
from ..domain.plan import NetworkRecords
from . import topology
from .deps import Deps
from .latency import LatencyEntry, matrix

__all__ = ["NetworkView", "network_view"]


@dataclass(frozen=True)
class NetworkView:
    records: NetworkRecords
    map: NetworkMap
    statuses: dict[HostId, HostStatus]
    down_links: tuple[LatencyEntry, ...]  # what members' latest reports found down, by (source, target)


def network_view(deps: Deps, network_id: str) -> NetworkView:
    """The map of ``network_id`` with its members' statuses and down links (404: no such network)."""
    records = topology.existing(deps.store, network_id)
    members = sorted(records.members)
    statuses = deps.store.host_statuses(members)
    # what each member's agent skips (its prober's verdicts), as the failover reads them too
    down = {h: frozenset(r.target for r in s.latency if not r.up) for h, s in statuses.items()}
    links = tuple(e for e in matrix(members, statuses, deps.clock.now()) if not e.up)
    return NetworkView(records, network_map(records, down), statuses, links)
