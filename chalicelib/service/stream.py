"""The update stream: committed changes → one broadcast per network, in sequence.

Writers only record *pending changes* (which hosts of a network changed) in the
same transaction as the change itself. Each use case makes its own (an outbox:
:meth:`Stream.new_changes`), hands them to the store with its write and, once that
committed, sends them (:meth:`Stream.send`). Whoever holds a network's publish
lease turns all pending changes into one delta at ``seq + 1``, built from the
members as they are now (:func:`chalicelib.domain.changes.delta`), logs it,
publishes it and clears what it sent. So a burst of changes is coalesced into few
messages, sequence numbers never skip on success, a call returns once its change
is on the wire, and a crash leaves pending changes for the next writer or the
sweeper.

A pending change's id is its creation time in nanoseconds from the injected clock
(``Clock.now_ns``) and a random nonce; a broadcast's cut-off compares those times.
Seconds would be too coarse (a cut-off would take in everything of its second, and
pending changes would be read in no useful order within it); a per-network counter
in the database would be exact but make every write of a network update one item,
so concurrent registrations would conflict on it. A wall clock that is monotonic
within each process is enough: each caller's cut-off includes its own change (see
:meth:`Stream.flush`), and across processes the order only decides who sends what.

Each delta is also kept in a short log (the last ``delta_log_keep`` per network),
so an agent that reconnects asks only for what it missed: after an outage in
which nothing changed that is one cheap call, not a full snapshot per agent.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence

from ..domain import changes, protocol
from ..domain.changes import ChangeId, PendingChange
from ..domain.ids import ClientId, HostId, NetworkId
from ..errors import UnavailableError
from .deps import Deps, log
from .ports import StaleWriteError


class Stream:
    """Pending changes made (:meth:`new_changes`) and sent (:meth:`send`, :meth:`flush`, :meth:`sweep`)."""

    def __init__(self, deps: Deps) -> None:
        self._d = deps

    def new_changes(self, network_ids: Iterable[NetworkId], *, host_ids: tuple[HostId, ...] = (),
                    settings: bool = False, client_ids: tuple[ClientId, ...] = (),
                    group_ids: tuple[str, ...] = ()) -> tuple[PendingChange, ...]:
        """The outbox of one write: a pending change for each of ``network_ids``, made now.

        The caller hands them to the store with its write (which records them in the same
        transaction) and, once it committed, to :meth:`send`.
        """
        stamp = ChangeId(self._d.clock.now_ns(), f"{self._d.rng.getrandbits(32):08x}")
        return changes.new_changes(network_ids, stamp, host_ids=host_ids, settings=settings,
                                   client_ids=client_ids, group_ids=group_ids)

    def send(self, written: Sequence[PendingChange]) -> int:
        """Broadcast changes the caller committed, each network's once; returns messages
        published. Like :meth:`flush`, never raises: what it could not send, the sweeper does."""
        latest: dict[NetworkId, ChangeId] = {}
        for change in written:
            latest[change.network_id] = max(change.id, latest.get(change.network_id, change.id))
        return sum(self.flush(network_id, including=change_id) for network_id, change_id in latest.items())

    def flush(self, network_id: str, *, wait: float = 20.0, including: ChangeId | None = None) -> int:
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

        The cut-off is the clock's time at the call, or ``including``'s creation time
        when that is later: a caller's own change is always within its cut-off, whatever
        an injected clock does.
        """
        horizon = self._d.clock.now_ns()
        if including is not None:
            horizon = max(horizon, including.created_ns)
        try:
            return self._flush(network_id, wait, horizon)
        except UnavailableError as e:
            log.warning("broadcast of %s deferred to the sweeper: %s", network_id, e)
            return 0

    def _flush(self, network_id: str, wait: float, horizon: int) -> int:
        store, settings = self._d.store, self._d.settings
        owner = secrets.token_hex(8)
        backoff, deadline = 0.005, time.monotonic() + wait
        while not store.acquire_publish_lease(network_id, owner, self._d.clock.now(),
                                              settings.publish_lease_ttl):
            oldest = store.pending_changes(network_id, limit=1)
            if not oldest or oldest[0].id.created_ns > horizon:
                return 0  # a holder coalesced our change into its broadcast
            if time.monotonic() > deadline:
                log.warning("broadcast of %s left to the sweeper after %.1fs", network_id, wait)
                return 0
            self._d.sleep(self._d.rng.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, 0.1)
        published = 0
        try:
            while (pending := store.pending_changes(network_id)) and pending[0].id.created_ns <= horizon:
                self._publish(network_id, owner, pending[: settings.max_delta_hosts])
                published += 1
        except (UnavailableError, StaleWriteError) as e:
            log.warning("broadcast of %s deferred to the sweeper: %s", network_id, e)
        finally:
            store.release_publish_lease(network_id, owner)
        return published

    def _publish(self, network_id: str, owner: str, batch: list[PendingChange]) -> None:
        """One delta at the next seq: build it (pure), log it, publish it, clear its changes."""
        store, settings = self._d.store, self._d.settings
        # Renewing the lease with each seq: a long flush (a big burst, a slow database)
        # never outlives it, so nobody else publishes seq + 1 before this seq is out.
        network = store.advance_seq(network_id, owner, self._d.clock.now(), settings.publish_lease_ttl)
        grouped = changes.touched_groups(batch)
        delta = changes.delta(network, batch, store.members(network_id, changes.touched_hosts(batch)),
                              store.clients(network_id, changes.touched_clients(batch)),
                              store.groups(network_id, grouped) if grouped else None)
        payload = protocol.encode(delta)
        # Logged before it is sent: an agent that was away asks for what it missed
        # (Hosts.config with ``known``), and so does one that saw a gap.
        store.log_delta(network_id, delta.seq, payload, keep=settings.delta_log_keep,
                        expires_at=self._d.clock.now() + settings.delta_log_ttl)
        self._d.publisher.publish(protocol.network_topic(network_id), payload)
        store.clear_pending(network_id, [p.id for p in batch])

    def sweep(self) -> int:
        """Flush every network with pending changes (the scheduled safety net)."""
        return sum(self.flush(n) for n in self._d.store.networks_with_pending())
