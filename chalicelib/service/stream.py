"""The update stream: committed changes → one broadcast per network, in sequence.

Writers only record *pending changes* (which hosts of a network changed) in the
same transaction as the change itself. Whoever holds a network's publish lease
turns all pending changes into one delta at ``seq + 1``, built from the members
as they are now, publishes it and clears what it sent. So a burst of changes is
coalesced into few messages, sequence numbers never skip on success, and a
crash leaves pending changes for the next writer or the sweeper.
"""

from __future__ import annotations

import secrets

from ..domain import protocol
from ..domain.ids import HostId
from ..errors import UnavailableError
from .deps import Deps, log
from .ports import StaleWriteError


class Stream:
    def __init__(self, deps: Deps) -> None:
        self._d = deps

    def flush(self, network_id: str) -> int:
        """Broadcast what is pending in ``network_id``; returns the messages published.

        Returns early when another caller holds the lease: that caller will see
        our pending changes before it lets go (it re-checks after releasing).
        """
        store = self._d.store
        owner = secrets.token_hex(8)
        published = 0
        while True:
            if not store.acquire_publish_lease(network_id, owner, self._d.clock.now(),
                                               self._d.settings.publish_lease_ttl):
                return published
            try:
                while pending := store.pending_changes(network_id):
                    batch = pending[: self._d.settings.max_delta_hosts]
                    host_ids = list(dict.fromkeys(h for p in batch for h in p.host_ids))
                    network = store.advance_seq(network_id, owner)
                    current = store.members(network_id, host_ids)
                    delta = protocol.Delta(
                        network_id=network_id, seq=network.seq,
                        upsert=tuple(current[HostId(h)] for h in host_ids if h in current),
                        remove=tuple(h for h in host_ids if h not in current),
                        network=network if any(p.settings for p in batch) else None,
                    )
                    self._d.publisher.publish(protocol.network_topic(network_id),
                                              protocol.encode(delta))
                    published += 1
                    store.clear_pending(network_id, [p.id for p in batch])
            except (UnavailableError, StaleWriteError) as e:
                # Kept pending; the sweeper or the next change publishes it.
                log.warning("broadcast of %s deferred: %s", network_id, e)
                return published
            finally:
                store.release_publish_lease(network_id, owner)
            if not store.pending_changes(network_id):
                return published

    def sweep(self) -> int:
        """Flush every network with pending changes (the scheduled safety net)."""
        return sum(self.flush(n) for n in self._d.store.networks_with_pending())
