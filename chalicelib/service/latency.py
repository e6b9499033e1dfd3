"""The latency matrix of a network (issue 10: probes): who measured whom, from the latest reports.

Agents probe the gateways (and relays, and peers without a direct path) they use, and each
status report carries what they measured (:class:`~chalicelib.domain.models.LatencyRow`); the
control plane keeps the latest rows with the report's time. The matrix is read in two steps,
whatever the size of the network: the members (one query of the network's partition) and their
statuses (:meth:`~.ports.Store.host_statuses`, one batched read without the reported peers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..domain.ids import HostId
from ..domain.models import HostStatus
from ..errors import NotFoundError
from .deps import Deps

__all__ = ["Latency", "LatencyEntry", "matrix"]


@dataclass(frozen=True)
class LatencyEntry:
    """``source`` measured ``target``: smoothed RTT (None: no reply yet), loss, up, ``age`` seconds ago."""

    source: HostId
    target: HostId
    rtt_ms: float | None
    loss_pct: int
    up: bool
    age: int


def matrix(members: Iterable[HostId], statuses: Mapping[HostId, HostStatus], now: int) -> list[LatencyEntry]:
    """Every row a member reported about another member, sorted by (source, target). A target that
    is no member of this network (a gateway of another network the host is in) is left out; a
    report's age is counted from its time (never negative, for a clock that stepped back)."""
    ids = set(members)
    out = []
    for source in sorted(ids):
        st = statuses.get(source)
        if st is None or st.last_seen is None:
            continue
        age = max(0, now - st.last_seen)
        out += [LatencyEntry(source, r.target, r.rtt_ms, r.loss_pct, r.up, age)
                for r in st.latency if r.target in ids and r.target != source]
    return sorted(out, key=lambda e: (e.source, e.target))


class Latency:
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    def matrix(self, network_id: str) -> list[LatencyEntry]:
        """The network's latency matrix from its members' latest reports (404: no such network)."""
        snapshot = self._d.store.network_snapshot(network_id)
        if snapshot is None:
            raise NotFoundError(f"network {network_id} does not exist")
        members = [m.host_id for m in snapshot[1]]
        return matrix(members, self._d.store.host_statuses(members), self._d.clock.now())
