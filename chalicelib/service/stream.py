"""The update stream: committed changes → one broadcast per network, in sequence.

Writers only record *pending changes* (which hosts of a network changed) in the
same transaction as the change itself. Whoever holds a network's publish lease
turns all pending changes into one delta at ``seq + 1``, built from the members
as they are now, publishes it and clears what it sent. So a burst of changes is
coalesced into few messages, sequence numbers never skip on success, a call
returns once its change is on the wire, and a crash leaves pending changes for
the next writer or the sweeper.

Each delta is also kept in a short log (the last ``delta_log_keep`` per network),
so an agent that reconnects asks only for what it missed: after an outage in
which nothing changed that is one cheap call, not a full snapshot per agent.
"""

from __future__ import annotations

import secrets
import time

from ..domain import protocol
from ..domain.ids import HostId
from ..errors import UnavailableError
from .deps import Deps, log
from .ports import PendingChange, StaleWriteError


class Stream:
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    def flush(self, network_id: str, *, wait: float = 20.0) -> int:
        """Broadcast what is pending in ``network_id`` up to now; returns messages published.

        The caller takes the network's lease (waiting with backoff while another
        caller holds it), sends everything pending as one delta (several for large
        bursts) until nothing older than its own call is left, and lets go. So its
        change is on the wire when it returns, sent by it or by an earlier holder
        that coalesced it; it never serves a burst that started after it. A holder
        that died is replaced when its lease expires (``publish_lease_ttl``). A
        waiter polls only the oldest pending change (one item), so a crowd of
        waiters does not slow the holder down. After ``wait`` seconds in all
        (below API Gateway's 29 s) it leaves the rest to the sweeper. The change
        is stored either way, so a database that does not answer now only delays
        the broadcast: it is logged, never raised to the caller whose write
        already committed.
        """
        try:
            return self._flush(network_id, wait)
        except UnavailableError as e:
            log.warning("broadcast of %s deferred to the sweeper: %s", network_id, e)
            return 0

    def _flush(self, network_id: str, wait: float) -> int:
        store, settings = self._d.store, self._d.settings
        horizon = f"PEND#{time.time_ns():020d}"  # pending ids sort by creation time
        owner = secrets.token_hex(8)
        backoff, deadline = 0.005, time.monotonic() + wait
        while not store.acquire_publish_lease(network_id, owner, self._d.clock.now(),
                                              settings.publish_lease_ttl):
            oldest = store.pending_changes(network_id, limit=1)
            if not oldest or oldest[0].id > horizon:
                return 0  # a holder coalesced our change into its broadcast
            if time.monotonic() > deadline:
                log.warning("broadcast of %s left to the sweeper after %.1fs", network_id, wait)
                return 0
            self._d.sleep(self._d.rng.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, 0.1)
        published = 0
        try:
            while (pending := store.pending_changes(network_id)) and pending[0].id <= horizon:
                self._publish(network_id, owner, pending[: settings.max_delta_hosts])
                published += 1
        except (UnavailableError, StaleWriteError) as e:
            log.warning("broadcast of %s deferred to the sweeper: %s", network_id, e)
        finally:
            store.release_publish_lease(network_id, owner)
        return published

    def _publish(self, network_id: str, owner: str, batch: list[PendingChange]) -> None:
        store = self._d.store
        host_ids = list(dict.fromkeys(h for p in batch for h in p.host_ids))
        network = store.advance_seq(network_id, owner)
        current = store.members(network_id, host_ids)
        delta = protocol.Delta(
            network_id=network_id, seq=network.seq,
            upsert=tuple(current[HostId(h)] for h in host_ids if h in current),
            remove=tuple(h for h in host_ids if h not in current),
            network=network if any(p.settings for p in batch) else None,
        )
        payload = protocol.encode(delta)
        settings = self._d.settings
        # Logged before it is sent: an agent that was away asks for what it missed
        # (Hosts.config with ``known``), and so does one that saw a gap.
        store.log_delta(network_id, delta.seq, payload, keep=settings.delta_log_keep,
                        expires_at=self._d.clock.now() + settings.delta_log_ttl)
        self._d.publisher.publish(protocol.network_topic(network_id), payload)
        store.clear_pending(network_id, [p.id for p in batch])

    def sweep(self) -> int:
        """Flush every network with pending changes (the scheduled safety net)."""
        return sum(self.flush(n) for n in self._d.store.networks_with_pending())
