"""Ports: what the use cases need from the world. Adapters implement them.

Each port has a real adapter in ``chalicelib/adapters`` and, where unit tests
need speed, an in-memory fake beside it. Errors below are raised by stores so
the service can tell a retryable race from a refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from ..domain.changes import ChangeId, PendingChange
from ..domain.election import Promise
from ..domain.groupkey import GroupKeyRecord
from ..domain.ids import ClientId, HostId, NetworkId
from ..domain.models import (
    AdminKey,
    Client,
    EnrollmentKey,
    GatewayGroup,
    Host,
    HostStatus,
    Member,
    MemberRole,
    Network,
)
from ..errors import ConflictError, InvalidInputError, SkymeshError, UnavailableError

__all__ = [
    "Clock",
    "Publisher",
    "IssuedCertificate",
    "HostIdentity",
    "RegistryEntry",
    "NetworkRegistry",
    "ChangeId",
    "PendingChange",
    "outbox_by_network",
    "PendingIdentity",
    "Store",
    "StaleWriteError",
    "KeyRefusedError",
    "AddressTakenError",
    "PublicKeyTakenError",
    "NetworkGoneError",
    "Page",
    "InvalidCursorError",
    "PAGE_LIMIT_DEFAULT",
    "PAGE_LIMIT_MAX",
    "PAGE_CURSOR_MAX",
    "PAGE_CURSOR_PATTERN",
    "page_limit",
    "every_item",
    "IdentityWithdrawnError",
    "MAX_ROLE_WRITES",
    "MAX_TRANSACTION_ITEMS",
    "released_roles",
    "KeyWrite",
    "PromiseWrite",
    "check_group_outbox",
    "AddressMover",
]

T = TypeVar("T")

# A page of a list route must stay below the smaller payload limit on its way out: Lambda's
# 6 MB synchronous response (API Gateway's own is 10 MB). The largest host a client can make
# (longest name, endpoints and tags, the largest status report the schema lets through) is
# about 44 KB of JSON, and Lambda carries the body as a JSON string, escaping every quote again:
# a page of 100 such hosts measures 5.05 MB. tests/functional/test_status_reports.py pins that a
# full page fits, so a field that makes hosts larger shows up there first. Networks and
# enrollment keys are far smaller. The default is the maximum so that a fleet of up to 100
# records still fits in one call.
PAGE_LIMIT_MAX = 100
PAGE_LIMIT_DEFAULT = 100
PAGE_CURSOR_MAX = 512  # characters; the cursors a store hands out are far shorter
PAGE_CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"  # URL-safe without escaping


class Clock(Protocol):
    def now(self) -> int:
        """Seconds since the epoch."""
        ...

    def now_ns(self) -> int:
        """Nanoseconds since the epoch, for ordering changes: each call in a process
        returns more than the one before (see :func:`chalicelib.clock.process_ns`)."""
        ...


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1; raises :class:`~chalicelib.errors.UnavailableError` on failure."""
        ...


class AddressMover(Protocol):
    """Moves a gateway group's floating address to its active member where the network does not let
    the member do it itself (issue 11): an AWS Elastic IP (``ec2:AssociateAddress``). In local mode
    and on premises the member adds the address and announces it (GARP/NA): nothing to do here."""

    def move(self, allocation_id: str, target: str) -> None:
        """Associate the address with ``target`` (``eni-…`` or ``i-…``), taking it from wherever it
        is; idempotent. :class:`~chalicelib.errors.NotFoundError` for an allocation or target that
        does not exist, :class:`~chalicelib.errors.UnavailableError` when it could not be done now."""
        ...

    def where(self, allocation_id: str) -> frozenset[str] | None:
        """What the address is associated with now (its network interface and instance ids), or
        None when it is not associated; the same errors as :meth:`move`. A read: the scheduled
        pass moves an address only when it is elsewhere (AWS charges remaps beyond a monthly quota)."""
        ...


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_pem: str
    certificate_id: str
    ca_pem: str


class HostIdentity(Protocol):
    """Certificates and broker permissions of hosts (AWS IoT, or the local CA + Mosquitto)."""

    @property
    def mqtt_endpoint(self) -> str: ...

    @property
    def mqtt_port(self) -> int: ...

    def issue(self, host_id: HostId, csr_pem: str) -> IssuedCertificate:
        """Sign ``csr_pem`` for ``host_id``; the certificate's key is the CSR's.

        Raises :class:`~chalicelib.errors.InvalidInputError` for a malformed CSR.
        """
        ...

    def set_networks(self, host_id: HostId, network_ids: Sequence[NetworkId]) -> None:
        """From now on the host may read exactly these networks' broadcasts."""
        ...

    def revoke(self, host_id: HostId, certificate_id: str) -> None:
        """The certificate can no longer connect and the host loses every permission."""
        ...

    def status_topic(self, host_id: HostId) -> str:
        """Where the host publishes its status reports (the agent is told at registration)."""
        ...

    def remove_network(self, network_id: NetworkId) -> None:
        """A deleted network's broker-side resources go (idempotent; no member is left)."""
        ...

    def discard(self, host_id: HostId, certificate_id: str | None) -> None:
        """Remove an identity that never became a host: its certificate can no longer
        connect and is deleted where the broker keeps certificates, and every broker-side
        resource of ``host_id`` goes (``certificate_id`` may be unknown: what is attached
        to the host is found).

        Idempotent: what is already gone is skipped. Raises
        :class:`~chalicelib.errors.UnavailableError` when something is left, so the
        caller tries again later.
        """
        ...


@dataclass(frozen=True)
class RegistryEntry:
    id: NetworkId
    name: str
    ipv4_cidr: str
    ipv6_cidr: str


@dataclass(frozen=True)
class NetworkRegistry:
    """Every network's name and ranges, read at one ``version`` for optimistic writes."""

    version: int
    entries: tuple[RegistryEntry, ...]


@dataclass(frozen=True)
class PendingIdentity:
    """A registration under way: an identity is (being) issued for ``host_id``, which is
    not committed yet. The commit removes it; the sweeper discards what it names when a
    registration died (``abandoned``: the sweeper claimed it, no commit can follow)."""

    host_id: HostId
    created_at: int
    certificate_id: str | None = None
    abandoned: bool = False


class StaleWriteError(ConflictError):
    """An optimistic write lost a race (or a transaction conflicted); read again and retry."""

    code = "conflict"


class KeyRefusedError(SkymeshError):
    status = 403
    code = "enrollment_key_refused"


class AddressTakenError(ConflictError):
    """The chosen overlay address was claimed concurrently; pick another and retry."""

    def __init__(self, network_id: str, address: str) -> None:
        super().__init__(f"address {address} in {network_id} is taken")
        self.network_id = network_id
        self.address = address


class PublicKeyTakenError(ConflictError):
    code = "public_key_in_use"


class NetworkGoneError(ConflictError):
    code = "network_gone"


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, in a stable order, and where the next one starts.

    ``cursor`` is opaque to callers; ``None`` means there is nothing after this page.
    Walking the cursors visits every record that exists during the whole walk exactly
    once; records created or deleted meanwhile may or may not appear.
    """

    items: tuple[T, ...]
    cursor: str | None


class InvalidCursorError(InvalidInputError):
    """A cursor that no list handed out (malformed, cut, or from another list)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"cursor is not valid here: {what}; start the list again without cursor")


def page_limit(limit: int) -> int:
    """``limit`` when it is a page size a list accepts; else :class:`InvalidInputError`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_LIMIT_MAX:
        raise InvalidInputError(f"limit must be a whole number from 1 to {PAGE_LIMIT_MAX}")
    return limit


def every_item(fetch: Callable[[str | None], Page[T]]) -> Iterator[T]:
    """Every item of a paged list, page by page (``fetch(cursor)`` returns the page at ``cursor``).

    For callers that must see all records (the offline sweep); only one page is held at a time.

    >>> list(every_item(lambda cursor: store.list_hosts(PAGE_LIMIT_MAX, cursor)))  # doctest: +SKIP
    """
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.items
        if page.cursor is None:
            return
        cursor = page.cursor


def outbox_by_network(changes: Sequence[PendingChange], network_ids: Iterable[str], *,
                      host_id: str | None = None) -> dict[NetworkId, PendingChange]:
    """The pending change of each network a write touches, from the ``changes`` it was given.

    A write records exactly one change in every network it touches (naming ``host_id``,
    for a write of a host) and none anywhere else. Anything else is the caller's mistake
    (a change that would never be broadcast, or a broadcast of a write never made), so a
    store raises :class:`ValueError` before it writes anything.
    """
    wanted = list(dict.fromkeys(NetworkId(n) for n in network_ids))
    by_network = {c.network_id: c for c in changes}
    if len(by_network) != len(changes) or set(by_network) != set(wanted):
        raise ValueError(f"a write of networks {wanted} takes one pending change for each of them, "
                         f"not changes of {[c.network_id for c in changes]}")
    if host_id is not None and any(host_id not in c.host_ids for c in changes):
        raise ValueError(f"the pending changes of a write of {host_id} name that host")
    return {n: by_network[n] for n in wanted}


class IdentityWithdrawnError(UnavailableError):
    """The registration took so long that the sweeper withdrew its certificate."""

    code = "registration_timed_out"


MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit of one TransactWriteItems
# Hosts whose roles one write changes (:meth:`Store.set_member_roles`): each is two items of a
# DynamoDB transaction (the host and its member record) and the change one more, within the 100
# items a transaction may hold.
MAX_ROLE_WRITES = 48


def released_roles(relay: HostId, host: Host, network_ids: Iterable[NetworkId]) -> Host:
    """``host`` no longer relayed by ``relay`` in ``network_ids``, and without the automatic pairs
    recorded on it that name ``relay`` (as peer or via: a pair does not hold without it), its other
    roles kept, one revision later: how a host that leaves those networks (or is deleted) releases it."""
    def release(r: MemberRole) -> MemberRole:
        return replace(r, relayed_by=None if r.relayed_by == relay else r.relayed_by,
                       pair_relays=tuple(p for p in r.pair_relays if relay not in p))
    roles = {n: (release(r) if n in set(network_ids) else r) for n, r in host.roles.items()}
    return replace(host, roles={n: r for n, r in roles.items() if r}, revision=host.revision + 1)


@dataclass(frozen=True)
class KeyWrite:
    """A gateway group's key record replaced (issue 11): written only if the stored one is still
    exactly ``old`` (None: there is none yet), else :class:`StaleWriteError` (re-read, decide again)."""

    old: GroupKeyRecord | None
    new: GroupKeyRecord


@dataclass(frozen=True)
class PromiseWrite:
    """The control plane's voter promise for a group replaced: written only if the stored one is
    still exactly ``old`` (None: none yet), else :class:`StaleWriteError` (a concurrent vote won)."""

    old: Promise | None
    new: Promise


def check_group_outbox(change: PendingChange, group: GatewayGroup) -> None:
    """Raise :class:`ValueError` unless ``change`` is the one pending change of a write of
    ``group``: in its network, naming it (else the write would never be broadcast)."""
    outbox_by_network([change], [group.network_id])
    if group.id not in change.group_ids:
        raise ValueError(f"the pending change of a write of {group.id} names that group")


class Store(Protocol):
    """Topology storage. Every multi-record change is one atomic write."""

    # --- admin keys -------------------------------------------------------------
    def put_admin_key(self, key: AdminKey) -> None: ...
    def get_admin_key(self, key_id: str) -> AdminKey | None: ...
    def list_admin_keys(self) -> list[AdminKey]: ...

    # --- networks ---------------------------------------------------------------
    def network_registry(self) -> NetworkRegistry: ...

    def create_network(self, network: Network, registry_version: int) -> None:
        """Raises :class:`StaleWriteError` when the registry moved past ``registry_version``."""
        ...

    def update_network(self, network: Network, registry_version: int, *,
                       change: PendingChange | None) -> None:
        """Store new settings/name; with ``change`` (a settings change of this network) also
        record it to broadcast, in the same write."""
        ...

    def get_network(self, network_id: str) -> Network | None: ...
    def list_networks(self, limit: int, cursor: str | None = None) -> Page[Network]:
        """At most ``limit`` networks in id order, from ``cursor`` on (None: the start).

        Raises :class:`InvalidCursorError` for a cursor this list did not hand out.
        """
        ...

    def network_snapshot(self, network_id: str) -> tuple[Network, list[Member]] | None:
        """The network (its ``seq`` read first) and then its members.

        Members may be newer than ``seq``; never older. Deltas re-applied on top
        are idempotent, so a reader that continues from ``seq`` misses nothing.
        """
        ...

    def mark_network_deleting(self, network_id: str) -> None:
        """Stop new members from joining (so a delete cannot race a join)."""
        ...

    def unmark_network_deleting(self, network_id: str) -> None: ...

    def delete_network(self, network_id: str, registry_version: int) -> None:
        """Remove the network's records. It must have no members and no clients left (delete
        them first, after :meth:`mark_network_deleting`): else :class:`StaleWriteError`."""
        ...

    # --- enrollment keys --------------------------------------------------------
    def put_enrollment_key(self, key: EnrollmentKey) -> None: ...
    def get_enrollment_key(self, key_id: str) -> EnrollmentKey | None: ...
    def list_enrollment_keys(self, limit: int, cursor: str | None = None) -> Page[EnrollmentKey]:
        """Like :meth:`list_networks`, for enrollment keys."""
        ...

    def revoke_enrollment_key(self, key_id: str) -> None: ...

    # --- registrations under way -----------------------------------------------
    def begin_identity(self, pending: PendingIdentity) -> None:
        """Record that an identity is about to be issued for ``pending.host_id``."""
        ...

    def note_certificate(self, host_id: HostId, certificate_id: str) -> None:
        """Add the issued certificate to the host's pending identity. Raises
        :class:`IdentityWithdrawnError` when the sweeper claimed it (or it is gone)."""
        ...

    def pending_identities(self) -> list[PendingIdentity]:
        """Every pending identity (possibly a moment stale: the sweeper re-checks)."""
        ...

    def abandon_identity(self, host_id: HostId) -> PendingIdentity | None:
        """Claim the pending identity for cleanup, unless its host was committed.

        Returns it as stored now (``abandoned``; no registration can commit it any
        more), or ``None`` when the host exists or there is no pending identity:
        then there is nothing to clean up.
        """
        ...

    def forget_identity(self, host_id: HostId) -> None:
        """Remove the pending identity record (idempotent)."""
        ...

    # --- hosts ------------------------------------------------------------------
    def register_host(self, host: Host, key: EnrollmentKey, now: int, *,
                      changes: Sequence[PendingChange]) -> None:
        """Create ``host`` with its addresses in every network, consuming one use of ``key``,
        remove its pending identity (:meth:`begin_identity`), which must still be there
        and not abandoned, and record ``changes`` (one per network, see
        :func:`outbox_by_network`) to broadcast.

        All or nothing. Raises :class:`KeyRefusedError` (revoked, expired, used up),
        :class:`AddressTakenError`, :class:`PublicKeyTakenError`,
        :class:`NetworkGoneError`, :class:`IdentityWithdrawnError` or
        :class:`StaleWriteError` (retry).
        """
        ...

    def get_host(self, host_id: str) -> Host | None: ...
    def list_hosts(self, limit: int, cursor: str | None = None) -> Page[Host]:
        """Like :meth:`list_networks`, for hosts."""
        ...

    def update_host(self, old: Host, new: Host, *, changes: Sequence[PendingChange]) -> None:
        """Replace ``old`` by ``new`` (same id and networks) and record ``changes`` (one in
        every network the host is in). Raises :class:`StaleWriteError` when ``old``
        is no longer current, :class:`PublicKeyTakenError` for a key in use."""
        ...

    def remove_host_from_network(self, host: Host, network_id: NetworkId, *, change: PendingChange,
                                 released: Sequence[Host] = ()) -> Host:
        """Drop one membership, free its addresses and record ``change``; returns the host
        as stored now. ``released``: the hosts ``host`` relays there (as read); the same write
        stores each as :func:`released_roles` makes it, conditional on its revision
        (:class:`StaleWriteError` when one changed), and ``change`` names them."""
        ...

    def delete_host(self, host: Host, *, changes: Sequence[PendingChange],
                    released: Sequence[Host] = ()) -> None:
        """Remove the host, its memberships and address claims, and record ``changes`` (one
        in every network it was in), in one write; ``released`` as in
        :meth:`remove_host_from_network`, in every network of ``host``."""
        ...

    def set_member_role(self, old: Host, new: Host, network_id: NetworkId, *, change: PendingChange) -> None:
        """Store ``new.roles`` (``new`` differs from ``old`` only in ``roles[network_id]``, its
        revision is ``old.revision + 1``) and the host's member record in ``network_id``, and
        record ``change``, in one write. An empty role is stored as none (no entry in ``roles``).
        Raises :class:`StaleWriteError` when ``old`` is no longer current, :class:`ValueError`
        when the host is not a member of ``network_id``. :meth:`update_host` keeps the stored
        roles; :meth:`remove_host_from_network` drops that network's."""
        ...

    def set_member_roles(self, olds: Sequence[Host], news: Sequence[Host], network_id: NetworkId, *,
                         change: PendingChange) -> None:
        """:meth:`set_member_role` for several hosts (``news[i]`` is ``olds[i]`` changed), all in
        one write with one ``change`` that names them all: every ``olds[i]`` must be current
        (else :class:`StaleWriteError`, nothing written). At most :data:`MAX_ROLE_WRITES` hosts,
        each once (else :class:`ValueError`)."""
        ...

    def record_host_status(self, host_id: str, status: HostStatus) -> bool:
        """Store a report; ``False`` when the host does not exist."""
        ...

    def mark_offline(self, host_id: str, seen_before: int) -> bool:
        """Set the host offline if it was last seen before ``seen_before``."""
        ...

    # issue 10: probes
    def host_statuses(self, host_ids: Sequence[str]) -> dict[HostId, HostStatus]:
        """The latest status of each of these hosts, without its reported peers (absent: no such
        host), in one batched read of the status alone: what the latency matrix of a network
        reads for all its members."""
        ...

    # --- remote-access clients ---------------------------------------------------
    # An item per client in its network; a claim of each of its addresses (the hosts' claims:
    # one address, one owner) and of its public key (the hosts' key claims: no host and no
    # client share a key).
    def create_client(self, client: Client, *, change: PendingChange) -> None:
        """Store a new client and record ``change``, in one write. Raises
        :class:`AddressTakenError`, :class:`PublicKeyTakenError`, :class:`NetworkGoneError`
        (missing or being deleted) or :class:`StaleWriteError` (id collision)."""
        ...

    def get_client(self, network_id: str, client_id: str) -> Client | None: ...

    def list_clients(self, network_id: str, limit: int, cursor: str | None = None) -> Page[Client]:
        """Like :meth:`list_networks`, for one network's clients."""
        ...

    def network_clients(self, network_id: str) -> list[Client]:
        """Every client of the network, in id order."""
        ...

    def clients(self, network_id: str, client_ids: Sequence[str]) -> dict[ClientId, Client]:
        """The current records of these clients (absent: deleted): what a delta carries."""
        ...

    def update_client(self, old: Client, new: Client, *, change: PendingChange) -> None:
        """Replace ``old`` by ``new`` (same id, network and addresses; revision
        ``old.revision + 1``; a new public key moves the key claim) and record ``change``.
        Raises :class:`StaleWriteError` when ``old`` is no longer current,
        :class:`PublicKeyTakenError` for a key in use."""
        ...

    def delete_client(self, client: Client, *, change: PendingChange) -> None:
        """Remove the client with its address and key claims and record ``change``. Raises
        :class:`StaleWriteError` when it changed meanwhile."""
        ...

    # --- HA gateway groups (issue 11) --------------------------------------------
    # An item per group in its network, one for its key record (public key, version and sealed
    # copies: nothing secret) and one for the control plane's voter promise.
    def create_group(self, group: GatewayGroup, *, change: PendingChange) -> None:
        """Store a new group and record ``change``, in one write. Raises :class:`NetworkGoneError`
        (missing or being deleted) or :class:`StaleWriteError` (id collision)."""
        ...

    def get_group(self, network_id: str, group_id: str) -> GatewayGroup | None: ...

    def network_groups(self, network_id: str) -> list[GatewayGroup]:
        """Every gateway group of the network, in id order."""
        ...

    def groups(self, network_id: str, group_ids: Sequence[str]) -> dict[str, GatewayGroup]:
        """The current records of these groups (absent: deleted): what a delta carries."""
        ...

    def update_group(self, old: GatewayGroup, new: GatewayGroup, *, change: PendingChange,
                     key: KeyWrite | None = None) -> None:
        """Replace ``old`` by ``new`` (same id and network; stored at revision ``old.revision + 1``)
        and record ``change``; with ``key`` also the key record, in the same write. Raises
        :class:`StaleWriteError` when ``old`` (or the key record) is no longer what the caller read.
        (The voter promise is written on its own, :meth:`put_group_promise`: a vote records no one.)"""
        ...

    def delete_group(self, group: GatewayGroup, *, change: PendingChange) -> None:
        """Remove the group with its key record and promise, and record ``change``. Raises
        :class:`StaleWriteError` when it changed meanwhile."""
        ...

    def get_group_key(self, network_id: str, group_id: str) -> GroupKeyRecord | None: ...

    def put_group_key(self, write: KeyWrite) -> None:
        """Store a key record that changes nothing hosts see (more sealed copies at the same
        version); :class:`StaleWriteError` when the stored record is not ``write.old``."""
        ...

    def get_group_promise(self, network_id: str, group_id: str) -> Promise | None: ...

    def put_group_promise(self, network_id: str, group_id: str, write: PromiseWrite) -> None:
        """Store the control plane's new voter promise (a renewal: nothing hosts see);
        :class:`StaleWriteError` when the stored promise is not ``write.old``."""
        ...

    # --- the update stream ------------------------------------------------------
    def acquire_publish_lease(self, network_id: str, owner: str, now: int, ttl: int) -> bool: ...
    def release_publish_lease(self, network_id: str, owner: str) -> None: ...
    def pending_changes(self, network_id: str, limit: int | None = None) -> list[PendingChange]:
        """The changes recorded and not cleared, as written, in id order: oldest first (at
        most ``limit``)."""
        ...

    def advance_seq(self, network_id: str, owner: str, now: int, ttl: int) -> Network:
        """seq += 1 while holding the lease, which it renews until ``now + ttl``; returns
        the network at its new seq. A holder that keeps publishing keeps its lease, so no
        other caller can take it and publish a later seq before this one is out."""
        ...

    def members(self, network_id: str, host_ids: Sequence[str]) -> dict[HostId, Member]:
        """The current member records of these hosts (absent: not a member now)."""
        ...

    def clear_pending(self, network_id: str, change_ids: Sequence[ChangeId]) -> None:
        """Forget these pending changes of the network (ids already gone: nothing happens)."""
        ...
    def networks_with_pending(self) -> list[NetworkId]: ...

    def network_head(self, network_id: str) -> tuple[Network, bool] | None:
        """The network (at its seq) and whether a change of it waits to be broadcast, in one
        read; None when it does not exist. What a catch-up needs to know, cheaply."""
        ...

    def log_delta(self, network_id: str, seq: int, payload: bytes, *, expires_at: int, keep: int) -> None:
        """Keep the delta broadcast at ``seq`` for agents that catch up, and forget the one at
        ``seq - keep`` (older ones also go when ``expires_at`` passes)."""
        ...

    def deltas_since(self, network_id: str, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """The logged deltas after ``seq``, oldest first, at most ``limit``: ``(seq, payload)``.

        The log may have holes (a delta that was never logged, or is gone): callers check
        that the sequence numbers follow each other."""
        ...
