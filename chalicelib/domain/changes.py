"""The outbox: committed changes waiting to be broadcast, and the delta they become.

A write that changes what hosts see of a network stores, in the same transaction, one
:class:`PendingChange` per network it touches: which hosts changed, and whether the
network's own settings did. The use case makes these (its clock stamps them) and hands
them to the store with the write; the stream later turns a batch of them into one
:class:`~.protocol.Delta` with :func:`delta`, from the members as they are by then.

>>> c = PendingChange(ChangeId(1_700_000_000_000_000_000, "0a1b2c3d"), NetworkId("net_a"),
...                   (HostId("host_b"),))
>>> n = Network(NetworkId("net_a"), "office", "100.64.0.0/24", "fd00:1::/64", seq=4)
>>> delta(n, [c], {}).remove
('host_b',)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .ids import ClientId, HostId, NetworkId
from .models import Client, GatewayGroup, Member, Network
from .protocol import Delta

__all__ = ["ChangeId", "PendingChange", "new_changes", "touched_hosts", "touched_clients", "touched_groups",
           "delta", "NONCE_PATTERN"]

NONCE_PATTERN = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True, order=True)
class ChangeId:
    """A pending change's id: when it was made, then a random tie-break.

    ``created_ns`` is nanoseconds since the epoch from the service's clock
    (:meth:`~chalicelib.service.ports.Clock.now_ns`): ids order as their changes were
    made, as far as the clocks of the processes that made them agree. The ``nonce``
    (8 hex digits) keeps two changes of one nanosecond in different processes apart.
    A broadcast's cut-off compares ``created_ns`` alone.
    """

    created_ns: int
    nonce: str

    def __post_init__(self) -> None:
        if isinstance(self.created_ns, bool) or not isinstance(self.created_ns, int) or self.created_ns < 0:
            raise ValueError(f"a change's creation time is nanoseconds since the epoch, "
                             f"not {self.created_ns!r}")
        if not NONCE_PATTERN.fullmatch(self.nonce):
            raise ValueError(f"a change's nonce is 8 hex digits, not {self.nonce!r}")


@dataclass(frozen=True)
class PendingChange:
    """A committed change not yet broadcast: which hosts (members), clients and gateway groups
    of the network it touched, and whether the network's settings changed (then the delta
    carries the network)."""

    id: ChangeId
    network_id: NetworkId
    host_ids: tuple[HostId, ...] = ()
    settings: bool = False
    client_ids: tuple[ClientId, ...] = ()
    group_ids: tuple[str, ...] = ()  # issue 11


def new_changes(network_ids: Iterable[NetworkId], stamp: ChangeId, *, host_ids: tuple[HostId, ...] = (),
                settings: bool = False, client_ids: tuple[ClientId, ...] = (),
                group_ids: tuple[str, ...] = ()) -> tuple[PendingChange, ...]:
    """One pending change per network (in the order given, each once), all with id ``stamp``:
    what one write puts in its outbox. Their network ids tell them apart."""
    return tuple(PendingChange(stamp, n, host_ids, settings, client_ids, group_ids)
                 for n in dict.fromkeys(network_ids))


def touched_hosts(batch: Sequence[PendingChange]) -> tuple[HostId, ...]:
    """Every host a batch of changes names, once each, in the order first named."""
    return tuple(dict.fromkeys(h for change in batch for h in change.host_ids))


def touched_clients(batch: Sequence[PendingChange]) -> tuple[ClientId, ...]:
    """Every client a batch of changes names, once each, in the order first named."""
    return tuple(dict.fromkeys(c for change in batch for c in change.client_ids))


def touched_groups(batch: Sequence[PendingChange]) -> tuple[str, ...]:
    """Every gateway group a batch of changes names, once each, in the order first named."""
    return tuple(dict.fromkeys(g for change in batch for g in change.group_ids))


def delta(network: Network, batch: Sequence[PendingChange], members: Mapping[HostId, Member],
          clients: Mapping[ClientId, Client] | None = None,
          groups: Mapping[str, GatewayGroup] | None = None) -> Delta:
    """The delta that broadcasts ``batch`` at ``network.seq``.

    ``members`` are the current member records of the hosts the batch names (absent: the
    host is not a member any more, so the delta removes it), ``clients`` the same for the
    clients it names (``groups`` for gateway groups). Every record named is either upserted or
    removed, once, in the order first named; the network is carried when any change of the batch
    was a settings change.
    """
    hosts, named, grouped = touched_hosts(batch), touched_clients(batch), touched_groups(batch)
    clients, groups = clients or {}, groups or {}
    return Delta(
        network_id=network.id, seq=network.seq,
        upsert=tuple(members[h] for h in hosts if h in members),
        remove=tuple(h for h in hosts if h not in members),
        network=network if any(c.settings for c in batch) else None,
        clients=tuple(clients[c] for c in named if c in clients),
        remove_clients=tuple(c for c in named if c not in clients),
        groups=tuple(groups[g] for g in grouped if g in groups),
        remove_groups=tuple(g for g in grouped if g not in groups),
    )
