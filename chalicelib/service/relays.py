"""Relays: members that carry the traffic of hosts that cannot be reached directly (behind CGNAT,
a strict firewall), set by an admin or by the enrollment key a host joined with.

A relayed host is marked on its own role (``MemberRole.relayed_by``); the plan does the rest
(:func:`chalicelib.domain.plan.peer`). Setting a relay's hosts is one write of every member whose
role changes, and of the relay itself (its revision moves on, so a concurrent deletion of the
relay, which releases the hosts it relays as it read them, reads again), with one pending change
naming them all: one broadcast. What the plan cannot give every host (chains, a relayed
remote-access or internet gateway, a full tunnel past the relay) is refused before writing, by
:func:`chalicelib.domain.plan.check` on the records as they would be after the change.
"""

from __future__ import annotations

import builtins  # ``list`` in the class body is Relays.list
from dataclasses import dataclass, replace

from ..domain import plan
from ..domain.changes import PendingChange
from ..domain.ids import HostId, NetworkId
from ..domain.models import Host, Member, MemberRole, Network
from ..errors import ConflictError, InvalidInputError, NotFoundError
from . import topology
from .deps import Deps, retrying
from .ports import MAX_ROLE_WRITES
from .stream import Stream

__all__ = ["Relays", "RelaySet", "MAX_RELAYED_CHANGES"]

# Hosts whose relay one call may change: with the relay itself, one write (Store.set_member_roles).
MAX_RELAYED_CHANGES = MAX_ROLE_WRITES - 1


@dataclass(frozen=True)
class RelaySet:
    """A relay and the members it relays, in host id order."""

    relay: Member
    relayed: tuple[Member, ...]


def _not_a_member(host_id: str, network_id: str) -> ConflictError:
    return ConflictError(f"host {host_id} is not a member of network {network_id}; a relay and the hosts it "
                         "relays must all be members of the network", code="not_a_member")


class Relays:
    """Which members relay which; each change broadcast by the change itself."""

    def __init__(self, deps: Deps, stream: Stream) -> None:
        self._d = deps
        self._stream = stream

    # ------------------------------------------------------------------ read
    def list(self, network_id: str) -> builtins.list[RelaySet]:
        """Every relay of the network with the hosts it relays, in host id order (404: no network)."""
        records = topology.existing(self._d.store, network_id)
        by_relay: dict[HostId, list[Member]] = {}
        for hid in sorted(records.members):
            relay = records.relay_of(hid)
            if relay is not None:
                by_relay.setdefault(relay, []).append(records.members[hid])
        return [RelaySet(records.members[r], tuple(ms)) for r, ms in sorted(by_relay.items())]

    def pairs(self, network_id: str) -> builtins.list[tuple[Member, Member, Member]]:
        """Every pair of members relayed automatically now, (a, b, via) with a < b, in host id
        order (404: no network)."""
        records = topology.existing(self._d.store, network_id)
        m = records.members
        return [(m[a], m[b], m[via]) for (a, b), via in sorted(records.pair_relays.items())]

    # ------------------------------------------------------------------ change
    def set(self, network_id: str, relay_id: str, relayed: builtins.list[str]) -> RelaySet:
        """Member ``relay_id`` relays exactly the members ``relayed`` of ``network_id`` (hosts it
        relayed that are not listed are reached directly again; a listed host relayed by another
        relay moves to this one); the relay set as stored now.

        404 for a network or host that does not exist, 409 (``not_a_member``) for a host that is
        not a member, 409 naming the rule for what the plan refuses, 400 for more than
        :data:`MAX_RELAYED_CHANGES` hosts changed in one call. Nothing changed: nothing written.
        """
        wanted = builtins.list(dict.fromkeys(HostId(h) for h in relayed))
        if len(wanted) > MAX_RELAYED_CHANGES:
            raise InvalidInputError(f"a relay's hosts are set {MAX_RELAYED_CHANGES} at most at a time (one "
                                    f"write); {len(wanted)} were given", code="too_many_relayed")
        if HostId(relay_id) in wanted:
            raise ConflictError(f"host {relay_id} cannot relay itself; list other members of network "
                                f"{network_id}", code="relay_itself")

        def attempt() -> tuple[RelaySet, tuple[PendingChange, ...]]:
            network, relay = self._member(network_id, relay_id)
            nid = network.id
            records = topology.existing(self._d.store, network_id)
            hosts = {h: self._host_in(network_id, h) for h in wanted}
            now_relayed = [h for h, m in sorted(records.members.items()) if m.role.relayed_by == relay.id]
            changed: dict[HostId, Host] = {}
            for hid in wanted:
                role = hosts[hid].roles.get(nid, MemberRole())
                if role.relayed_by != relay.id:
                    changed[hid] = hosts[hid].with_role(nid, replace(role, relayed_by=relay.id))
            for hid in now_relayed:
                if hid not in hosts:
                    old = self._d.store.get_host(hid)
                    if old is not None and nid in old.addresses:
                        hosts[hid] = old
                        changed[hid] = old.with_role(nid, replace(old.roles.get(nid, MemberRole()),
                                                                  relayed_by=None))
            if not changed:
                return self._view(records, relay.id), ()
            if len(changed) > MAX_RELAYED_CHANGES:
                raise InvalidInputError(
                    f"this call would change the relay of {len(changed)} hosts; at most "
                    f"{MAX_RELAYED_CHANGES} change in one call: move them in smaller steps",
                    code="too_many_relayed")
            members = dict(records.members)
            for hid, new in changed.items():
                members[hid] = new.member_of(nid)
            # a relayed end (or relay) ends its automatic pairs in the same write
            after, released = topology.release_pairs(self._d.store, replace(records, members=members),
                                                     frozenset({relay.id, *changed}))
            plan.check(after)
            if len(changed) + len(released) > MAX_RELAYED_CHANGES:
                raise InvalidInputError(
                    f"this call would change the relay of {len(changed)} hosts and end "
                    f"{len(released)} hosts' automatic relays; at most {MAX_RELAYED_CHANGES} change in one "
                    "call: move them in smaller steps", code="too_many_relayed")
            olds = [relay, *(hosts[h] for h in sorted(changed)), *(o for o, _ in released)]
            news = [relay.with_role(nid, after.members[relay.id].role),
                    *(hosts[h].with_role(nid, after.members[h].role) for h in sorted(changed)),
                    *(n for _, n in released)]
            (change,) = outbox = self._stream.new_changes([nid], host_ids=tuple(h.id for h in olds))
            self._d.store.set_member_roles(olds, news, nid, change=change)
            return self._view(after, relay.id), outbox

        out, outbox = retrying(self._d, "changing the relay", attempt)
        self._stream.send(outbox)
        return out

    def unset(self, network_id: str, relay_id: str) -> None:
        """Every host ``relay_id`` relays in ``network_id`` is reached directly again (404 when it
        relays none)."""
        records = topology.existing(self._d.store, network_id)
        if not any(m.role.relayed_by == relay_id for m in records.members.values()):
            raise NotFoundError(f"host {relay_id} relays no host of network {network_id}")
        self.set(network_id, relay_id, [])

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _view(records: plan.NetworkRecords, relay: HostId) -> RelaySet:
        return RelaySet(records.members[relay], tuple(records.members[h] for h in records.relayed(relay)))

    def _member(self, network_id: str, host_id: str) -> tuple[Network, Host]:
        network = self._d.store.get_network(network_id)
        if network is None:
            raise NotFoundError(f"network {network_id} does not exist")
        return network, self._host_in(network_id, host_id)

    def _host_in(self, network_id: str, host_id: str) -> Host:
        host = self._d.store.get_host(host_id)
        if host is None:
            raise NotFoundError(f"host {host_id} does not exist")
        if NetworkId(network_id) not in host.addresses:
            raise _not_a_member(host_id, network_id)
        return host
