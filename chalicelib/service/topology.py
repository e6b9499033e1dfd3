"""A network's records as the plan reads them, from the store: what the use cases check a
change against (:func:`chalicelib.domain.plan.check`) and compute views from."""

from __future__ import annotations

from ..domain.plan import NetworkRecords
from ..errors import NotFoundError
from .ports import Store


def records(store: Store, network_id: str) -> NetworkRecords | None:
    """The network with its members and clients; None when it does not exist.

    Read in the snapshot's order (the network at its seq first), so the records may be newer
    than ``seq``, never older.
    """
    snapshot = store.network_snapshot(network_id)
    if snapshot is None:
        return None
    network, members = snapshot
    return NetworkRecords.of(network, members, store.network_clients(network_id))


def existing(store: Store, network_id: str) -> NetworkRecords:
    """:func:`records`, or :class:`~chalicelib.errors.NotFoundError` (a 404) when the network
    does not exist: what a use case acting on the network reads."""
    found = records(store, network_id)
    if found is None:
        raise NotFoundError(f"network {network_id} does not exist")
    return found


def used_addresses(records: NetworkRecords) -> set[str]:
    """Every overlay address the network's members and clients hold (one claim each): what a
    new host or client must not be given."""
    return ({a for m in records.members.values() for a in (m.ipv4, m.ipv6)}
            | {a for c in records.clients.values() for a in (c.ipv4, c.ipv6)})
