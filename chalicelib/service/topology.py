"""A network's records as the plan reads them, from the store: what the use cases check a
change against (:func:`chalicelib.domain.plan.check`) and compute views from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ..domain import autorelay
from ..domain.ids import HostId
from ..domain.models import Host, MemberRole
from ..domain.plan import NetworkRecords
from ..errors import ConflictError, NotFoundError
from .ports import MAX_ROLE_WRITES, StaleWriteError, Store


def records(store: Store, network_id: str) -> NetworkRecords | None:
    """The network with its members, clients and gateway groups; None when it does not exist.

    Read in the snapshot's order (the network at its seq first), so the records may be newer
    than ``seq``, never older.
    """
    snapshot = store.network_snapshot(network_id)
    if snapshot is None:
        return None
    network, members = snapshot
    return NetworkRecords.of(network, members, store.network_clients(network_id),
                             store.network_groups(network_id))


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


def as_read(store: Store, records: NetworkRecords, host_ids: Iterable[HostId]) -> list[Host]:
    """The stored hosts ``host_ids``, each still a member of the records' network with the role
    the records hold for it: what a write of new roles computed from ``records`` replaces.
    :class:`StaleWriteError` when one changed since (the caller's retry reads again)."""
    nid = records.network.id
    out = []
    for hid in host_ids:
        host = store.get_host(hid)
        stored = None if host is None or nid not in host.addresses else host.roles.get(nid, MemberRole())
        if host is None or stored != records.members[hid].role:
            raise StaleWriteError(f"host {hid} changed since network {nid} was read")
        out.append(host)
    return out


def release_pairs(store: Store, after: NetworkRecords,
                  changing: frozenset[str] = frozenset()) -> tuple[NetworkRecords, list[tuple[Host, Host]]]:
    """The records as a change leaves them (``after``) without the automatic pairs the change makes
    not hold (:func:`autorelay.release`), and the members that releases, as stored now and with
    their pairs dropped: what the change writes in the same write. ``changing``: the hosts the
    change writes anyway (their new roles in ``after`` already; the caller drops the pairs from
    those itself, from the returned records). :class:`StaleWriteError` when a member changed since
    the records were read (the caller's retry reads again)."""
    released, owners = autorelay.release(after)
    nid = after.network.id
    if len(owners) >= MAX_ROLE_WRITES:
        raise ConflictError(f"this change ends the automatic relays of {len(owners)} members of network "
                            f"{nid}, more than one write holds ({MAX_ROLE_WRITES - 1}); the failover "
                            "schedule moves or ends such pairs itself: try again once it has",
                            code="too_many_pairs")
    hosts = as_read(store, after, [hid for hid in sorted(owners) if hid not in changing])
    out = [(h, h.with_role(nid, replace(after.members[h.id].role, pair_relays=owners[h.id]))) for h in hosts]
    return released, out
