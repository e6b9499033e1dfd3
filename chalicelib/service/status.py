"""Host status: reports from agents, and marking hosts offline when reports stop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..domain import ids, protocol
from ..domain.ids import HostId
from ..domain.models import HostStatus
from .deps import Deps, log
from .ports import PAGE_LIMIT_MAX, every_item

if TYPE_CHECKING:
    from .groups import Groups


class Status:
    def __init__(self, deps: Deps, groups: Groups | None = None) -> None:
        self._d = deps
        self._groups = groups

    def record(self, host_id: str, payload: dict[str, Any] | bytes | str) -> bool:
        """Store one status report of ``host_id``; ``False`` for a malformed report or unknown host.

        ``host_id`` comes from the topic the broker let the host publish on, so
        it is authenticated; anything in the payload is not trusted beyond shape.
        Whatever a host sends, a report outside the bounds of
        :func:`~chalicelib.domain.protocol.decode_status` costs one log line and is
        not stored, so a host record cannot outgrow those bounds.
        """
        if not ids.is_id("host", host_id):
            log.warning("status report for %s dropped: not a host id", protocol.short(host_id))
            return False
        try:
            msg = protocol.decode_status(payload)
        except protocol.ProtocolError as e:
            log.warning("status report of %s dropped: %s", host_id, e)
            return False
        if msg.offline:
            # Its agent stopped, or the broker lost it (its last will): offline now, whatever was
            # recorded up to now; what it last reported (endpoints, latency) stays, and so does
            # last_seen. A later report (its agent back) makes it online again.
            return self._d.store.mark_offline(host_id, self._d.clock.now() + 1)
        status = HostStatus(online=True, last_seen=self._d.clock.now(),
                            agent_version=msg.agent_version,
                            reported_endpoints=msg.endpoints, peers=msg.peers, latency=msg.latency,
                            direct=msg.direct, groups=msg.groups)
        stored = self._d.store.record_host_status(host_id, status)
        if stored and msg.groups and self._groups is not None:
            # issue 11: a member that says it is active at a higher epoch becomes the group's record; one
            # that says another member is down has the failover functions' correction run (election.correct)
            self._groups.record_reports(host_id, msg.groups)
        return stored

    def mark_offline(self) -> list[HostId]:
        """Mark offline every online host not heard from in ``offline_after`` seconds."""
        cutoff = self._d.clock.now() - self._d.settings.offline_after
        marked = []
        store = self._d.store
        for host in every_item(lambda cursor: store.list_hosts(PAGE_LIMIT_MAX, cursor)):
            seen = host.status.last_seen
            stale = host.status.online and (seen is None or seen < cutoff)
            if stale and self._d.store.mark_offline(host.id, cutoff):
                marked.append(host.id)
        return marked
