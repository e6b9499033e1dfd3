"""Use cases: the only callers of the ports.

>>> svc = Service(deps)                                   # doctest: +SKIP
>>> net = svc.networks.create(name="office", ipv4_cidr="100.64.0.0/16")  # doctest: +SKIP
"""

from __future__ import annotations

from ..domain.ids import NetworkId
from ..domain.models import Network
from ..errors import ConflictError, UnavailableError
from .auth import Auth
from .deps import Deps, Settings, log, retrying
from .hosts import HostConfig, Hosts, NetworkConfig, Registration
from .keys import EnrollmentKeys
from .networks import Networks
from .orphans import Orphans
from .ports import StaleWriteError
from .status import Status
from .stream import Stream

__all__ = ["Service", "Deps", "Settings", "Registration", "NetworkConfig", "HostConfig"]


class Service:
    """The control plane's use cases, grouped by resource."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.auth = Auth(deps)
        self.stream = Stream(deps)
        self.networks = Networks(deps)
        self.keys = EnrollmentKeys(deps)
        self.hosts = Hosts(deps, self.stream)
        self.status = Status(deps)
        self.orphans = Orphans(deps)

    def ensure_admin_key(self, existing: str | None = None) -> str:
        return self.auth.ensure_admin_key(existing)

    def update_network(self, network_id: str, **changes: object) -> Network:
        network, notify = self.networks.update(network_id, **changes)  # type: ignore[arg-type]
        if notify:
            self.stream.flush(network_id)
            return self.networks.get(network_id)  # at the seq of the broadcast
        return network

    def delete_network(self, network_id: str, *, force: bool = False) -> None:
        """Delete a network; with members only when ``force`` (they are removed cleanly first).

        New joins are stopped first, so a host cannot slip in while it is deleted.
        """
        store = self.deps.store
        self.networks.get(network_id)
        store.mark_network_deleting(network_id)
        try:
            snapshot = store.network_snapshot(network_id)
            members = snapshot[1] if snapshot else []
            if members and not force:
                raise ConflictError(
                    f"network {network_id} still has {len(members)} host(s); remove them first "
                    "or delete with ?force=true", code="network_not_empty")
            for member in members:
                self.hosts.leave_network(member.host_id, network_id)
            self.stream.flush(network_id)  # members learn they were removed
            retrying(self.deps, "deleting the network",
                     lambda: store.delete_network(network_id, store.network_registry().version),
                     on=(StaleWriteError,))
        except BaseException:
            if store.get_network(network_id) is not None:
                store.unmark_network_deleting(network_id)
            raise
        try:  # the network is gone; its broker-side group and policy grant nothing any more
            self.deps.identity.remove_network(NetworkId(network_id))
        except UnavailableError as e:
            log.warning("network %s deleted; its broker resources stay until teardown: %s", network_id, e)
