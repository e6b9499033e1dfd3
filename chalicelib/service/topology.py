"""A network's records as the plan reads them, from the store: what the use cases check a
change against (:func:`chalicelib.domain.plan.check`) and compute views from."""

from __future__ import annotations

from ..domain.plan import NetworkRecords
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
