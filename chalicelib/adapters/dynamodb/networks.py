"""Networks and their registry.

Names and ranges must be unique across networks, and DynamoDB has no unique index:
every network's name and ranges also live in one registry item with a version, and
each create, update and delete moves that version in the same transaction as the
network itself, so two writers that read the same registry cannot both commit.
"""

from __future__ import annotations

from ...domain.changes import PendingChange
from ...domain.models import Member, Network
from ...errors import NotFoundError
from ...service.ports import NetworkRegistry, Page, StaleWriteError, outbox_by_network
from . import layout, mapping
from .base import StoreBase
from .tx import Tx, guard, guard_update, stale

__all__ = ["NetworkRecords"]


class NetworkRecords(StoreBase):
    def network_registry(self) -> NetworkRegistry:
        return mapping.registry(self._get(self._items.registry, layout.REGISTRY_PK, layout.REGISTRY_SK))

    def _registry_update(self, tx: Tx, version: int, actions: list) -> None:
        reg = self._items.registry
        if version == 0:
            cond = reg.pk.does_not_exist() | (reg.version == 0)
        else:
            cond = reg.version == version
        tx.update(
            reg(layout.REGISTRY_PK, layout.REGISTRY_SK),
            actions=[reg.version.set(version + 1), *actions],
            condition=cond,
            on_fail=stale("networks changed meanwhile; retry"),
        )

    def create_network(self, network: Network, registry_version: int) -> None:
        reg, net = self._items.registry, self._items.network
        entry = mapping.registry_entry(network)

        def build(tx: Tx) -> None:
            # A registry that does not exist yet needs its map before a nested set.
            nets_action = (
                reg.nets.set({network.id: entry})
                if registry_version == 0
                else reg.nets[network.id].set(entry)
            )
            self._registry_update(tx, registry_version, [nets_action])
            tx.put(
                mapping.network_item(self._items, network),
                condition=net.pk.does_not_exist(),
                on_fail=stale("network id collision; retry"),
            )

        self._transact(build)

    def update_network(self, network: Network, registry_version: int, *,
                       change: PendingChange | None) -> None:
        reg, net = self._items.registry, self._items.network
        if change is not None:
            outbox_by_network([change], [network.id])

        def build(tx: Tx) -> None:
            entry = mapping.registry_entry(network)
            self._registry_update(tx, registry_version, [reg.nets[network.id].set(entry)])
            tx.update(
                net(layout.network_pk(network.id), layout.META),
                actions=[
                    net.name.set(network.name),
                    net.listen_port.set(network.listen_port),
                    net.keepalive.set(network.keepalive),
                    net.mtu.set(network.mtu),
                ],
                condition=net.pk.exists(),
                on_fail=lambda: NotFoundError(f"network {network.id} does not exist"),
            )
            if change is not None:
                self._record_change(tx, change)

        self._transact(build)

    def get_network(self, network_id: str) -> Network | None:
        item = self._get(self._items.network, layout.network_pk(network_id), layout.META)
        return None if item is None else mapping.network(item)

    def list_networks(self, limit: int, cursor: str | None = None) -> Page[Network]:
        return self._page_by_kind(self._items.network, "network", layout.NETWORK_PREFIX, limit, cursor,
                                  mapping.network)

    def network_snapshot(self, network_id: str) -> tuple[Network, list[Member]] | None:
        network = self.get_network(network_id)  # seq first: members are then never older
        if network is None:
            return None
        items = self._query(self._items.member, layout.network_pk(network_id), layout.MEMBER_PREFIX)
        return network, [mapping.member(network_id, i) for i in items]

    def mark_network_deleting(self, network_id: str) -> None:
        net = self._items.network
        guard_update(
            net(layout.network_pk(network_id), layout.META),
            [net.deleting.set(True)],
            net.pk.exists(),
            NotFoundError(f"network {network_id} does not exist"),
        )

    def unmark_network_deleting(self, network_id: str) -> None:
        net = self._items.network
        guard_update(net(layout.network_pk(network_id), layout.META), [net.deleting.remove()],
                     net.pk.exists(), None)

    def delete_network(self, network_id: str, registry_version: int) -> None:
        reg, net = self._items.registry, self._items.network
        pk = layout.network_pk(network_id)
        stored = guard(lambda: list(net.query(pk, consistent_read=True)))
        leftovers = [i for i in stored if i.sk != layout.META]
        if any(i.sk.startswith(layout.MEMBER_PREFIX) for i in leftovers):
            raise StaleWriteError("the network still has members")
        # Clients hold key claims outside the partition: they are deleted first (delete_client).
        if any(i.sk.startswith(layout.CLIENT_PREFIX) for i in leftovers):
            raise StaleWriteError("the network still has clients")

        def build(tx: Tx) -> None:
            self._registry_update(tx, registry_version, [reg.nets[network_id].remove()])
            tx.delete(
                net(pk, layout.META),
                condition=net.pk.exists(),
                on_fail=lambda: NotFoundError(f"network {network_id} does not exist"),
            )

        self._transact(build)
        # What is left (broadcast bookkeeping) is meaningless without the network.
        self._delete_raw((i.pk, i.sk) for i in leftovers)
