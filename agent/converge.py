"""The agent's view of its networks, kept in sequence. Pure: no I/O, no clock.

A :class:`Tracker` holds the latest snapshot of every network the host is in.
A full config replaces everything; a delta applies only on top of ``seq - 1``.
Anything else is reported so the caller fetches a full config (a resync):

- ``seq`` at or below what we have: a duplicate or a replay — ignored;
- ``seq`` beyond the next one: we missed something — resync;
- the delta removes this host itself, or names a network we do not know —
  our membership changed — resync (to learn the networks we are in now).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import replace

from chalicelib.domain import protocol
from chalicelib.domain.models import Member
from chalicelib.domain.topology import HostView, host_view

from .config import DeviceConfig, merge_views

__all__ = ["Tracker", "Outcome"]


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    GAP = "gap"
    MEMBERSHIP = "membership"


class Tracker:
    def __init__(self, host_id: str, snapshots: Iterable[protocol.Snapshot] = ()) -> None:
        self.host_id = host_id
        self._nets: dict[str, protocol.Snapshot] = {}
        self.replace(snapshots)

    def replace(self, snapshots: Iterable[protocol.Snapshot]) -> None:
        """Take a full config: exactly these networks, at these sequence numbers.

        Networks where this host is not (or no longer) a member are left out.
        """
        self._nets = {s.network.id: s for s in snapshots
                      if any(m.host_id == self.host_id for m in s.members)}

    def seq(self, network_id: str) -> int | None:
        s = self._nets.get(network_id)
        return None if s is None else s.seq

    @property
    def network_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._nets))

    @property
    def snapshots(self) -> list[protocol.Snapshot]:
        return [self._nets[n] for n in sorted(self._nets)]

    def on_delta(self, delta: protocol.Delta) -> Outcome:
        current = self._nets.get(delta.network_id)
        if current is None:
            return Outcome.MEMBERSHIP
        if delta.seq <= current.seq:
            return Outcome.DUPLICATE
        if delta.seq != current.seq + 1:
            return Outcome.GAP
        if self.host_id in delta.remove:
            del self._nets[delta.network_id]
            return Outcome.MEMBERSHIP
        members: dict[str, Member] = {m.host_id: m for m in current.members}
        for h in delta.remove:
            members.pop(h, None)
        for m in delta.upsert:
            members[m.host_id] = m
        settings = delta.network or current.network
        self._nets[delta.network_id] = protocol.Snapshot(
            network=replace(settings, seq=delta.seq),
            members=tuple(sorted(members.values(), key=lambda m: m.host_id)),
        )
        return Outcome.APPLIED

    def views(self) -> list[HostView]:
        return [host_view(self.host_id, s.network, s.members) for s in self.snapshots]

    def device(self, listen_port: int) -> DeviceConfig:
        return merge_views(self.views(), listen_port)

    def member(self, public_key: str) -> Member | None:
        """The member record with this WireGuard key (for names in ``status``)."""
        for s in self.snapshots:
            for m in s.members:
                if m.public_key == public_key:
                    return m
        return None

