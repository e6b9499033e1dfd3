"""The :class:`~chalicelib.service.ports.Store` port on DynamoDB.

Every rule that must hold under concurrency is a condition on a write:
address and WireGuard-key claims are ``attribute_not_exists`` puts, key uses
are a conditional decrement, network names and ranges move under a registry
version, and each of these travels in the same transaction as the records it
protects.

One class, assembled from one part per concern:

- :mod:`.tx` transactions, and what a failed condition or a database error means;
- :mod:`.layout` where each record lives (its keys); :mod:`.items` the item classes;
- :mod:`.mapping` items ↔ domain records;
- :mod:`.networks`, :mod:`.keys` (enrollment and admin keys), :mod:`.hosts` (with
  registrations under way and members' roles), :mod:`.clients` (remote-access clients),
  :mod:`.groups` (HA gateway groups) and :mod:`.stream` (publish lease, pending changes, seq): the
  port's methods, per resource.

:class:`~chalicelib.adapters.memory_store.MemoryStore` is its in-memory twin; both
pass ``tests/contract/test_store_contract.py``.
"""

from __future__ import annotations

from .clients import ClientRecords
from .groups import GroupRecords
from .hosts import HostRecords
from .keys import KeyRecords
from .networks import NetworkRecords
from .stream import StreamRecords

__all__ = ["DynamoStore"]


class DynamoStore(NetworkRecords, KeyRecords, HostRecords, ClientRecords, GroupRecords, StreamRecords):
    """Topology storage in one DynamoDB table (see :mod:`.items` for the layout).

    >>> store = DynamoStore("skymesh", endpoint_url=None, region="eu-west-1")  # doctest: +SKIP
    """
