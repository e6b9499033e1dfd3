"""The :class:`~chalicelib.service.ports.Store` port on DynamoDB.

Every rule that must hold under concurrency is a condition on a write:
address and WireGuard-key claims are ``attribute_not_exists`` puts, key uses
are a conditional decrement, network names and ranges move under a registry
version, and each of these travels in the same transaction as the records it
protects.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError
from pynamodb.connection import Connection
from pynamodb.exceptions import (
    DeleteError,
    GetError,
    PutError,
    PynamoDBException,
    QueryError,
    TransactWriteError,
    UpdateError,
)
from pynamodb.transactions import TransactWrite

from ...domain.ids import EnrollmentKeyId, HostId, NetworkId
from ...domain.models import (
    AdminKey,
    EnrollmentKey,
    Host,
    HostStatus,
    Member,
    Network,
    PeerStatus,
)
from ...errors import NotFoundError, UnavailableError
from ...service.ports import (
    AddressTakenError,
    IdentityWithdrawnError,
    KeyRefusedError,
    NetworkGoneError,
    NetworkRegistry,
    Page,
    PendingChange,
    PendingIdentity,
    PublicKeyTakenError,
    RegistryEntry,
    StaleWriteError,
)
from . import cursor as cursors
from .items import Items, bind

__all__ = ["DynamoStore"]

ErrorFactory = Callable[[], Exception]


class _Tx:
    """A TransactWrite that remembers, for each operation, the error its failed condition means.

    PynamoDB sends condition checks, then deletes, puts and updates; DynamoDB's
    cancellation reasons come back in that wire order.
    """

    _ORDER = ("check", "delete", "put", "update")

    def __init__(self, tw: TransactWrite) -> None:
        self._tw = tw
        self._errors: dict[str, list[ErrorFactory]] = {k: [] for k in self._ORDER}

    def check(self, cls: Any, pk: str, sk: str, *, condition: Any, on_fail: ErrorFactory) -> None:
        self._tw.condition_check(cls, pk, sk, condition=condition)
        self._errors["check"].append(on_fail)

    def delete(self, item: Any, condition: Any = None, *, on_fail: ErrorFactory) -> None:
        self._tw.delete(item, condition=condition)
        self._errors["delete"].append(on_fail)

    def put(self, item: Any, condition: Any = None, *, on_fail: ErrorFactory) -> None:
        self._tw.save(item, condition=condition)
        self._errors["put"].append(on_fail)

    def update(self, item: Any, actions: list, condition: Any = None, *, on_fail: ErrorFactory) -> None:
        self._tw.update(item, actions=actions, condition=condition)
        self._errors["update"].append(on_fail)

    def commit(self) -> None:
        self._tw._commit()

    def errors_in_wire_order(self) -> list[ErrorFactory]:
        return [e for k in self._ORDER for e in self._errors[k]]


REGISTRY_PK, REGISTRY_SK = "REGISTRY", "NETWORKS"
META = "META"


def _net_pk(network_id: str) -> str:
    return f"NET#{network_id}"


def _member_sk(host_id: str) -> str:
    return f"MEMBER#{host_id}"


def _delta_sk(seq: int) -> str:
    return f"DELTA#{seq:012d}"  # zero-padded: sort order is seq order


def _ip_sk(address: str) -> str:
    return f"IP#{address}"


def _wgkey_pk(public_key: str) -> str:
    return f"WGKEY#{public_key}"


def _identity_pk(host_id: str) -> str:
    return f"IDENTITY#{host_id}"


PENDING = "PENDING"


def _withdrawn() -> Exception:
    return IdentityWithdrawnError(
        "registration took too long and its certificate was withdrawn; register again")


def _stale(message: str) -> Callable[[], Exception]:
    return lambda: StaleWriteError(message)


def _error_code(e: PynamoDBException) -> str | None:
    """The DynamoDB error code, None when there was no answer (a timeout, a reset).

    PynamoDB's own ``cause_response_code`` raises AttributeError in that case.
    """
    response = getattr(e.cause, "response", None) or {}
    return response.get("Error", {}).get("Code")


def _error_message(e: PynamoDBException) -> str | None:
    response = getattr(e.cause, "response", None) or {}
    return response.get("Error", {}).get("Message")


def _change_id() -> str:
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


class DynamoStore:
    """Topology storage in one DynamoDB table (see :mod:`.items` for the layout)."""

    def __init__(self, table: str, *, endpoint_url: str | None, region: str) -> None:
        self._items: Items = bind(table, endpoint_url, region)
        self._connection = Connection(
            region=region,
            host=endpoint_url,
            max_pool_connections=64,
            connect_timeout_seconds=5,
            read_timeout_seconds=10,
        )

    # ------------------------------------------------------------------ helpers
    def _transact(self, build: Callable[[_Tx], None]) -> None:
        """Run one transaction; a failed condition raises the error its operation names."""
        tx = _Tx(TransactWrite(connection=self._connection))
        try:
            build(tx)
            tx.commit()
        except TransactWriteError as e:
            reasons = e.cancellation_reasons or []
            for reason, make_error in zip(reasons, tx.errors_in_wire_order(), strict=False):
                if reason is not None and reason.code == "ConditionalCheckFailed":
                    raise make_error() from None
            codes = {r.code for r in reasons if r is not None}
            if "TransactionConflict" in codes or _error_code(e) in (
                "TransactionConflictException",
                "TransactionInProgressException",
            ):
                raise StaleWriteError("a concurrent change touched the same records; retry") from None
            raise UnavailableError(
                f"the database refused the write: {_error_message(e) or e}"
            ) from None
        except BotoCoreError as e:
            raise UnavailableError(f"the database did not answer: {e}") from None

    @staticmethod
    def _guard(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (
            GetError,
            QueryError,
            PutError,
            UpdateError,
            DeleteError,
            PynamoDBException,
            BotoCoreError,
        ) as e:
            raise UnavailableError(f"the database did not answer: {e}") from None

    def _get(self, cls: Any, pk: str, sk: str) -> Any | None:
        def run() -> Any | None:
            try:
                return cls.get(pk, sk, consistent_read=True)
            except cls.DoesNotExist:
                return None

        return self._guard(run)

    def _query(self, cls: Any, pk: str, prefix: str, limit: int | None = None) -> list[Any]:
        return self._guard(lambda: list(cls.query(pk, cls.sk.startswith(prefix), consistent_read=True,
                                                  limit=limit)))

    def _by_kind(self, cls: Any, kind: str) -> list[Any]:
        return self._guard(lambda: list(cls.by_kind.query(kind)))

    def _page_by_kind(self, cls: Any, kind: str, prefix: str, limit: int,
                      cursor: str | None) -> tuple[list[Any], str | None]:
        """At most ``limit`` items of ``kind`` after ``cursor``, in ``pk`` order, and the next cursor.

        The items' ``pk`` is ``prefix`` + an id of the same kind (``ids.ID_PREFIXES``).

        One item more than asked is read, so the cursor is ``None`` exactly when nothing
        follows (DynamoDB's own LastEvaluatedKey is set whenever a page is full).
        """
        start = None if cursor is None else cursors.decode(cursor, kind, prefix, META)
        items = self._guard(lambda: list(cls.by_kind.query(kind, limit=limit + 1, last_evaluated_key=start)))
        if len(items) <= limit:
            return items, None
        last = items[limit - 1]
        return items[:limit], cursors.encode(kind, last.pk, last.sk)

    # ------------------------------------------------------------ conversions
    @staticmethod
    def _network(item: Any) -> Network:
        return Network(
            id=NetworkId(item.id),
            name=item.name,
            ipv4_cidr=item.ipv4_cidr,
            ipv6_cidr=item.ipv6_cidr,
            listen_port=int(item.listen_port),
            keepalive=int(item.keepalive),
            mtu=int(item.mtu),
            seq=int(item.seq),
            created_at=int(item.created_at),
        )

    @staticmethod
    def _member(network_id: str, item: Any) -> Member:
        return Member(
            network_id=NetworkId(network_id),
            host_id=HostId(item.host_id),
            name=item.name,
            public_key=item.public_key,
            ipv4=item.ipv4,
            ipv6=item.ipv6,
            listen_port=int(item.listen_port),
            endpoints=tuple(item.endpoints or ()),
        )

    @staticmethod
    def _host(item: Any) -> Host:
        addresses = {NetworkId(k): (v[0], v[1]) for k, v in item.addresses.as_dict().items()}
        peers = tuple(
            PeerStatus(
                public_key=p["key"],
                latest_handshake_age=None if p.get("handshake_age") is None else int(p["handshake_age"]),
                rx_bytes=int(p.get("rx", 0)),
                tx_bytes=int(p.get("tx", 0)),
            )
            for p in (item.peers or ())
        )
        return Host(
            id=HostId(item.id),
            name=item.name,
            public_key=item.public_key,
            listen_port=int(item.listen_port),
            endpoints=tuple(item.endpoints or ()),
            addresses=addresses,
            certificate_id=item.certificate_id,
            token_hash=item.token_hash,
            enrollment_key_id=(EnrollmentKeyId(item.enrollment_key_id) if item.enrollment_key_id else None),
            observed_endpoint=item.observed_endpoint,
            tags=tuple(item.tags or ()),
            created_at=int(item.created_at),
            revision=int(item.revision),
            status=HostStatus(
                online=bool(item.online),
                last_seen=None if item.last_seen is None else int(item.last_seen),
                agent_version=item.agent_version,
                reported_endpoints=tuple(item.reported_endpoints or ()),
                peers=peers,
            ),
        )

    @staticmethod
    def _key(item: Any) -> EnrollmentKey:
        return EnrollmentKey(
            id=EnrollmentKeyId(item.id),
            networks=tuple(NetworkId(n) for n in item.networks),
            token_hash=item.token_hash,
            uses_total=None if item.uses_total is None else int(item.uses_total),
            uses_left=None if item.uses_left is None else int(item.uses_left),
            expires_at=None if item.expires_at is None else int(item.expires_at),
            unlimited=bool(item.unlimited),
            tags=tuple(item.tags or ()),
            revoked=bool(item.revoked),
            created_at=int(item.created_at),
        )

    def _member_item(self, m: Member) -> Any:
        return self._items.member(
            _net_pk(m.network_id),
            _member_sk(m.host_id),
            host_id=m.host_id,
            name=m.name,
            public_key=m.public_key,
            ipv4=m.ipv4,
            ipv6=m.ipv6,
            listen_port=m.listen_port,
            endpoints=list(m.endpoints),
        )

    def _pending_item(self, network_id: str, host_ids: Iterable[str], settings: bool = False) -> Any:
        return self._items.pending(
            _net_pk(network_id),
            f"PEND#{_change_id()}",
            kind="pending",
            network_id=network_id,
            host_ids=list(host_ids),
            settings=settings,
        )

    def _host_item(self, h: Host) -> Any:
        return self._items.host(
            f"HOST#{h.id}",
            META,
            kind="host",
            id=h.id,
            name=h.name,
            public_key=h.public_key,
            listen_port=h.listen_port,
            endpoints=list(h.endpoints),
            addresses={k: [v[0], v[1]] for k, v in h.addresses.items()},
            certificate_id=h.certificate_id,
            token_hash=h.token_hash,
            enrollment_key_id=h.enrollment_key_id,
            observed_endpoint=h.observed_endpoint,
            tags=list(h.tags),
            created_at=h.created_at,
            revision=h.revision,
        )

    # ---------------------------------------------------------------- admin keys
    def put_admin_key(self, key: AdminKey) -> None:
        item = self._items.admin(
            f"ADMIN#{key.id}",
            META,
            kind="admin_key",
            id=key.id,
            token_hash=key.token_hash,
            name=key.name,
            created_at=key.created_at,
        )
        self._guard(lambda: item.save(self._items.admin.pk.does_not_exist()))

    def get_admin_key(self, key_id: str) -> AdminKey | None:
        item = self._get(self._items.admin, f"ADMIN#{key_id}", META)
        return None if item is None else AdminKey(item.id, item.token_hash, item.name, int(item.created_at))

    def list_admin_keys(self) -> list[AdminKey]:
        return [
            AdminKey(i.id, i.token_hash, i.name, int(i.created_at))
            for i in self._by_kind(self._items.admin, "admin_key")
        ]

    # ------------------------------------------------------------------ networks
    def network_registry(self) -> NetworkRegistry:
        item = self._get(self._items.registry, REGISTRY_PK, REGISTRY_SK)
        if item is None:
            return NetworkRegistry(version=0, entries=())
        nets = item.nets.as_dict()
        entries = tuple(
            RegistryEntry(NetworkId(nid), v["name"], v["ipv4"], v["ipv6"]) for nid, v in sorted(nets.items())
        )
        return NetworkRegistry(version=int(item.version), entries=entries)

    def _registry_update(self, tx: _Tx, version: int, actions: list) -> None:
        reg = self._items.registry
        if version == 0:
            cond = reg.pk.does_not_exist() | (reg.version == 0)
        else:
            cond = reg.version == version
        tx.update(
            reg(REGISTRY_PK, REGISTRY_SK),
            actions=[reg.version.set(version + 1), *actions],
            condition=cond,
            on_fail=_stale("networks changed meanwhile; retry"),
        )

    def create_network(self, network: Network, registry_version: int) -> None:
        reg, net = self._items.registry, self._items.network
        entry = {"name": network.name, "ipv4": network.ipv4_cidr, "ipv6": network.ipv6_cidr}

        def build(tx: _Tx) -> None:
            # A registry that does not exist yet needs its map before a nested set.
            nets_action = (
                reg.nets.set({network.id: entry})
                if registry_version == 0
                else reg.nets[network.id].set(entry)
            )
            self._registry_update(tx, registry_version, [nets_action])
            tx.put(
                net(
                    _net_pk(network.id),
                    META,
                    kind="network",
                    id=network.id,
                    name=network.name,
                    ipv4_cidr=network.ipv4_cidr,
                    ipv6_cidr=network.ipv6_cidr,
                    listen_port=network.listen_port,
                    keepalive=network.keepalive,
                    mtu=network.mtu,
                    seq=network.seq,
                    created_at=network.created_at,
                ),
                condition=net.pk.does_not_exist(),
                on_fail=_stale("network id collision; retry"),
            )

        self._transact(build)

    def update_network(self, network: Network, registry_version: int, *, notify: bool) -> None:
        reg, net = self._items.registry, self._items.network
        entry = {"name": network.name, "ipv4": network.ipv4_cidr, "ipv6": network.ipv6_cidr}

        def build(tx: _Tx) -> None:
            self._registry_update(tx, registry_version, [reg.nets[network.id].set(entry)])
            tx.update(
                net(_net_pk(network.id), META),
                actions=[
                    net.name.set(network.name),
                    net.listen_port.set(network.listen_port),
                    net.keepalive.set(network.keepalive),
                    net.mtu.set(network.mtu),
                ],
                condition=net.pk.exists(),
                on_fail=lambda: NotFoundError(f"network {network.id} does not exist"),
            )
            if notify:
                tx.put(
                    self._pending_item(network.id, (), settings=True),
                    on_fail=_stale("change id collision; retry"),
                )

        self._transact(build)

    def get_network(self, network_id: str) -> Network | None:
        item = self._get(self._items.network, _net_pk(network_id), META)
        return None if item is None else self._network(item)

    def list_networks(self, limit: int, cursor: str | None = None) -> Page[Network]:
        items, after = self._page_by_kind(self._items.network, "network", "NET#", limit, cursor)
        return Page(tuple(self._network(i) for i in items), after)

    def network_snapshot(self, network_id: str) -> tuple[Network, list[Member]] | None:
        network = self.get_network(network_id)  # seq first: members are then never older
        if network is None:
            return None
        items = self._query(self._items.member, _net_pk(network_id), "MEMBER#")
        return network, [self._member(network_id, i) for i in items]

    def mark_network_deleting(self, network_id: str) -> None:
        net = self._items.network
        self._guard_update(
            net(_net_pk(network_id), META),
            [net.deleting.set(True)],
            net.pk.exists(),
            NotFoundError(f"network {network_id} does not exist"),
        )

    def unmark_network_deleting(self, network_id: str) -> None:
        net = self._items.network
        self._guard_update(net(_net_pk(network_id), META), [net.deleting.remove()], net.pk.exists(), None)

    def _guard_update(self, item: Any, actions: list, condition: Any, on_condition: Exception | None) -> bool:
        try:
            item.update(actions=actions, condition=condition)
            return True
        except UpdateError as e:
            if _error_code(e) == "ConditionalCheckFailedException":
                if on_condition is not None:
                    raise on_condition from None
                return False
            raise UnavailableError(f"the database refused the write: {e}") from None
        except BotoCoreError as e:
            raise UnavailableError(f"the database did not answer: {e}") from None

    def delete_network(self, network_id: str, registry_version: int) -> None:
        reg, net = self._items.registry, self._items.network
        leftovers = [
            i
            for i in self._guard(lambda: list(net.query(_net_pk(network_id), consistent_read=True)))
            if i.sk != META
        ]
        if any(i.sk.startswith("MEMBER#") for i in leftovers):
            raise StaleWriteError("the network still has members")

        def build(tx: _Tx) -> None:
            self._registry_update(tx, registry_version, [reg.nets[network_id].remove()])
            tx.delete(
                net(_net_pk(network_id), META),
                condition=net.pk.exists(),
                on_fail=lambda: NotFoundError(f"network {network_id} does not exist"),
            )

        self._transact(build)
        # What is left (broadcast bookkeeping) is meaningless without the network.
        self._delete_raw((i.pk, i.sk) for i in leftovers)

    def _delete_raw(self, keys: Iterable[tuple[str, str]]) -> None:
        claim = self._items.claim

        def run() -> None:
            with claim.batch_write() as batch:
                for pk, sk in keys:
                    batch.delete(claim(pk, sk))

        self._guard(run)

    # ---------------------------------------------------------- enrollment keys
    def put_enrollment_key(self, key: EnrollmentKey) -> None:
        item = self._items.key(
            f"KEY#{key.id}",
            META,
            kind="enrollment_key",
            id=key.id,
            networks=list(key.networks),
            token_hash=key.token_hash,
            uses_total=key.uses_total,
            uses_left=key.uses_left,
            expires_at=key.expires_at,
            unlimited=key.unlimited,
            tags=list(key.tags),
            revoked=key.revoked,
            created_at=key.created_at,
        )
        self._guard(lambda: item.save(self._items.key.pk.does_not_exist()))

    def get_enrollment_key(self, key_id: str) -> EnrollmentKey | None:
        item = self._get(self._items.key, f"KEY#{key_id}", META)
        return None if item is None else self._key(item)

    def list_enrollment_keys(self, limit: int, cursor: str | None = None) -> Page[EnrollmentKey]:
        items, after = self._page_by_kind(self._items.key, "enrollment_key", "KEY#", limit, cursor)
        return Page(tuple(self._key(i) for i in items), after)

    def revoke_enrollment_key(self, key_id: str) -> None:
        k = self._items.key
        self._guard_update(
            k(f"KEY#{key_id}", META),
            [k.revoked.set(True)],
            k.pk.exists(),
            NotFoundError(f"enrollment key {key_id} does not exist"),
        )

    # ---------------------------------------------------- registrations under way
    @staticmethod
    def _pending_identity(item: Any) -> PendingIdentity:
        return PendingIdentity(
            host_id=HostId(item.host_id),
            created_at=int(item.created_at),
            certificate_id=item.certificate_id or None,
            abandoned=bool(item.abandoned),
        )

    def begin_identity(self, pending: PendingIdentity) -> None:
        ident = self._items.identity
        item = ident(_identity_pk(pending.host_id), PENDING, kind="pending_identity",
                     host_id=pending.host_id, created_at=pending.created_at,
                     certificate_id=pending.certificate_id)
        self._guard(lambda: item.save(ident.pk.does_not_exist()))

    def note_certificate(self, host_id: HostId, certificate_id: str) -> None:
        ident = self._items.identity
        self._guard_update(ident(_identity_pk(host_id), PENDING),
                           [ident.certificate_id.set(certificate_id)],
                           ident.pk.exists() & ident.abandoned.does_not_exist(), _withdrawn())

    def pending_identities(self) -> list[PendingIdentity]:
        return [self._pending_identity(i) for i in self._by_kind(self._items.identity, "pending_identity")]

    def abandon_identity(self, host_id: HostId) -> PendingIdentity | None:
        h, ident = self._items.host, self._items.identity

        class _Nothing(Exception):
            pass

        def build(tx: _Tx) -> None:
            # The host's absence and the claim in one transaction: a registration that
            # commits first makes this fail; one that comes later finds the claim.
            tx.check(h, f"HOST#{host_id}", META, condition=h.pk.does_not_exist(), on_fail=_Nothing)
            tx.update(ident(_identity_pk(host_id), PENDING), actions=[ident.abandoned.set(True)],
                      condition=ident.pk.exists(), on_fail=_Nothing)

        try:
            self._transact(build)
        except _Nothing:
            return None
        item = self._get(ident, _identity_pk(host_id), PENDING)
        return None if item is None else self._pending_identity(item)

    def forget_identity(self, host_id: HostId) -> None:
        item = self._items.identity(_identity_pk(host_id), PENDING)
        self._guard(item.delete)

    # -------------------------------------------------------------------- hosts
    def register_host(self, host: Host, key: EnrollmentKey, now: int) -> None:
        k, net, claim = self._items.key, self._items.network, self._items.claim

        def refused() -> Exception:
            current = self.get_enrollment_key(key.id)
            reason = current.refusal(now) if current else "this enrollment key was deleted"
            return KeyRefusedError(reason or "this enrollment key cannot be used now")

        def build(tx: _Tx) -> None:
            usable = k.pk.exists() & (k.revoked == False)  # noqa: E712 (a DynamoDB condition)
            if key.expires_at is not None:
                usable = usable & (k.expires_at > now)
            if key.uses_left is not None:
                tx.update(
                    k(f"KEY#{key.id}", META),
                    actions=[k.uses_left.add(-1)],
                    condition=usable & (k.uses_left > 0),
                    on_fail=refused,
                )
            else:
                tx.check(k, f"KEY#{key.id}", META, condition=usable, on_fail=refused)
            tx.put(
                self._host_item(host),
                condition=self._items.host.pk.does_not_exist(),
                on_fail=_stale("host id collision; retry"),
            )
            # The host and its certificate become one: the pending identity goes, and a
            # sweeper that withdrew the certificate (abandoned) stops the commit.
            ident = self._items.identity
            tx.delete(ident(_identity_pk(host.id), PENDING),
                      condition=ident.pk.exists() & ident.abandoned.does_not_exist(),
                      on_fail=_withdrawn)
            tx.put(
                claim(_wgkey_pk(host.public_key), "CLAIM", owner=host.id),
                condition=claim.pk.does_not_exist(),
                on_fail=lambda: PublicKeyTakenError(
                    "this WireGuard public key is already used by another host; "
                    "generate a new key pair for this host"
                ),
            )
            for network_id, (ipv4, ipv6) in sorted(host.addresses.items()):
                pk = _net_pk(network_id)
                tx.check(
                    net,
                    pk,
                    META,
                    condition=net.pk.exists() & net.deleting.does_not_exist(),
                    on_fail=lambda nid=network_id: NetworkGoneError(
                        f"network {nid} was deleted or is being deleted"
                    ),
                )
                for address in (ipv4, ipv6):
                    tx.put(
                        claim(pk, _ip_sk(address), owner=host.id),
                        condition=claim.pk.does_not_exist(),
                        on_fail=lambda nid=network_id, a=address: AddressTakenError(nid, a),
                    )
                self._member_ops(tx, host, network_id)

        self._transact(build)

    def get_host(self, host_id: str) -> Host | None:
        item = self._get(self._items.host, f"HOST#{host_id}", META)
        return None if item is None else self._host(item)

    def list_hosts(self, limit: int, cursor: str | None = None) -> Page[Host]:
        items, after = self._page_by_kind(self._items.host, "host", "HOST#", limit, cursor)
        return Page(tuple(self._host(i) for i in items), after)

    def update_host(self, old: Host, new: Host) -> None:
        h, claim = self._items.host, self._items.claim
        key_changed = old.public_key != new.public_key

        def build(tx: _Tx) -> None:
            tx.update(
                h(f"HOST#{old.id}", META),
                actions=[
                    h.name.set(new.name),
                    h.public_key.set(new.public_key),
                    h.listen_port.set(new.listen_port),
                    h.endpoints.set(list(new.endpoints)),
                    h.observed_endpoint.set(new.observed_endpoint)
                    if new.observed_endpoint
                    else h.observed_endpoint.remove(),
                    h.tags.set(list(new.tags)),
                    h.revision.set(old.revision + 1),
                ],
                condition=h.revision == old.revision,
                on_fail=_stale("the host changed meanwhile; retry"),
            )
            if key_changed:
                tx.put(
                    claim(_wgkey_pk(new.public_key), "CLAIM", owner=new.id),
                    condition=claim.pk.does_not_exist(),
                    on_fail=lambda: PublicKeyTakenError(
                        "this WireGuard public key is already used by another host"
                    ),
                )
                tx.delete(
                    claim(_wgkey_pk(old.public_key), "CLAIM"), on_fail=_stale("key claim changed; retry")
                )
            for network_id in new.network_ids:
                self._member_ops(tx, new, network_id)

        self._transact(build)

    def _member_ops(self, tx: _Tx, host: Host, network_id: NetworkId) -> None:
        """Write the host's member record in the network and record the change to broadcast."""
        tx.put(self._member_item(host.member_of(network_id)),
               on_fail=_stale("member write conflicted; retry"))
        tx.put(self._pending_item(network_id, (host.id,)),
               on_fail=_stale("change id collision; retry"))

    def _leave_ops(self, tx: _Tx, host: Host, network_id: str) -> None:
        claim = self._items.claim
        pk = _net_pk(network_id)
        tx.delete(
            self._items.member(pk, _member_sk(host.id)), on_fail=_stale("member changed meanwhile; retry")
        )
        for address in host.addresses[NetworkId(network_id)]:
            tx.delete(
                claim(pk, _ip_sk(address)),
                condition=claim.owner == host.id,
                on_fail=_stale("address claim changed meanwhile; retry"),
            )
        tx.put(self._pending_item(network_id, (host.id,)), on_fail=_stale("change id collision; retry"))

    def remove_host_from_network(self, host: Host, network_id: NetworkId) -> Host:
        h = self._items.host
        addresses = {k: v for k, v in host.addresses.items() if k != network_id}

        def build(tx: _Tx) -> None:
            tx.update(
                h(f"HOST#{host.id}", META),
                actions=[
                    h.addresses.set({k: [v[0], v[1]] for k, v in addresses.items()}),
                    h.revision.set(host.revision + 1),
                ],
                condition=h.revision == host.revision,
                on_fail=_stale("the host changed meanwhile; retry"),
            )
            self._leave_ops(tx, host, network_id)

        self._transact(build)
        return Host(**{**host.__dict__, "addresses": addresses, "revision": host.revision + 1})

    def delete_host(self, host: Host) -> None:
        h, claim = self._items.host, self._items.claim

        def build(tx: _Tx) -> None:
            tx.delete(
                h(f"HOST#{host.id}", META),
                condition=h.revision == host.revision,
                on_fail=_stale("the host changed meanwhile; retry"),
            )
            tx.delete(
                claim(_wgkey_pk(host.public_key), "CLAIM"),
                condition=claim.owner == host.id,
                on_fail=_stale("key claim changed; retry"),
            )
            for network_id in host.network_ids:
                self._leave_ops(tx, host, network_id)

        self._transact(build)

    def record_host_status(self, host_id: str, status: HostStatus) -> bool:
        h = self._items.host
        peers = [
            {"key": p.public_key, "handshake_age": p.latest_handshake_age, "rx": p.rx_bytes, "tx": p.tx_bytes}
            for p in status.peers
        ]
        return self._guard_update(
            h(f"HOST#{host_id}", META),
            [
                h.online.set(status.online),
                h.last_seen.set(status.last_seen),
                h.agent_version.set(status.agent_version),
                h.reported_endpoints.set(list(status.reported_endpoints)),
                h.peers.set(peers),
            ],
            h.pk.exists(),
            None,
        )

    def mark_offline(self, host_id: str, seen_before: int) -> bool:
        h = self._items.host
        return self._guard_update(
            h(f"HOST#{host_id}", META),
            [h.online.set(False)],
            h.pk.exists()
            & (h.online == True)  # noqa: E712
            & (h.last_seen.does_not_exist() | (h.last_seen < seen_before)),
            None,
        )

    # ------------------------------------------------------------ update stream
    def acquire_publish_lease(self, network_id: str, owner: str, now: int, ttl: int) -> bool:
        net = self._items.network
        return self._guard_update(
            net(_net_pk(network_id), META),
            [net.lease_owner.set(owner), net.lease_until.set(now + ttl)],
            net.pk.exists() & (net.lease_until.does_not_exist() | (net.lease_until < now)),
            None,
        )

    def release_publish_lease(self, network_id: str, owner: str) -> None:
        net = self._items.network
        self._guard_update(
            net(_net_pk(network_id), META),
            [net.lease_owner.remove(), net.lease_until.remove()],
            net.lease_owner == owner,
            None,
        )

    def pending_changes(self, network_id: str, limit: int | None = None) -> list[PendingChange]:
        return [
            PendingChange(
                id=i.sk,
                network_id=NetworkId(network_id),
                host_ids=tuple(HostId(x) for x in i.host_ids),
                settings=bool(i.settings),
            )
            for i in self._query(self._items.pending, _net_pk(network_id), "PEND#", limit=limit)
        ]

    def advance_seq(self, network_id: str, owner: str) -> Network:
        net = self._items.network

        def run() -> Network:
            item = net(_net_pk(network_id), META)
            try:
                item.update(actions=[net.seq.add(1)], condition=net.lease_owner == owner)
            except UpdateError as e:
                if _error_code(e) == "ConditionalCheckFailedException":
                    raise StaleWriteError("the publish lease was lost") from None
                raise
            return self._network(item)

        return self._guard(run)

    def members(self, network_id: str, host_ids: Sequence[str]) -> dict[HostId, Member]:
        m = self._items.member
        pk = _net_pk(network_id)
        keys = [(pk, _member_sk(h)) for h in dict.fromkeys(host_ids)]
        items = self._guard(lambda: list(m.batch_get(keys, consistent_read=True)))
        return {HostId(i.host_id): self._member(network_id, i) for i in items}

    def clear_pending(self, network_id: str, change_ids: Sequence[str]) -> None:
        self._delete_raw((_net_pk(network_id), cid) for cid in change_ids)

    def networks_with_pending(self) -> list[NetworkId]:
        return sorted({NetworkId(i.network_id) for i in self._by_kind(self._items.pending, "pending")})

    def log_delta(self, network_id: str, seq: int, payload: bytes, *, expires_at: int, keep: int) -> None:
        d, pk = self._items.delta, _net_pk(network_id)

        def run() -> None:
            with d.batch_write() as batch:
                batch.save(d(pk, _delta_sk(seq), payload=payload.decode(), expires_at=expires_at))
                if seq - keep > 0:
                    batch.delete(d(pk, _delta_sk(seq - keep)))

        self._guard(run)

    def deltas_since(self, network_id: str, seq: int, limit: int) -> list[tuple[int, bytes]]:
        d = self._items.delta
        items = self._guard(lambda: list(d.query(
            _net_pk(network_id), d.sk.between(_delta_sk(seq + 1), _delta_sk(10**12 - 1)),
            consistent_read=True, limit=limit)))
        return [(int(i.sk.removeprefix("DELTA#")), i.payload.encode()) for i in items]
