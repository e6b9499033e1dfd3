"""This host's part in its gateway groups (issue 11): the key, the group interface and the election.

The runner owns one :class:`GroupMembership` and calls :meth:`GroupMembership.sync` after every
apply (and when its retry is due); it converges on the Tracker's groups of every network where this
host is a serving member (:meth:`~chalicelib.domain.plan.NetworkRecords.group_gateways`):

- **the key** (docs/ha-groups.md): read the key record (``GET …/key``: ciphertext only), open this
  host's copy (:func:`agent.groupkey.open_entry`) when its sender is a member of the group as the
  Tracker knows it (a copy from anyone else is refused), make the key when the control plane asks
  this host to (``make``: the first key, or a requested rotation) and seal to the members in
  ``seal_to`` while it holds the current key; sealing only to members at the WireGuard key the mesh
  knows for them. The opened key is kept in the state directory like ``wg.key``
  (:meth:`agent.state.StateDir.save_group_key`, mode 0600), never logged, removed when the host
  leaves the group. It is read again when a broadcast names the group, and every few seconds while
  this host lacks the current version or a call failed;
- **only while it holds the current version**: the group interface (:class:`agent.floating.GroupDataPlane`,
  one per group, :func:`group_ifname`) with the group's clients, and the group in the agent's one
  :class:`agent.election_loop.ElectionLoop` (members' overlay addresses, the prober's verdicts, the
  data plane's activate/deactivate, the client endpoints both ways, the control plane's record);
- a role change calls ``on_role`` (from the election's thread): the runner then reports at once
  and forwards for the groups it serves (:meth:`forwarded_interfaces`);
- leaving a group or the group gone: withdraw, remove the interface, forget the key; :meth:`stop`
  (a clean stop) withdraws every group and leaves the interfaces, as the mesh device stays.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib.domain import protocol
from chalicelib.domain.errors import InvalidInputError
from chalicelib.domain.groupkey import GroupKeyRecord, SealContext, SealedEntry
from chalicelib.domain.ids import GroupId, HostId
from chalicelib.domain.models import GatewayGroup
from chalicelib.domain.plan import NetworkRecords

from .api import ApiError, Unreachable
from .converge import Tracker
from .election_loop import GroupConfig, GroupStatus, Hooks, peer_addresses
from .groupkey import GroupKeyError, new_group_key, open_entry, seal
from .keys import wireguard_public_key
from .state import GroupKey, StateDir

__all__ = ["GroupMembership", "group_ifname", "KeyApi", "DataPlane", "Election", "RETRY_MIN", "RETRY_MAX"]

log = logging.getLogger("skymesh.agent.groups")

RETRY_MIN, RETRY_MAX = 2.0, 30.0  # seconds between key reads while it lacks the current key


def group_ifname(group_id: str, interface: str = "") -> str:
    """The group interface's name on a member: ``smg`` + 12 hex digits of a hash of the group id and
    the member's mesh ``interface`` (15 characters, the kernel's limit): unique per group, the same
    after a restart, and different for members whose agents share one ``/var/run/wireguard`` (network
    namespaces or containers on one machine: wireguard-go's UAPI sockets are named after the
    interface there)."""
    return "smg" + hashlib.sha256(f"{interface}/{group_id}".encode()).hexdigest()[:12]


class KeyApi(Protocol):
    """The key routes of :class:`agent.api.ApiClient`."""

    def group_key(self, network_id: str, group_id: str) -> dict[str, Any]: ...
    def put_group_key(self, network_id: str, group_id: str, upload: Mapping[str, Any]) -> dict[str, Any]: ...


class DataPlane(Protocol):
    """:class:`agent.floating.GroupDataPlane`'s surface."""

    @property
    def is_active(self) -> bool: ...
    def ensure(self, group_private_key: str, clients: Mapping[str, Iterable[str]], listen_port: int,
               floating_ip: str) -> None: ...
    def activate(self) -> None: ...
    def deactivate(self) -> None: ...
    def close(self) -> None: ...
    def client_endpoints(self) -> dict[str, str]: ...
    def learn_endpoints(self, endpoints: Mapping[str, str]) -> None: ...


class Election(Protocol):
    """:class:`agent.election_loop.ElectionLoop`'s surface."""

    def start(self) -> None: ...
    def stop(self, timeout: float = ..., *, withdraw: bool = ...) -> None: ...
    def set_group(self, config: GroupConfig, hooks: Hooks) -> None: ...
    def remove_group(self, group_id: str) -> None: ...
    def set_record(self, group_id: str, active: str | None, epoch: int) -> None: ...
    def status(self) -> tuple[GroupStatus, ...]: ...


@dataclass
class _Served:
    """One group this host serves: what it last configured, to change only what differs."""

    network_id: str
    plane: DataPlane | None = None
    config: GroupConfig | None = None
    plane_args: tuple[object, ...] | None = field(default=None, repr=False)  # holds the private key
    seen: tuple[GatewayGroup, int] | None = None  # the group (and its mark) as last read with its key
    retry_at: float = 0.0
    backoff: float = RETRY_MIN


class GroupMembership:
    """Every gateway group this host is a member of (see the module docstring).

    ``api``: the key routes; ``interface``: the mesh interface (:func:`group_ifname`);
    ``planes(ifname)``: a new data plane; ``election()``: the agent's one election loop, made (and
    started) when the first group needs it; ``up()``: the members the prober sees up now
    (thread-safe: read from the election's thread); ``on_role()``: called from the election's
    thread after each activate/deactivate.
    """

    def __init__(self, state_dir: StateDir, host_id: str, wg_private_key: str, api: KeyApi, *,
                 planes: Callable[[str], DataPlane], election: Callable[[], Election],
                 up: Callable[[], Iterable[str]] = tuple, on_role: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, interface: str = "") -> None:
        self.dir = state_dir
        self.interface = interface  # the mesh interface's name: the group interfaces' are derived from it
        self.host_id = HostId(host_id)
        self._wg_key = wg_private_key
        self._wg_public = wireguard_public_key(wg_private_key)
        self._api = api
        self._make_plane = planes
        self._make_election = election
        self._up = up
        self._on_role = on_role
        self._clock = clock
        self._election: Election | None = None
        self._served: dict[str, _Served] = {}
        self._keys: dict[str, GroupKey] = {}
        for gid in state_dir.group_key_ids():  # a restart serves at once from the key it kept
            if (k := state_dir.load_group_key(gid)) is not None:
                self._keys[gid] = k

    def bind(self, *, up: Callable[[], Iterable[str]], on_role: Callable[[], None]) -> None:
        """The runner's prober verdicts and role-change callback (set before the first :meth:`sync`)."""
        self._up, self._on_role = up, on_role

    # ------------------------------------------------------------------------------- reads
    def held(self, group_id: str) -> GroupKey | None:
        """The key this host holds for ``group_id`` (any version)."""
        return self._keys.get(group_id)

    def next_due(self) -> float | None:
        """When :meth:`sync` has a retry to make (monotonic), None for none."""
        due = [s.retry_at for s in self._served.values() if s.retry_at]
        return min(due) if due else None

    def active_interfaces(self) -> tuple[str, ...]:
        """The group interfaces of the groups this host is the active member of now."""
        return tuple(sorted(group_ifname(gid, self.interface) for gid, s in self._served.items()
                            if s.plane is not None and s.plane.is_active))

    def forwarded_interfaces(self) -> tuple[str, ...]:
        """The group interfaces our nftables table forwards: every group this host serves, active or
        standby. A standby's interface carries nothing (no routes to its clients, no endpoints), and
        forwarding it beforehand means a member that takes over forwards and masquerades the clients'
        first packets (a flow conntrack saw unmasqueraded would stay broken while it lasts)."""
        return tuple(sorted(group_ifname(gid, self.interface) for gid, s in self._served.items()
                            if s.plane is not None))

    def reports(self) -> tuple[protocol.GroupReport, ...]:
        """The status report's ``groups`` rows (the election's, one per group it runs)."""
        if self._election is None:
            return ()
        return tuple(protocol.GroupReport(GroupId(r.id), r.role, r.epoch,
                                          tuple(sorted(HostId(h) for h in r.down)))
                     for r in self._election.status())[:protocol.MAX_REPORT_GROUPS]

    # ------------------------------------------------------------------------------- converge
    def sync(self, tracker: Tracker) -> None:
        """Converge on the tracker's groups: join, follow and leave groups; read, open, make and seal
        keys where due. Never raises for the control plane's or the data plane's failures: those are
        logged and retried (:meth:`next_due`)."""
        now = self._clock()
        wanted: dict[str, tuple[NetworkRecords, GatewayGroup]] = {}
        for net_id in tracker.network_ids:
            records = tracker.records(net_id)
            for gid in records.groups_of(self.host_id):
                if self.host_id in records.group_gateways(gid):
                    wanted[gid] = (records, records.gateway_groups[gid])
        for gid in [g for g in self._served if g not in wanted]:
            self._leave(gid)
        for gid in [g for g in self._keys if g not in wanted]:
            self._forget(gid)  # a key kept from a group this host is no longer in
        for gid, (records, group) in sorted(wanted.items()):
            served = self._served.setdefault(gid, _Served(records.network.id))
            mark = (group, tracker.group_mark(gid))
            if served.seen != mark or (served.retry_at and now >= served.retry_at):
                served.seen = mark
                self._follow_key(served, records, group, now)
            try:
                self._serve(served, records, group)
            except OSError as e:  # the election's port is taken, the state directory unwritable
                log.error("group %s: cannot take part in the election: %s", gid, e)
                self._retry(served, now)

    def stop(self) -> None:
        """A clean stop: withdraw from every group (deactivate); interfaces and keys stay."""
        if self._election is not None:
            self._election.stop()
            self._election = None

    # ------------------------------------------------------------------------------- the key
    def _follow_key(self, served: _Served, records: NetworkRecords, group: GatewayGroup, now: float) -> None:
        gid = group.id
        try:
            answer = self._api.group_key(served.network_id, gid)
            self._take_key(served, records, group, answer)
        except (ApiError, Unreachable, protocol.ProtocolError, GroupKeyError, InvalidInputError,
                KeyError, TypeError, ValueError) as e:
            log.warning("group %s: the key cannot be followed now (%s); trying again", gid, e)
            self._retry(served, now)
            return
        k = self._keys.get(gid)
        if k is None or (k.version, k.public_key) != (group.key_version, group.public_key):
            self._retry(served, now)  # a copy for us, or the new key's broadcast, is still to come
        elif served.plane_args is not None or served.plane is None:
            served.retry_at, served.backoff = 0.0, RETRY_MIN

    def _retry(self, served: _Served, now: float) -> None:
        served.retry_at = now + served.backoff
        served.backoff = min(RETRY_MAX, served.backoff * 2)

    def _take_key(self, served: _Served, records: NetworkRecords, group: GatewayGroup,
                  answer: Mapping[str, Any]) -> None:
        gid, nid = group.id, served.network_id
        raw = answer.get("record")
        record = GroupKeyRecord.from_item(raw) if raw is not None else None
        if record is not None and (record.network_id, record.group_id) != (nid, gid):
            raise protocol.ProtocolError("the key record names another group")
        held = self._keys.get(gid)
        if record is not None and (held is None or (held.version, held.public_key)
                                   != (record.version, record.public_key)):
            entry = record.entry_for(self.host_id)
            if entry is not None:
                if entry.sender not in group.members:
                    log.warning("group %s: refusing the copy of key version %d sealed by %s, which is not a "
                                "member of the group", gid, record.version, entry.sender)
                elif entry.sender_public_key != records.members.get(entry.sender, _NO_MEMBER).public_key:
                    log.warning("group %s: refusing the copy of key version %d sealed by %s with a key the "
                                "mesh does not know for it (%s)", gid, record.version, entry.sender,
                                entry.sender_public_key)
                else:
                    private = open_entry(record, self.host_id, self._wg_key)
                    self._keep(GroupKey(nid, gid, record.version, record.public_key, private))
                    log.info("group %s: opened key version %d (public key %s) sealed by %s", gid,
                             record.version, record.public_key, entry.sender)
        make = answer.get("make")
        held = self._keys.get(gid)
        if make is not None and int(make["version"]) > (record.version if record is not None else 0):
            self._make(served, records, group, int(make["version"]), make.get("recipients") or {})
            return
        seal_to = answer.get("seal_to") or {}
        if seal_to and held is not None and record is not None and \
                (held.version, held.public_key) == (record.version, record.public_key):
            entries = self._seal_all(records, group, held, seal_to)
            if entries:
                self._api.put_group_key(nid, gid, {"public_key": held.public_key, "version": held.version,
                                                   "entries": [e.to_item() for e in entries]})
                log.info("group %s: sealed key version %d to %s", gid, held.version,
                         ", ".join(f"{e.recipient} ({e.recipient_public_key})" for e in entries))

    def _make(self, served: _Served, records: NetworkRecords, group: GatewayGroup, version: int,
              recipients: Mapping[str, str]) -> None:
        """Make key ``version``, seal it to ``recipients`` and upload it; kept only once stored (a
        member that lost a race re-reads and opens the winner's)."""
        pair = new_group_key()
        made = GroupKey(served.network_id, group.id, version, pair.public_key, pair.private_key)
        entries = self._seal_all(records, group, made, {**recipients, self.host_id: self._wg_public})
        try:
            self._api.put_group_key(served.network_id, group.id, {
                "public_key": made.public_key, "version": version, "entries": [e.to_item() for e in entries]})
        except ApiError as e:
            if e.status == 409:
                log.info("group %s: another member made key version %d first (%s); reading it", group.id,
                         version, e.message)
                raise  # retried: the next read opens the winner's copy
            raise
        self._keep(made)
        log.info("group %s: made key version %d (public key %s), sealed to %s", group.id, version,
                 made.public_key, ", ".join(f"{e.recipient} ({e.recipient_public_key})" for e in entries))

    def _seal_all(self, records: NetworkRecords, group: GatewayGroup, key: GroupKey,
                  recipients: Mapping[str, str]) -> list[SealedEntry]:
        """Copies of ``key`` for the ``recipients`` that are members of the group as this host knows it,
        at the WireGuard key the mesh knows for them (any other is left out and logged)."""
        out = []
        for host, public in sorted(recipients.items()):
            known = records.members.get(HostId(host))
            if host not in group.members or known is None or known.public_key != public:
                log.warning("group %s: not sealing the key to %s at %s: not a member of the group at "
                            "that key as this host knows it", group.id, host, public)
                continue
            ctx = SealContext(key.network_id, key.group_id, key.version, key.public_key, self._wg_public,
                              public)
            out.append(SealedEntry(HostId(host), public, self.host_id, self._wg_public,
                                   seal(key.private_key, ctx, self._wg_key)))
        return out

    def _keep(self, key: GroupKey) -> None:
        self.dir.save_group_key(key)
        self._keys[key.group_id] = key

    def _forget(self, group_id: str) -> None:
        self._keys.pop(group_id, None)
        self.dir.remove_group_key(group_id)

    # ------------------------------------------------------------------------------- serving
    def _serve(self, served: _Served, records: NetworkRecords, group: GatewayGroup) -> None:
        gid = group.id
        k = self._keys.get(gid)
        if k is None or (k.version, k.public_key) != (group.key_version, group.public_key):
            if served.config is not None:  # a rotation it has not opened yet: out of the election
                log.info("group %s: not holding key version %d: standing down until it opens it", gid,
                         group.key_version)
                self._election_of().remove_group(gid)
                served.config = None
            return
        if served.plane is None:
            served.plane = self._make_plane(group_ifname(gid, self.interface))
        clients = {c.public_key: c.allowed_ips for c in records.clients_by_gateway.get(HostId(gid), ())
                   if records.served(c)}
        args = (k.private_key, tuple(sorted(clients.items())), group.floating_port, group.floating_ip)
        if args != served.plane_args:
            try:
                served.plane.ensure(k.private_key, clients, group.floating_port, group.floating_ip)
            except Exception as e:  # noqa: BLE001 - FloatingError, OSError: retried, the mesh unaffected
                log.error("group %s: the group interface cannot be set up: %s", gid, e)
                served.plane_args = None
                self._retry(served, self._clock())
                return
            served.plane_args = args
        members = records.group_gateways(gid)
        config = GroupConfig(
            network_id=served.network_id, group_id=gid, me=self.host_id, members=members,
            peers=peer_addresses({h: records.members[h].ipv4 for h in members if h != self.host_id}),
            key_version=k.version, group_private_key=k.private_key)
        election = self._election_of()
        if config != served.config:
            plane = served.plane
            election.set_group(config, Hooks(
                up=lambda: self._up(), on_active=lambda: self._acted(plane.activate),
                on_standby=lambda: self._acted(plane.deactivate),
                client_endpoints=plane.client_endpoints, learn_endpoints=plane.learn_endpoints))
            served.config = config
        election.set_record(gid, group.active, group.epoch)

    def _acted(self, change: Callable[[], None]) -> None:
        try:
            change()
        finally:
            self._on_role()

    def _election_of(self) -> Election:
        if self._election is None:
            election = self._make_election()
            election.start()
            self._election = election
        return self._election

    def _leave(self, group_id: str) -> None:
        """No longer a serving member (or the group is gone): withdraw, remove the interface, forget."""
        served = self._served.pop(group_id)
        if self._election is not None and served.config is not None:
            self._election.remove_group(group_id)
        if served.plane is not None:
            try:
                served.plane.close()
            except Exception as e:  # noqa: BLE001 - logged; the next start sweeps what is left
                log.error("group %s: removing the group interface: %s", group_id, e)
        self._forget(group_id)
        log.info("group %s: no longer a member; its interface and key are removed", group_id)


class _NoMember:
    public_key = ""


_NO_MEMBER: Any = _NoMember()
