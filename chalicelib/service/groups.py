"""HA gateway groups (issue 11): remote-access gateways that share one identity and a floating address.

A group is a record of its network like a client: every change is one conditional write with one
pending change naming it, then one broadcast, and every host's plan moves the group's clients to
the member it should reach them through (:func:`chalicelib.domain.plan.group_carrier`).

- **The key** (docs/ha-groups.md) is made on a member and sealed member to member; this module only
  stores the record (public key, version, ciphertext) with a write conditional on the record read,
  and takes a new version only when the group has none yet or an admin asked for rotate-key (a
  member alone must not change the key every client file names).
- **The election** (:mod:`chalicelib.domain.election`): the control plane is a voter. A member's
  claim is :func:`~chalicelib.domain.election.vote` on the stored promise at the control plane's
  clock, written conditionally on the promise read (two concurrent claims: one write wins, the
  other re-reads and is refused). A claim writes the promise alone, granted or renewed: the
  control plane's vote is one of several (a quorum is a majority of members, or half and the control
  plane), so a granted vote is no lease, and a member returning after a crash that gets it while the
  others refuse must not be recorded active. The record of the active member follows only members'
  status reports that say active at an epoch above the record's (:meth:`Groups.record_reports`; an
  agent reports at once on a role change) and the failover functions' correction (:meth:`Groups.correct`).
"""

from __future__ import annotations

import builtins  # ``list`` in the class body is Groups.list
import ipaddress
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Any

from ..domain import election, groupkey, plan, validate
from ..domain.changes import PendingChange
from ..domain.groupkey import Coverage, GroupKeyRecord, KeyUpload
from ..domain.ids import GroupId, HostId, is_id, new_id
from ..domain.models import MAX_GROUP_MEMBERS, ElasticIp, GatewayGroup, Host
from ..domain.protocol import GroupReport
from ..errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    SkymeshError,
    UnavailableError,
)
from . import topology
from .deps import Deps, log, retrying
from .ports import KeyWrite, PromiseWrite
from .stream import Stream

__all__ = ["Groups", "GroupView", "Removed", "KeyView", "KeyStored", "Vote"]

TIMING = election.Timing()  # the members' defaults: the control plane's promise lasts what theirs do


@dataclass(frozen=True)
class GroupView:
    """A group with what its key record says of its members (None: no key yet)."""

    group: GatewayGroup
    coverage: Coverage | None


@dataclass(frozen=True)
class Removed:
    """A member removed from a group, and whether (and what the answer says) it still knows the key."""

    host_id: HostId
    still_knows_key: bool
    message: str


@dataclass(frozen=True)
class KeyView:
    """What a member reads of its group's key: the record (ciphertext only), who holds it, whom the
    caller should seal the current key to, and, when the caller is asked to make a new key (the
    group has none, or rotate-key was asked and it is the member to make it), the plan for it."""

    record: GroupKeyRecord | None
    coverage: Coverage | None
    seal_to: Mapping[HostId, str]
    make: groupkey.RotationPlan | None


@dataclass(frozen=True)
class KeyStored:
    record: GroupKeyRecord
    coverage: Coverage
    new_key: bool
    notice: str


@dataclass(frozen=True)
class Vote:
    """The control plane's answer to a claim, as :class:`election.Ack` has it."""

    granted: bool
    epoch: int


def _floating(value: str) -> str:
    """``ADDR:PORT`` with ADDR an IPv4 or IPv6 literal (IPv6 in brackets), canonical; else a 400."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInputError("floating_endpoint must be ADDR:PORT, e.g. 198.51.100.10:51900")
    validate.endpoint(value, "floating_endpoint")
    host, _, port = value.rpartition(":")
    try:
        addr = ipaddress.ip_address(host.strip("[]") if host.startswith("[") else host)
    except ValueError:
        raise InvalidInputError(f"floating_endpoint {validate.quoted(value)}: the address must be an IPv4 or "
                                "IPv6 literal (it moves between the members' uplinks), not a name") from None
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


AwsInput = tuple[str, Mapping[str, str]]  # (allocation id, {member: eni-… | i-…})
_ALLOCATION = re.compile(r"^eipalloc-[0-9a-f]{8,17}$")
_TARGET = re.compile(r"^(eni|i)-[0-9a-f]{8,17}$")


class Keep:
    """``update``'s default for ``aws``: keep the group's Elastic IP as it is."""


KEEP = Keep()


def _elastic_ip(aws: AwsInput | None, members: Sequence[HostId]) -> ElasticIp | None:
    """The group's Elastic IP from ``(allocation id, {member: target})``: every member has exactly one
    target (a network interface ``eni-…`` or an instance ``i-…``), else a 400 that says which."""
    if aws is None:
        return None
    allocation_id, targets = aws
    if not isinstance(allocation_id, str) or not _ALLOCATION.match(allocation_id):
        raise InvalidInputError(f"aws.allocation_id {validate.quoted(str(allocation_id))} is not an "
                                "Elastic IP allocation id (eipalloc-…; aws ec2 describe-addresses shows it)")
    for h, t in targets.items():
        if h not in members:
            raise InvalidInputError(f"aws.members names {validate.quoted(str(h))}, which is not a member of "
                                    "the group")
        if not isinstance(t, str) or not _TARGET.match(t):
            raise InvalidInputError(f"aws.members.{h}: {validate.quoted(str(t))} is neither a network "
                                    "interface (eni-…) nor an instance (i-…)")
    missing = [h for h in members if h not in targets]
    if missing:
        raise InvalidInputError(f"aws.members has no network interface or instance for {', '.join(missing)}: "
                                "the Elastic IP could not follow that member when it becomes active; give "
                                "every member one (PATCH aws with all members)")
    return ElasticIp(allocation_id, tuple((h, str(targets[h])) for h in members))


def _member_ids(values: Sequence[str], field: str) -> tuple[HostId, ...]:
    for h in values:
        if not isinstance(h, str) or not is_id("host", h):
            raise InvalidInputError(f"{field}: {validate.quoted(str(h))} is not a host id (host_…)")
    if len(set(values)) != len(values):
        raise InvalidInputError(f"{field} names a host twice")
    return tuple(HostId(h) for h in values)


def _ordered(members: tuple[HostId, ...], priority: Sequence[str] | None) -> tuple[HostId, ...]:
    """The members in priority order: ``priority`` (the same hosts), else as given."""
    if priority is None:
        return members
    order = _member_ids(priority, "priority")
    if set(order) != set(members):
        raise InvalidInputError("priority must name exactly the group's members, first = preferred")
    return order


class Groups:
    """Gateway groups' use cases; each change of a group broadcast once by the change itself."""

    def __init__(self, deps: Deps, stream: Stream) -> None:
        self._d = deps
        self._stream = stream
        self._pool: ThreadPoolExecutor | None = None  # Elastic IP moves, waited for briefly

    # ------------------------------------------------------------------ read
    def get(self, network_id: str, group_id: str) -> GatewayGroup:
        group = self._d.store.get_group(network_id, group_id)
        if group is None:
            if self._d.store.get_network(network_id) is None:
                raise NotFoundError(f"network {network_id} does not exist")
            raise NotFoundError(f"gateway group {group_id} does not exist in network {network_id}")
        return group

    def view(self, network_id: str, group_id: str) -> GroupView:
        group = self.get(network_id, group_id)
        record = self._d.store.get_group_key(network_id, group_id)
        if record is None:
            return GroupView(group, None)
        return GroupView(group, groupkey.coverage(record, self._member_keys(network_id, group)))

    def list(self, network_id: str) -> builtins.list[GroupView]:
        if self._d.store.get_network(network_id) is None:
            raise NotFoundError(f"network {network_id} does not exist")
        return [self.view(network_id, g.id) for g in self._d.store.network_groups(network_id)]

    # ------------------------------------------------------------------ create, change, delete
    def create(self, network_id: str, *, name: str, members: Sequence[str], floating_endpoint: str,
               priority: Sequence[str] | None = None, aws: AwsInput | None = None) -> GatewayGroup:
        """A new group of ``members`` (remote-access gateways of the network, 1 to 4; in ``priority``
        order when given), broadcast before this returns. Its key is made by a member afterwards
        (``GET``/``PUT …/key``); until then its clients' files are refused with a 409."""
        validate.name(name)
        ordered = _ordered(_member_ids(members, "members"), priority)
        floating = _floating(floating_endpoint)
        eip = _elastic_ip(aws, ordered)
        d = self._d

        def attempt() -> tuple[GatewayGroup, tuple[PendingChange, ...]]:
            records = topology.existing(d.store, network_id)
            group = GatewayGroup(GroupId(new_id("group", d.rng)), records.network.id, name, ordered, floating,
                                 created_at=d.clock.now(), aws=eip)
            self._check(records, group)
            outbox = self._stream.new_changes([group.network_id], group_ids=(group.id,))
            d.store.create_group(group, change=outbox[0])
            return group, outbox

        group, outbox = retrying(d, "creating the gateway group", attempt)
        self._stream.send(outbox)
        return group

    def update(self, network_id: str, group_id: str, *, name: str | None = None,
               add: Sequence[str] | None = None, remove: Sequence[str] | None = None,
               priority: Sequence[str] | None = None, floating_endpoint: str | None = None,
               aws: AwsInput | None | Keep = KEEP) -> tuple[GatewayGroup, builtins.list[Removed]]:
        """The group with these changes, broadcast before this returns: members added (last in
        priority unless ``priority`` orders them) or removed (each removal says whether that host
        still knows the group's key), a new priority order, name or floating endpoint; ``aws`` replaces the
        group's Elastic IP (None removes it; left out: kept, without the targets of removed members)."""
        if name is not None:
            validate.name(name)
        adding = _member_ids(add or (), "add")
        removing = _member_ids(remove or (), "remove")
        floating = None if floating_endpoint is None else _floating(floating_endpoint)
        if set(adding) & set(removing):
            raise InvalidInputError("a host cannot be both added and removed")

        def attempt() -> tuple[GatewayGroup, builtins.list[Removed], tuple[PendingChange, ...]]:
            old = self.get(network_id, group_id)
            for h in removing:
                if h not in old.members:
                    raise ConflictError(f"host {h} is not a member of gateway group {group_id}",
                                        code="not_a_group_member")
            for h in adding:
                if h in old.members:
                    raise ConflictError(f"host {h} is a member of gateway group {group_id} already",
                                        code="group_member_exists")
            members = tuple(h for h in old.members if h not in removing) + adding
            members = _ordered(members, priority)
            if isinstance(aws, Keep):
                eip = None if old.aws is None else _elastic_ip(
                    (old.aws.allocation_id, {h: t for h, t in old.aws.targets if h in members}), members)
            else:
                eip = _elastic_ip(aws, members)
            new = old.with_changes(aws=eip,
                name=old.name if name is None else name, members=members,
                floating_endpoint=old.floating_endpoint if floating is None else floating,
                active=None if old.active in removing else old.active)
            if new == old:
                return old, [], ()
            return self._write(old, new, removing)

        group, removed, outbox = retrying(self._d, "changing the gateway group", attempt)
        self._stream.send(outbox)
        return group, removed

    def remove_member(self, network_id: str, group_id: str, host_id: str) -> tuple[GatewayGroup, Removed]:
        """Take ``host_id`` out of the group; the answer says plainly whether it still knows the key."""
        group, removed = self.update(network_id, group_id, remove=[host_id])
        return group, removed[0]

    def _write(self, old: GatewayGroup, new: GatewayGroup, removing: Sequence[HostId]) -> tuple[
            GatewayGroup, builtins.list[Removed], tuple[PendingChange, ...]]:
        store = self._d.store
        if not new.members:
            raise ConflictError(f"a gateway group keeps at least one member; delete group {old.id} instead "
                                f"(DELETE /v1/networks/{old.network_id}/gateway-groups/{old.id})",
                                code="last_group_member")
        records = topology.existing(store, old.network_id)
        self._check(records, new)
        record = store.get_group_key(old.network_id, old.id)
        removed: builtins.list[Removed] = []
        key: KeyWrite | None = None
        after = record
        for h in removing:
            if after is None:
                removed.append(Removed(h, False, f"{h} is removed from group {old.id}; it never received "
                                                 "the group's key"))
                continue
            removal = groupkey.remove_member(after, h)
            after = removal.record
            removed.append(Removed(h, removal.still_knows_key, removal.message))
        if after is not None and after != record:
            key = KeyWrite(record, after)
        outbox = self._stream.new_changes([old.network_id], group_ids=(old.id,))
        store.update_group(old, new, change=outbox[0], key=key)
        return replace(new, revision=old.revision + 1), removed, outbox

    def delete(self, network_id: str, group_id: str) -> None:
        """Remove the group with its key record; 409 while clients name it."""
        def attempt() -> tuple[PendingChange, ...]:
            group = self.get(network_id, group_id)
            records = topology.existing(self._d.store, network_id)
            clients = records.clients_by_gateway.get(HostId(group.id), ())
            if clients:
                names = ", ".join(f"{c.name} ({c.id})" for c in clients[:10])
                raise ConflictError(f"gateway group {group_id} serves clients: {names}; give them another "
                                    "gateway (PATCH their gateway) or delete them first", code="group_in_use")
            outbox = self._stream.new_changes([group.network_id], group_ids=(group.id,))
            self._d.store.delete_group(group, change=outbox[0])
            return outbox

        self._stream.send(retrying(self._d, "deleting the gateway group", attempt))

    def _check(self, records: plan.NetworkRecords, group: GatewayGroup) -> None:
        """The group's members are remote-access gateways of the network, then the plan's checks."""
        nid = records.network.id
        if not 1 <= len(group.members) <= MAX_GROUP_MEMBERS:
            raise InvalidInputError(f"a gateway group has 1 to {MAX_GROUP_MEMBERS} members, not "
                                    f"{len(group.members)}")
        for h in group.members:
            if h not in records.members:
                if self._d.store.get_host(h) is None:
                    raise NotFoundError(f"host {h} does not exist")
                raise ConflictError(f"host {h} is not a member of network {nid}; a group's members are its "
                                    "remote-access gateways", code="not_a_member")
            gw = records.gateway(h)
            if gw is None or not gw.remote_access:
                raise ConflictError(f"host {h} is not a remote-access gateway of network {nid}; PUT "
                                    f"/v1/networks/{nid}/gateways/{h} {{\"remote_access\": true}} first",
                                    code="not_a_gateway")
        groups = {**records.gateway_groups, group.id: group}
        plan.check(replace(records, gateway_groups=groups))

    def _member_keys(self, network_id: str, group: GatewayGroup,
                     records: plan.NetworkRecords | None = None) -> dict[HostId, str]:
        """Each member's WireGuard public key now (members that left the network are left out)."""
        records = records or topology.existing(self._d.store, network_id)
        return {h: records.members[h].public_key for h in group.members if h in records.members}

    # ------------------------------------------------------------------ the key
    def _member(self, network_id: str, group_id: str, caller: Host) -> GatewayGroup:
        group = self.get(network_id, group_id)
        if caller.id not in group.members:
            raise ForbiddenError(f"{caller.id} is not a member of gateway group {group_id}; only its members "
                                 "read its key and vote on its election")
        return group

    def key(self, network_id: str, group_id: str, caller: Host) -> KeyView:
        """What member ``caller`` reads of the group's key (ciphertext only) and what it should do."""
        group = self._member(network_id, group_id, caller)
        members = self._member_keys(network_id, group)
        record = self._d.store.get_group_key(network_id, group_id)
        make = None
        wanted = group.key_rotation or (0 if record is not None else 1)
        if wanted and caller.id == self._maker(group, record, members):
            make = groupkey.rotation_plan(record, members)
        return KeyView(record, None if record is None else groupkey.coverage(record, members),
                       {} if record is None else groupkey.seal_work(record, members, caller.id), make)

    @staticmethod
    def _maker(group: GatewayGroup, record: GroupKeyRecord | None,
               members: Mapping[HostId, str]) -> HostId | None:
        """The member asked to make a new key: the first by priority that holds the current one (any
        member when there is none yet)."""
        holders = set(groupkey.coverage(record, members).current) if record is not None else set(members)
        return next((h for h in group.members if h in holders), None)

    def put_key(self, network_id: str, group_id: str, caller: Host, body: Mapping[str, Any]) -> KeyStored:
        """Store what member ``caller`` uploaded (:func:`groupkey.accept_upload`): a first key, a
        rotation an admin asked for (then the group's public key changes: one broadcast), or more
        sealed copies of the current key (nothing hosts see changes: no broadcast)."""
        upload = KeyUpload.from_body(body)

        def attempt() -> tuple[KeyStored, tuple[PendingChange, ...]]:
            group = self._member(network_id, group_id, caller)
            members = self._member_keys(network_id, group)
            record = self._d.store.get_group_key(network_id, group_id)
            accepted = groupkey.accept_upload(record, upload, network_id=group.network_id, group_id=group.id,
                                              uploader=caller.id, members=members)
            stored = KeyStored(accepted.record, accepted.coverage, accepted.new_key, accepted.notice)
            if not accepted.new_key:
                self._d.store.put_group_key(KeyWrite(record, accepted.record))
                return stored, ()
            if record is not None and group.key_rotation != upload.version:
                raise ConflictError(f"gateway group {group_id}'s key is at version {record.version} and no "
                                    "rotation was asked for; an admin runs rotate-key (every client file "
                                    "names the group's key)", code="rotation_not_requested")
            new = group.with_changes(public_key=accepted.record.public_key,
                                     key_version=accepted.record.version, key_rotation=0)
            outbox = self._stream.new_changes([group.network_id], group_ids=(group.id,))
            self._d.store.update_group(group, new, change=outbox[0], key=KeyWrite(record, accepted.record))
            return stored, outbox

        stored, outbox = retrying(self._d, "storing the group's key", attempt)
        self._stream.send(outbox)
        return stored

    def rotate_key(self, network_id: str, group_id: str) -> tuple[int, HostId]:
        """Ask for a new key: the first member by priority that holds the current one makes it (it reads
        ``make`` on ``GET …/key`` after the broadcast this sends); returns the version asked for and
        that member. The group's public key changes when the new key lands."""
        def attempt() -> tuple[int, HostId, tuple[PendingChange, ...]]:
            group = self.get(network_id, group_id)
            record = self._d.store.get_group_key(network_id, group_id)
            if record is None:
                raise ConflictError(f"gateway group {group_id} has no key yet: its first member makes one; "
                                    "try again once GET shows key_version 1", code="group_key_missing")
            members = self._member_keys(network_id, group)
            maker = self._maker(group, record, members)
            if maker is None:
                raise ConflictError(f"no member of gateway group {group_id} holds its current key (version "
                                    f"{record.version}) to make a new one", code="no_key_holder")
            version = record.version + 1
            if group.key_rotation == version:
                return version, maker, ()
            outbox = self._stream.new_changes([group.network_id], group_ids=(group.id,))
            self._d.store.update_group(group, group.with_changes(key_rotation=version), change=outbox[0])
            return version, maker, outbox

        version, maker, outbox = retrying(self._d, "asking for a new group key", attempt)
        self._stream.send(outbox)
        return version, maker

    # ------------------------------------------------------------------ the election
    def claim(self, network_id: str, group_id: str, caller: Host, *, member: str, epoch: int,
              incarnation: int) -> Vote:
        """The control plane's vote on member ``caller``'s claim at ``epoch`` (its clock, its stored
        promise; a conditional write, so of two concurrent claims one is granted). A vote only: the
        control plane is one voter of several, so a granted vote makes no lease and neither records
        the member active nor moves the address; the record follows what members report
        (:meth:`record_reports`) and :meth:`correct`."""
        if member != caller.id:
            raise ForbiddenError(f"a member claims for itself: this token is {caller.id}'s, the claim names "
                                 f"{validate.quoted(member)}")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch < 2**63:
            raise InvalidInputError("epoch must be a whole number from 1")
        if isinstance(incarnation, bool) or not isinstance(incarnation, int) or not 0 <= incarnation < 2**63:
            raise InvalidInputError("incarnation must be a whole number from 0")

        def attempt() -> Vote:
            self._member(network_id, group_id, caller)
            promise = self._d.store.get_group_promise(network_id, group_id)
            now = self._d.clock.now_ns() / 1e9
            granted = election.vote(promise, election.Claim(caller.id, epoch, now, incarnation), now, TIMING)
            if granted is None:
                assert promise is not None  # no promise: every claim is granted
                return Vote(False, promise.epoch)
            self._d.store.put_group_promise(network_id, group_id, PromiseWrite(promise, granted))
            return Vote(True, granted.epoch)

        return retrying(self._d, "voting on the claim", attempt)

    def record_reports(self, host_id: str, reports: Sequence[GroupReport]) -> int:
        """Record what a member's status report says of its groups: a member that reports itself
        active at an epoch above the record's becomes the recorded active member (a conditional
        write, one broadcast), so every host moves the group's clients to it within one delta.
        Returns how many groups changed; never raises on what a host sent."""
        if not reports:
            return 0
        host = self._d.store.get_host(host_id)
        if host is None:
            return 0
        changed = 0
        for report in reports:
            for network_id in host.network_ids:
                recorded = report.role == "active" and self._record_active(network_id, host.id, report)
                # what the members together say (this report was stored first): a member every other one
                # reports down is replaced (election.correct)
                if recorded or (report.down and self.correct(network_id, report.group_id)):
                    changed += 1
        return changed

    def _record_active(self, network_id: str, host_id: HostId, report: GroupReport) -> bool:
        def attempt() -> tuple[GatewayGroup | None, tuple[PendingChange, ...]]:
            group = self._d.store.get_group(network_id, report.group_id)
            if group is None or host_id not in group.members or report.epoch <= group.epoch:
                return None, ()
            new = group.with_changes(active=host_id, epoch=report.epoch)
            outbox = self._stream.new_changes([group.network_id], group_ids=(group.id,))
            self._d.store.update_group(group, new, change=outbox[0])
            return new, outbox

        try:
            moved, outbox = retrying(self._d, "recording the group's active member", attempt)
        except (ConflictError, NotFoundError, UnavailableError, ValueError) as e:
            log.warning("group report of %s for %s not recorded: %s", host_id, report.group_id, e)
            return False
        self._stream.send(outbox)
        if moved is not None:
            self.move_address(moved)
        return moved is not None

    # ------------------------------------------------------------------ the failover functions
    def correct(self, network_id: str, group_id: str) -> bool:
        """:func:`election.correct` on the members' latest reports (their stored group rows, at most
        ``Settings.group_report_fresh`` old): a recorded active member that every other member reports
        down is replaced by the first live member by priority at a higher epoch (it campaigns at once),
        or the record follows a live member that reports itself active at a higher epoch. A conditional
        write and one broadcast when the record changes, then the address follows. Whether it changed;
        never raises for a race or an unavailable store (the next report or pass tries again)."""
        def attempt() -> tuple[GatewayGroup | None, tuple[PendingChange, ...]]:
            group = self._d.store.get_group(network_id, group_id)
            if group is None:
                return None, ()
            new = self._corrected(group)
            if new is None:
                return None, ()
            outbox = self._stream.new_changes([group.network_id], group_ids=(group.id,))
            self._d.store.update_group(group, new, change=outbox[0])
            log.info("failover: group %s in %s: active %s (epoch %d) -> %s (epoch %d)", group.id, network_id,
                     group.active, group.epoch, new.active, new.epoch)
            return new, outbox

        try:
            moved, outbox = retrying(self._d, "correcting the group's active member", attempt)
        except (ConflictError, UnavailableError, ValueError) as e:
            log.warning("failover: group %s of %s not corrected: %s", group_id, network_id, e)
            return False
        self._stream.send(outbox)
        if moved is not None:
            self.move_address(moved)
        return moved is not None

    def _corrected(self, group: GatewayGroup) -> GatewayGroup | None:
        """The group with the record :func:`election.correct` makes of its members' reports, or None
        when that changes nothing (or only on grounds this control plane cannot confirm)."""
        now = self._d.clock.now()
        reports: dict[str, election.Report] = {}
        for h, status in self._d.store.host_statuses(list(group.members)).items():
            row = next((r for r in status.groups if r.group_id == group.id), None)
            if not status.online or status.last_seen is None or row is None:
                continue
            # a member that says active below the record's epoch speaks of a lease the record has seen end
            role: election.Role = "active" if row.role == "active" and row.epoch >= group.epoch else "standby"
            reports[h] = election.Report(h, float(status.last_seen), role, row.epoch, frozenset(row.down))
        record = election.Record(group.active, group.epoch)
        fresh = float(self._d.settings.group_report_fresh)
        new = election.correct(election.Group(group.members), record, reports, float(now), silent_after=fresh)
        if (new.active, new.epoch) == (group.active, group.epoch) or new.active is None:
            return None
        said_active = reports.get(new.active)
        if group.active is not None and not (said_active is not None and said_active.role == "active"):
            # Designating another member replaces the recorded one: only when every other member says it
            # is down in a fresh report, never because its own report is missing (an agent that has not
            # reported its rows yet is not dead) or on the word of some members alone.
            others = [reports.get(m) for m in group.members if m != group.active]
            if not others or not all(r is not None and now - r.at <= fresh and group.active in r.down
                                     for r in others):
                return None
        return group.with_changes(active=HostId(new.active), epoch=new.epoch)

    def correct_network(self, network_id: str) -> int:
        """The scheduled pass over one network's groups: :meth:`correct` each, then make sure each
        Elastic IP sits with its recorded active member (a move that failed or timed out is done again
        here, a minute later at most). The groups whose record changed."""
        changed = 0
        for group in self._d.store.network_groups(network_id):
            if self.correct(network_id, group.id):
                changed += 1
            else:
                self.confirm_address(group)
        return changed

    # ------------------------------------------------------------------ the floating address on AWS
    def move_address(self, group: GatewayGroup) -> None:
        """Move the group's Elastic IP (if it has one) to its recorded active member, waiting at most
        ``Settings.address_move_wait`` for EC2 so that a status report or a failover pass is not held up
        by it: the request is on its way by then, and :meth:`confirm_address` (the schedule) checks it
        landed. Failures are logged, never raised: the record does not depend on them."""
        mover = self._d.mover
        if group.aws is None or group.active is None or mover is None:
            return
        target = group.aws.target(group.active)
        if target is None:
            log.warning("group %s: no Elastic IP target for active member %s", group.id, group.active)
            return
        future = self._executor().submit(mover.move, group.aws.allocation_id, target)
        try:
            future.result(timeout=self._d.settings.address_move_wait)
            log.info("group %s: Elastic IP %s -> %s (%s)", group.id, group.aws.allocation_id, target,
                     group.active)
        except FutureTimeout:
            log.info("group %s: moving Elastic IP %s to %s still under way; the failover schedule checks it",
                     group.id, group.aws.allocation_id, target)
        except SkymeshError as e:
            log.warning("group %s: moving Elastic IP %s to %s failed, the failover schedule tries again: %s",
                        group.id, group.aws.allocation_id, target, e.message)

    def confirm_address(self, group: GatewayGroup) -> bool:
        """Move the group's Elastic IP to its recorded active member unless it is there already (a read
        first: AWS charges remaps beyond a monthly quota). Whether it moved; failures are logged."""
        mover = self._d.mover
        if group.aws is None or group.active is None or mover is None:
            return False
        target = group.aws.target(group.active)
        try:
            where = mover.where(group.aws.allocation_id)
            if target is None or (where is not None and target in where):
                return False
            mover.move(group.aws.allocation_id, target)
        except SkymeshError as e:
            log.warning("group %s: Elastic IP %s not confirmed on %s: %s", group.id, group.aws.allocation_id,
                        target, e.message)
            return False
        log.info("group %s: Elastic IP %s moved to %s (%s) by the schedule", group.id,
                 group.aws.allocation_id, target, group.active)
        return True

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="skymesh-eip")
        return self._pool
