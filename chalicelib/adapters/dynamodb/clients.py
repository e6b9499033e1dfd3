"""Remote-access clients: devices without an agent that join a network through a gateway.

A client is one item in its network's partition (``CLIENT#<id>``). Its addresses are
claimed with the hosts' address claims (``IP#<address>``, ``owner`` the client's id) and
its WireGuard key with the hosts' key claims (``WGKEY#<key>``), so no host and no client
ever share an address in a network or a key anywhere. Each write puts or removes the item,
its claims and the pending change to broadcast in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...domain.changes import PendingChange
from ...domain.ids import ClientId
from ...domain.models import Client
from ...service.ports import Page, PublicKeyTakenError, outbox_by_network
from . import cursor as cursors
from . import layout, mapping
from .base import StoreBase
from .hosts import address_taken, network_gone
from .tx import Tx, guard, stale

__all__ = ["ClientRecords", "check_same_client", "check_outbox", "client_key_taken"]


def client_key_taken() -> Exception:
    return PublicKeyTakenError("this WireGuard public key is already used by another host or client; "
                               "generate a new key pair for this client")


def check_same_client(old: Client, new: Client) -> None:
    """Raise :class:`ValueError` unless ``new`` is ``old`` changed in what an update may change
    (not its id, network or addresses: their claims stay as they are)."""
    fixed = ("id", "network_id", "ipv4", "ipv6")
    if any(getattr(old, f) != getattr(new, f) for f in fixed):
        raise ValueError(f"an update of client {old.id} keeps its {', '.join(fixed)}")


def check_outbox(change: PendingChange, client: Client) -> None:
    """Raise :class:`ValueError` unless ``change`` is the one pending change of a write of
    ``client``: in its network, naming it (else the write would never be broadcast)."""
    outbox_by_network([change], [client.network_id])
    if client.id not in change.client_ids:
        raise ValueError(f"the pending change of a write of {client.id} names that client")


class ClientRecords(StoreBase):
    def create_client(self, client: Client, *, change: PendingChange) -> None:
        net, c, claim = self._items.network, self._items.client, self._items.claim
        check_outbox(change, client)
        pk = layout.network_pk(client.network_id)

        def build(tx: Tx) -> None:
            tx.check(net, pk, layout.META, condition=net.pk.exists() & net.deleting.does_not_exist(),
                     on_fail=network_gone(client.network_id))
            tx.put(mapping.client_item(self._items, client), condition=c.pk.does_not_exist(),
                   on_fail=stale("client id collision; retry"))
            for address in (client.ipv4, client.ipv6):
                tx.put(claim(pk, layout.ip_sk(address), owner=client.id), condition=claim.pk.does_not_exist(),
                       on_fail=address_taken(client.network_id, address))
            tx.put(claim(layout.wgkey_pk(client.public_key), layout.CLAIM, owner=client.id),
                   condition=claim.pk.does_not_exist(), on_fail=client_key_taken)
            self._record_change(tx, change)

        self._transact(build)

    def get_client(self, network_id: str, client_id: str) -> Client | None:
        item = self._get(self._items.client, layout.network_pk(network_id), layout.client_sk(client_id))
        return None if item is None else mapping.client(network_id, item)

    def list_clients(self, network_id: str, limit: int, cursor: str | None = None) -> Page[Client]:
        c, pk = self._items.client, layout.network_pk(network_id)
        start = None if cursor is None else cursors.decode_in_partition(cursor, "client", pk,
                                                                         layout.CLIENT_PREFIX)
        # One item more than asked, so the cursor is None exactly when nothing follows.
        items = guard(lambda: list(c.query(pk, c.sk.startswith(layout.CLIENT_PREFIX), consistent_read=True,
                                           limit=limit + 1, last_evaluated_key=start)))
        after = cursors.encode("client", pk, items[limit - 1].sk) if len(items) > limit else None
        return Page(tuple(mapping.client(network_id, i) for i in items[:limit]), after)

    def network_clients(self, network_id: str) -> list[Client]:
        items = self._query(self._items.client, layout.network_pk(network_id), layout.CLIENT_PREFIX)
        return [mapping.client(network_id, i) for i in items]

    def clients(self, network_id: str, client_ids: Sequence[str]) -> dict[ClientId, Client]:
        c, pk = self._items.client, layout.network_pk(network_id)
        keys = [(pk, layout.client_sk(i)) for i in dict.fromkeys(client_ids)]
        if not keys:
            return {}
        items = guard(lambda: list(c.batch_get(keys, consistent_read=True)))
        return {ClientId(i.id): mapping.client(network_id, i) for i in items}

    def update_client(self, old: Client, new: Client, *, change: PendingChange) -> None:
        c, claim = self._items.client, self._items.claim
        check_same_client(old, new)
        check_outbox(change, old)
        stored = new.with_changes(revision=old.revision + 1)

        def build(tx: Tx) -> None:
            tx.put(mapping.client_item(self._items, stored), condition=c.revision == old.revision,
                   on_fail=stale("the client changed meanwhile; retry"))
            if old.public_key != new.public_key:
                tx.put(claim(layout.wgkey_pk(new.public_key), layout.CLAIM, owner=new.id),
                       condition=claim.pk.does_not_exist(), on_fail=client_key_taken)
                tx.delete(claim(layout.wgkey_pk(old.public_key), layout.CLAIM),
                          condition=claim.owner == old.id, on_fail=stale("key claim changed; retry"))
            self._record_change(tx, change)

        self._transact(build)

    def delete_client(self, client: Client, *, change: PendingChange) -> None:
        c, claim = self._items.client, self._items.claim
        check_outbox(change, client)
        pk = layout.network_pk(client.network_id)

        def build(tx: Tx) -> None:
            tx.delete(c(pk, layout.client_sk(client.id)), condition=c.revision == client.revision,
                      on_fail=stale("the client changed meanwhile; retry"))
            for address in (client.ipv4, client.ipv6):
                tx.delete(claim(pk, layout.ip_sk(address)), condition=claim.owner == client.id,
                          on_fail=stale("address claim changed meanwhile; retry"))
            tx.delete(claim(layout.wgkey_pk(client.public_key), layout.CLAIM),
                      condition=claim.owner == client.id, on_fail=stale("key claim changed; retry"))
            self._record_change(tx, change)

        self._transact(build)
