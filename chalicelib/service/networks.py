"""Networks: create with non-overlapping ranges, change settings (told to hosts), delete."""

from __future__ import annotations

from ..domain import ipam, validate
from ..domain.changes import PendingChange
from ..domain.ids import NetworkId, new_id
from ..domain.models import DEFAULT_KEEPALIVE, DEFAULT_LISTEN_PORT, DEFAULT_MTU, Network
from ..errors import ConflictError, NotFoundError, UnavailableError
from .clients import Clients
from .deps import Deps, log, retrying
from .hosts import Hosts
from .ports import PAGE_LIMIT_DEFAULT, NetworkRegistry, Page, StaleWriteError, page_limit
from .stream import Stream


def _check_settings(keepalive: int | None, mtu: int | None, listen_port: int | None) -> None:
    if keepalive is not None:
        validate.keepalive(keepalive)
    if mtu is not None:
        validate.mtu(mtu)
    if listen_port is not None:
        validate.port(listen_port, "listen_port")


def _check_name_free(registry: NetworkRegistry, name: str, network_id: str | None) -> None:
    for e in registry.entries:
        if e.name == name and e.id != network_id:
            raise ConflictError(f"a network named {name!r} already exists ({e.id})", code="name_taken")


class Networks:
    """Networks' use cases; each change that hosts see is broadcast by the change itself
    (``stream``), and members and remote-access clients leave a deleted network through
    ``hosts`` and ``clients``."""

    def __init__(self, deps: Deps, stream: Stream, hosts: Hosts, clients: Clients) -> None:
        self._d = deps
        self._stream = stream
        self._hosts = hosts
        self._clients = clients

    def create(self, *, name: str, ipv4_cidr: object, ipv6_cidr: object | None = None,
               listen_port: int | None = None, keepalive: int | None = None,
               mtu: int | None = None) -> Network:
        validate.name(name)
        v4 = str(ipam.parse_ipv4_range(ipv4_cidr))
        v6_given = str(ipam.parse_ipv6_range(ipv6_cidr)) if ipv6_cidr is not None else None
        _check_settings(keepalive, mtu, listen_port)
        network_id = NetworkId(new_id("network", self._d.rng))  # type: ignore[arg-type]

        def attempt() -> Network:
            reg = self._d.store.network_registry()
            _check_name_free(reg, name, None)
            clash = ipam.first_overlap(v4, ((e.name, e.ipv4_cidr) for e in reg.entries))
            if clash:
                raise ConflictError(f"ipv4_cidr {v4} overlaps network {clash!r}; choose a "
                                    "range no other network uses", code="range_overlap")
            v6 = v6_given
            if v6 is None:
                v6 = ipam.random_ula_64(self._d.rng)
                while ipam.first_overlap(v6, ((e.name, e.ipv6_cidr) for e in reg.entries)):
                    v6 = ipam.random_ula_64(self._d.rng)
            else:
                clash = ipam.first_overlap(v6, ((e.name, e.ipv6_cidr) for e in reg.entries))
                if clash:
                    raise ConflictError(f"ipv6_cidr {v6} overlaps network {clash!r}; choose a "
                                        "range no other network uses", code="range_overlap")
            network = Network(
                id=network_id, name=name, ipv4_cidr=v4, ipv6_cidr=v6,
                listen_port=listen_port or DEFAULT_LISTEN_PORT,
                keepalive=DEFAULT_KEEPALIVE if keepalive is None else keepalive,
                mtu=mtu or DEFAULT_MTU, seq=0, created_at=self._d.clock.now(),
            )
            self._d.store.create_network(network, reg.version)
            return network

        return retrying(self._d, "creating the network", attempt)

    def get(self, network_id: str) -> Network:
        network = self._d.store.get_network(network_id)
        if network is None:
            raise NotFoundError(f"network {network_id} does not exist")
        return network

    def list(self, limit: int = PAGE_LIMIT_DEFAULT, cursor: str | None = None) -> Page[Network]:
        """One page of networks in id order; see :meth:`Hosts.list <.hosts.Hosts.list>`."""
        return self._d.store.list_networks(page_limit(limit), cursor)

    def update(self, network_id: str, *, name: str | None = None, listen_port: int | None = None,
               keepalive: int | None = None, mtu: int | None = None) -> Network:
        """New name or settings; returns the network as stored now.

        A change hosts see (keepalive, MTU) is broadcast before this returns, and the
        network comes back at the seq of that broadcast. Settings that are already so
        change nothing: no write and no broadcast.
        """
        if name is not None:
            validate.name(name)
        _check_settings(keepalive, mtu, listen_port)

        def attempt() -> tuple[Network, tuple[PendingChange, ...]]:
            current = self.get(network_id)
            new = current.with_changes(
                name=current.name if name is None else name,
                listen_port=current.listen_port if listen_port is None else listen_port,
                keepalive=current.keepalive if keepalive is None else keepalive,
                mtu=current.mtu if mtu is None else mtu,
            )
            if new == current:
                return current, ()
            reg = self._d.store.network_registry()
            if new.name != current.name:
                _check_name_free(reg, new.name, network_id)
            hosts_see_it = (new.keepalive, new.mtu) != (current.keepalive, current.mtu)
            outbox = self._stream.new_changes([current.id], settings=True) if hosts_see_it else ()
            self._d.store.update_network(new, reg.version, change=outbox[0] if outbox else None)
            return new, outbox

        network, outbox = retrying(self._d, "updating the network", attempt)
        if not outbox:
            return network
        self._stream.send(outbox)
        return self.get(network_id)  # at the seq of the broadcast

    def delete(self, network_id: str, *, force: bool = False) -> None:
        """Delete a network; with members or remote-access clients only when ``force`` (they are
        removed cleanly first, clients before the gateways they use, and told so).

        New joins are stopped first, so a host cannot slip in while it is deleted.
        """
        store = self._d.store
        self.get(network_id)
        store.mark_network_deleting(network_id)
        try:
            snapshot = store.network_snapshot(network_id)
            members = snapshot[1] if snapshot else []
            clients = store.network_clients(network_id)
            if (members or clients) and not force:
                has = f"{len(members)} host(s)" + (f" and {len(clients)} client(s)" if clients else "")
                raise ConflictError(f"network {network_id} still has {has}; remove them first "
                                    "or delete with ?force=true", code="network_not_empty")
            if clients:
                self._clients.delete_all(network_id)
            if members:
                self._hosts.leave_network(network_id, [m.host_id for m in members])
            else:  # what an earlier write left pending goes out before the network goes
                self._stream.flush(network_id)
            retrying(self._d, "deleting the network",
                     lambda: store.delete_network(network_id, store.network_registry().version),
                     on=(StaleWriteError,))
        except BaseException:
            if store.get_network(network_id) is not None:
                store.unmark_network_deleting(network_id)
            raise
        try:  # the network is gone; its broker-side group and policy grant nothing any more
            self._d.identity.remove_network(NetworkId(network_id))
        except UnavailableError as e:
            log.warning("network %s deleted; its broker resources stay until teardown: %s", network_id, e)
