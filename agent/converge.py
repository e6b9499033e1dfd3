"""The agent's view of its networks, kept in sequence. Pure: no I/O, no clock.

A :class:`Tracker` holds the members of every network the host is in. A full
config replaces everything; a delta applies only on top of ``seq - 1``.
Anything else is reported so the caller fetches a full config (a resync):

- ``seq`` at or below what we have: a duplicate or a replay — ignored;
- ``seq`` beyond the next one: we missed something — resync;
- the delta removes this host itself, or names a network we do not know —
  our membership changed — resync (to learn the networks we are in now).

A delta costs O(hosts it names), not O(network): the members whose peer entry may
differ are the network plan's :func:`~chalicelib.domain.plan.dependents` of the
changed records, before and after the delta; the tracker records their WireGuard
keys (:meth:`Tracker.take_changes`), and :meth:`peer` computes one peer's config
alone with the plan's own rule (:func:`~chalicelib.domain.plan.peer`, folded by
:func:`~chalicelib.domain.device.merge_peer` as the full :meth:`device` folds it).
That keeps one change cheap on every host of a large network, and is what lets
1,000 simulated agents share one process in ``bench/propagation.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from chalicelib.domain import plan, protocol
from chalicelib.domain.device import DeviceConfig, PeerConfig, merge_peer, merge_views
from chalicelib.domain.ids import ClientId, HostId
from chalicelib.domain.models import Client, GatewayGroup, Member, Network
from chalicelib.domain.plan import HostView, NetworkRecords

__all__ = ["Tracker", "Outcome", "Changes"]


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    GAP = "gap"
    MEMBERSHIP = "membership"


@dataclass
class Changes:
    """What changed since the last :meth:`Tracker.take_changes`."""

    full: bool = False  # addresses, routes, MTU or the set of networks: recompute the device
    keys: set[str] = field(default_factory=set)  # peers (by WireGuard key) that may differ


class _Net:
    """One network as tracked: its settings, members and clients, and the plan's records of
    them (which read the members dict in place, so only new settings or changed clients make
    new records: what the plan derives from the clients is cached per records object). It keeps
    the members whose roles record pairs relayed automatically (``pair_owners``), so the plan
    finds the pairs without a scan of the network on every delta. And its gateway groups (issue 11),
    by id, which the plan reads like the clients (new records when they change)."""

    __slots__ = ("members", "clients", "groups", "records", "pair_owners")

    def __init__(self, network: Network, members: dict[HostId, Member],
                 clients: dict[ClientId, Client], down: frozenset[HostId],
                 groups: dict[str, GatewayGroup] | None = None) -> None:
        self.members = members
        self.clients = clients
        self.groups = groups if groups is not None else {}
        self.pair_owners = {h for h, m in members.items() if m.role.pair_relays}
        self.records = NetworkRecords(network, members, clients, down=down,
                                      pair_owners=frozenset(self.pair_owners), gateway_groups=self.groups)

    @property
    def network(self) -> Network:
        return self.records.network

    @network.setter
    def network(self, network: Network) -> None:
        self.records = replace(self.records, network=network, pair_owners=frozenset(self.pair_owners))

    def renew(self, down: frozenset[HostId] | None = None) -> None:
        """New records after the clients changed (the plan's index of them is rebuilt), or with
        the gateways this host's probes found dead."""
        self.records = NetworkRecords(self.network, self.members, self.clients,
                                      down=self.records.down if down is None else down,
                                      pair_owners=frozenset(self.pair_owners), gateway_groups=self.groups)


class Tracker:
    def __init__(self, host_id: str, snapshots: Iterable[protocol.Snapshot] = ()) -> None:
        self.host_id = HostId(host_id)
        self._nets: dict[str, _Net] = {}
        # WireGuard key → {(network, member host id or client id)}
        self._by_key: dict[str, set[tuple[str, str]]] = {}
        self._changes = Changes(full=True)
        self._down: frozenset[HostId] = frozenset()
        self._group_marks: dict[str, int] = {}  # group id → how many times a snapshot or delta named it
        self.replace(snapshots)

    # ------------------------------------------------------------------ updates
    def replace(self, snapshots: Iterable[protocol.Snapshot]) -> None:
        """Take a full config: exactly these networks, at these sequence numbers.

        Networks where this host is not (or no longer) a member are left out.
        """
        self._nets, self._by_key = {}, {}
        for snap in snapshots:
            self._take_snapshot(snap)
        self._changes = Changes(full=True)

    def catch_up(self, snapshots: Iterable[protocol.Snapshot], catch_ups: Iterable[protocol.CatchUp]) -> bool:
        """Take a ``/config`` answer: full snapshots for some networks, missed deltas for the rest.

        The host is then in exactly the networks named (others are left), and a delta costs
        what it costs live. Returns False when a catch-up does not lead to its seq (a network
        we do not know, a gap): the caller fetches full snapshots instead.
        """
        snapshots, catch_ups = list(snapshots), list(catch_ups)
        named = {s.network.id for s in snapshots} | {c.network_id for c in catch_ups}
        for net_id in [n for n in self._nets if n not in named]:
            self._drop_network(net_id)
        for snap in snapshots:
            self._take_snapshot(snap)
        for c in catch_ups:
            if c.network_id not in self._nets:
                return False
            for d in c.deltas:
                if self.on_delta(d) in (Outcome.GAP, Outcome.MEMBERSHIP):
                    return False
            if self._nets[c.network_id].network.seq < c.seq:
                return False
        return True

    def _take_snapshot(self, snap: protocol.Snapshot) -> None:
        """Put this network's snapshot in place of what we had of it (left out: not a member)."""
        net_id = snap.network.id
        if (old := self._nets.pop(net_id, None)) is not None:
            olds: list[Member | Client] = [*old.members.values(), *old.clients.values()]
            for r in olds:
                self._unindex(net_id, r)
        for g in snap.groups:
            self._group_marks[g.id] = self._group_marks.get(g.id, 0) + 1
        if any(m.host_id == self.host_id for m in snap.members):
            self._nets[net_id] = _Net(snap.network, {m.host_id: m for m in snap.members},
                                      {c.id: c for c in snap.clients}, self._down,
                                      {g.id: g for g in snap.groups})
            news: list[Member | Client] = [*snap.members, *snap.clients]
            for r in news:
                self._index(net_id, r)
        self._changes.full = True

    def on_delta(self, delta: protocol.Delta) -> Outcome:
        current = self._nets.get(delta.network_id)
        if current is None:
            return Outcome.MEMBERSHIP
        if delta.seq <= current.network.seq:
            return Outcome.DUPLICATE
        if delta.seq != current.network.seq + 1:
            return Outcome.GAP
        if self.host_id in delta.remove:
            self._drop_network(delta.network_id)
            return Outcome.MEMBERSHIP
        changed: set[str] = {*delta.remove, *(m.host_id for m in delta.upsert),
                             *delta.remove_clients, *(c.id for c in delta.clients),
                             *delta.remove_groups, *(g.id for g in delta.groups)}
        self._touch(current, changed)  # the peers as they were (a removed key is removed)
        ends = current.records.pairs_via(self.host_id)
        net_id = delta.network_id
        for h in delta.remove:
            gone = current.members.pop(HostId(h), None)
            current.pair_owners.discard(HostId(h))
            self._unindex(net_id, gone)
            if gone is not None and gone.role.gateway is not None:
                self._changes.full = True  # its egress ranges and its clients' LANs were routes
            self._note_relay(current, gone, None)
        for m in delta.upsert:
            old = current.members.get(m.host_id)
            self._unindex(net_id, old)
            self._note_relay(current, old, m)
            current.members[m.host_id] = m
            if m.role.pair_relays:
                current.pair_owners.add(m.host_id)
            else:
                current.pair_owners.discard(m.host_id)
            self._index(net_id, m)
            if m.host_id == self.host_id or (old.role.gateway if old else None) != m.role.gateway:
                self._changes.full = True  # our own address, port or role; a gateway's ranges are routes
        for cid in delta.remove_clients:
            old_c = current.clients.pop(ClientId(cid), None)
            self._unindex(net_id, old_c)
            self._note_client(old_c)
        for c in delta.clients:
            self._unindex(net_id, current.clients.get(c.id))
            self._note_client(current.clients.get(c.id))
            current.clients[c.id] = c
            self._index(net_id, c)
            self._note_client(c)
        for gid in delta.remove_groups:
            current.groups.pop(gid, None)
        for g in delta.groups:
            current.groups[g.id] = g
            self._group_marks[g.id] = self._group_marks.get(g.id, 0) + 1
        if delta.groups or delta.remove_groups:
            # A group's clients' extra addresses are forwarded by its members and routed by all; which
            # member carries them moves entries only, but groups change rarely: recompute whole.
            self._changes.full = True
        if delta.clients or delta.remove_clients or delta.groups or delta.remove_groups:
            current.renew()
        current.network = replace(delta.network or current.network, seq=delta.seq)
        self._touch(current, changed)  # the peers as they are now
        now = current.records.pairs_via(self.host_id)
        if ends != now or not changed.isdisjoint(ends + now):
            self._changes.full = True  # an automatic relay forwards for its pairs' ends (their egress)
        if delta.network is not None:
            self._changes.full = True  # keepalive, MTU…
        return Outcome.APPLIED

    def _note_relay(self, n: _Net, old: Member | None, new: Member | None) -> None:
        """A member's change that reaches beyond peer entries here: a host this one relays (or
        no longer relays) changes what it forwards; this host's own relay joining or leaving
        changes who its peers are."""
        was, now = (old.role.relayed_by if old else None), (new.role.relayed_by if new else None)
        if self.host_id in (was, now) and (was != now or old is None or new is None):
            self._changes.full = True
        me, other = n.members.get(self.host_id), old or new
        if me is not None and other is not None and (old is None or new is None) \
                and me.role.relayed_by == other.host_id:
            self._changes.full = True

    def _note_client(self, c: Client | None) -> None:
        """A client (as it was or is now) whose change reaches beyond its gateway's entry: at its
        gateway (forwarding), and everywhere when it has extra addresses (routes)."""
        if c is not None and (c.gateway == self.host_id or c.extra_addresses):
            self._changes.full = True

    def _touch(self, n: _Net, changed: Iterable[str]) -> None:
        """Note the keys of the peers the plan says depend on the ``changed`` records."""
        for rid in plan.dependents(n.records, changed):
            r = n.members.get(HostId(rid)) or n.clients.get(ClientId(rid))
            if r is not None:
                self._changes.keys.add(r.public_key)

    def _index(self, net_id: str, r: Member | Client) -> None:
        self._by_key.setdefault(r.public_key, set()).add((net_id, _rid(r)))

    def _unindex(self, net_id: str, old: Member | Client | None) -> None:
        if old is None:
            return
        where = self._by_key.get(old.public_key, set())
        where.discard((net_id, _rid(old)))
        if not where:
            self._by_key.pop(old.public_key, None)

    def _drop_network(self, net_id: str) -> None:
        del self._nets[net_id]
        self._by_key = {k: kept for k, where in self._by_key.items()
                        if (kept := {(n, h) for n, h in where if n != net_id})}
        self._changes.full = True

    def set_down(self, gateways: Iterable[str]) -> None:
        """The gateways this host's probes found dead now (all of them: the set replaces the last
        one). A range they share with live gateways moves to the next candidate the plan ranked
        for this host: the entries of the gateways of those ranges are noted as changed, nothing
        else (one peer update per move, no round trip to the control plane)."""
        down = frozenset(HostId(g) for g in gateways)
        if down == self._down:
            return
        flipped = down ^ self._down
        self._down = down
        for n in self._nets.values():
            self._touch(n, flipped)  # which gateways share a range does not depend on ``down``
            n.renew(down)

    def group_mark(self, group_id: str) -> int:
        """A number that grows each time a snapshot or a delta names gateway group ``group_id``: a
        broadcast of the group (rotate-key asks its members to read the key again with one that
        changes nothing they see) is noticed even when the group reads the same."""
        return self._group_marks.get(group_id, 0)

    @property
    def down(self) -> frozenset[HostId]:
        return self._down

    def take_changes(self) -> Changes:
        out, self._changes = self._changes, Changes()
        return out

    # -------------------------------------------------------------------- reads
    def seq(self, network_id: str) -> int | None:
        n = self._nets.get(network_id)
        return None if n is None else n.network.seq

    def known(self) -> dict[str, int]:
        """network id → the seq we have, for a catch-up (``/config?known=``)."""
        return {net_id: n.network.seq for net_id, n in self._nets.items()}

    @property
    def network_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._nets))

    @property
    def snapshots(self) -> list[protocol.Snapshot]:
        return [protocol.Snapshot(n.network, tuple(sorted(n.members.values(), key=lambda m: m.host_id)),
                                  tuple(sorted(n.clients.values(), key=lambda c: c.id)),
                                  tuple(sorted(n.groups.values(), key=lambda g: g.id)))
                for _, n in sorted(self._nets.items())]

    def views(self) -> list[HostView]:
        """This host's plan in each of its networks, in network-id order."""
        return [plan.network_plan(n.records)[self.host_id] for _, n in sorted(self._nets.items())]

    def records(self, network_id: str) -> NetworkRecords:
        """The plan's records of one network this host is in (KeyError: not one of them)."""
        return self._nets[network_id].records

    def device(self, listen_port: int) -> DeviceConfig:
        return merge_views(self.views(), listen_port)

    # issue 10: what the prober (agent/probe.py) picks its targets from
    def gateways(self) -> list[tuple[Member, bool]]:
        """Every other member with a gateway role in this host's networks, and this host's relay,
        with whether this host routes through it (it has egress ranges, it is this host's
        internet gateway or one of its candidates for ``auto``, it relays this host, it relays a
        pair this host is an end of, or it is a member of a gateway group: issue 11)."""
        out = []
        for n in self._nets.values():
            me = n.members.get(self.host_id)
            relay = n.records.relay_of(self.host_id)
            vias = set(n.records.paired(self.host_id).values())
            internet = set(plan.candidates(n.records, self.host_id, plan.INTERNET))
            grouped = plan.group_probe_targets(n.records, self.host_id)
            for m in n.members.values():
                if m.host_id == relay:
                    out.append((m, True))
                elif m.role.gateway is not None and m.host_id != self.host_id:
                    uses = me is not None and me.role.internet_gateway == m.host_id or m.host_id in internet
                    out.append((m, bool(m.role.gateway.egress) or uses or m.host_id in vias
                                or m.host_id in grouped))
        return out

    def member_by_key(self, public_key: str) -> Member | None:
        """The member with this WireGuard key in one of this host's networks (None: a client, or none)."""
        for net_id, rid in sorted(self._by_key.get(public_key, ())):
            if (m := self._nets[net_id].members.get(HostId(rid))) is not None:
                return m
        return None

    def peer(self, public_key: str) -> PeerConfig | None:
        """The config of the peer with this key, as :meth:`device` would have it (None: no such peer)."""
        out = None
        for net_id, rid in sorted(self._by_key.get(public_key, ())):
            if (p := plan.peer(self._nets[net_id].records, self.host_id, rid)) is not None:
                out = merge_peer(out, p)
        return out


def _rid(r: Member | Client) -> str:
    """A record's id in its network: a member's host id, a client's id."""
    return r.host_id if isinstance(r, Member) else r.id
