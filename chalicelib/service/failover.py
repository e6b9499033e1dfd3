"""The failover functions: which gateway each host sends a range to that several gateways serve,
and internet access to (hosts with ``internet_gateway: auto``: the group ``0.0.0.0/0``).

Agents move off a dead gateway by themselves within seconds (their probes; the plan's ranked
candidates). These functions own the slower decisions, from the latest status reports, with
the pure :func:`chalicelib.domain.placement.place_all`: where a host goes when its gateway is
down or silent, when another is clearly better (hysteresis), and how hosts spread over equal
gateways. A decision is written on each moved host's role (``MemberRole.placed``), so the plan
ranks that gateway first for it everywhere, and broadcast like any change: a recovered gateway
does not take its hosts back (they stay placed where they went).

- :meth:`Failover.after_report` — event-driven, on a report that carries latency: the reporter's
  own samples, no rebalancing (one report says little about the others), O(network members).
  Hosts on a gateway whose own reports stopped move too (that needs no sample of theirs).
- :meth:`Failover.run` — every minute (``@app.schedule``): every network with ranges several
  gateways serve, with every member's latest report: gateways whose reports stopped, hosts that
  never reported, rebalancing. Also each HA gateway group (issue 11,
  :meth:`~chalicelib.service.groups.Groups.correct_network`): the election record corrected from
  the members' reports, and its Elastic IP checked to sit with the active member.

Hosts without a placement are where the plan's ranking puts them (a rendezvous order of
their own); they count as placed there, so only a move writes anything.

The same functions relay pairs of members automatically (:mod:`chalicelib.domain.autorelay`), in
networks with an auto-relay gateway: on a report that says a member (not a gateway) is down, that
carries ``direct``, or whose reporter is an end of a recorded pair, and on the schedule (a via
whose reports stopped, stale reports). One pass reads every member's latest report in one batched
read and writes the pairs that change as one conditional change (one broadcast).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..domain import autorelay, placement, plan, protocol
from ..domain.ids import HostId, NetworkId
from ..domain.models import Host, HostStatus, MemberRole
from ..domain.placement import Decision, Group, Observations, Policy, Sample
from ..errors import ConflictError, UnavailableError
from . import topology
from .deps import Deps, log
from .ports import MAX_ROLE_WRITES, StaleWriteError
from .stream import Stream

if TYPE_CHECKING:
    from .groups import Groups

__all__ = ["Failover"]

_EVENT_POLICY = Policy(rebalance=False)


class Failover:
    def __init__(self, deps: Deps, stream: Stream, groups: Groups | None = None) -> None:
        self._d = deps
        self._stream = stream
        self._ha_groups = groups  # issue 11: gateway groups' election record and Elastic IP

    def run(self) -> int:
        """One scheduled pass over every network whose gateways share ranges, and every network
        with an auto-relay gateway; the hosts moved (placements) and the pairs changed."""
        moved = 0
        for entry in self._d.store.network_registry().entries:
            try:
                moved += self.place(entry.id)
            except UnavailableError as e:  # the next run tries again; one network stops no other
                log.warning("failover: placing in %s failed: %s", entry.id, e)
            try:
                moved += self.relay_pairs(entry.id)
            except UnavailableError as e:
                log.warning("failover: relaying pairs in %s failed: %s", entry.id, e)
            if self._ha_groups is not None:
                try:
                    moved += self._ha_groups.correct_network(entry.id)
                except UnavailableError as e:
                    log.warning("failover: gateway groups of %s left to the next pass: %s", entry.id, e)
        return moved

    def after_report(self, host_id: str, payload: dict[str, Any] | bytes | str) -> int:
        """Place ``host_id`` again in each of its networks where its report measured gateways that
        share a range it uses; the hosts moved (0 for a report that says nothing of them)."""
        try:
            report = protocol.decode_status(payload)
        except protocol.ProtocolError:
            return 0  # the report handler logs and drops it
        measured = {r.target for r in report.latency}
        host = self._d.store.get_host(host_id) if measured or report.direct else None
        if host is None:
            return 0
        mine = HostStatus(online=True, last_seen=self._d.clock.now(), latency=report.latency,
                          direct=report.direct)
        moved = 0
        for nid in host.network_ids:
            records = topology.records(self._d.store, nid)
            if records is None:
                continue
            if measured & {g for gs in records.groups.values() for g in gs}:
                placed = self._place(records, {host.id: mine}, _EVENT_POLICY)
                moved += placed
                records = topology.records(self._d.store, nid) if placed else records
            if records is not None and _says_of_pairs(records, host.id, mine):
                moved += self._relay(records, {host.id: mine})
        return moved

    def relay_pairs(self, network_id: str) -> int:
        """One pass of the automatic relays over ``network_id`` with every member's latest report
        (a via whose reports stopped, stale reports); the pairs changed. Nothing for a network
        with no auto-relay gateway and no recorded pair."""
        records = topology.records(self._d.store, network_id)
        if records is None or not _relays_pairs(records):
            return 0
        return self._relay(records, {})

    def place(self, network_id: str) -> int:
        """One placement pass over ``network_id`` with every member's latest report; the hosts moved."""
        records = topology.records(self._d.store, network_id)
        if records is None or not records.groups:
            return 0
        statuses = self._d.store.host_statuses(sorted(records.members))
        return self._place(records, statuses, Policy())

    # ------------------------------------------------------------------ helpers
    def _relay(self, records: plan.NetworkRecords, mine: Mapping[HostId, HostStatus]) -> int:
        """Decide the network's pairs (:func:`autorelay.decide`) with every member's latest report
        (``mine``: the report being handled, newer than the stored one) and write what changes;
        the pairs changed. A write that lost a race is tried once more on fresh records, then
        left to the next report or the schedule."""
        statuses = {**self._d.store.host_statuses(sorted(records.members)), **mine}
        reports = {h: autorelay.Report(s.last_seen, s.latency, frozenset(s.direct))
                   for h, s in statuses.items() if s.last_seen is not None}
        for attempt in range(2):
            decision = autorelay.decide(records, reports, self._d.clock.now())
            if not decision.changes:
                return 0
            try:
                return self._write_pairs(records, decision)
            except (StaleWriteError, UnavailableError, ConflictError) as e:
                again = topology.records(self._d.store, records.network.id) if attempt == 0 else None
                if again is None:
                    log.warning("failover: pairs of %s left to the next pass: %s", records.network.id, e)
                    return 0
                records = again
        return 0

    def _write_pairs(self, records: plan.NetworkRecords, decision: autorelay.PairDecision) -> int:
        """The decision's changes as one conditional write of the members whose roles change, with
        the ends and vias of the pairs made or moved (their revisions move on, so a concurrent
        change of one of them, which may make the pair not hold, reads again), at most
        MAX_ROLE_WRITES hosts: the changes beyond wait for the next pass. The pairs changed."""
        nid = records.network.id
        pairs = dict(autorelay.recorded(records))
        touched: set[HostId] = set()
        done: list[autorelay.PairChange] = []
        for c in decision.changes:
            hosts = {c.a} if c.to_via is None else {c.a, c.b, c.to_via}
            if len(touched | hosts) > MAX_ROLE_WRITES:
                break
            touched |= hosts
            done.append(c)
            if c.to_via is None:
                pairs.pop((c.a, c.b), None)
            else:
                pairs[(c.a, c.b)] = c.to_via
        new_roles = autorelay.role_changes(records, pairs)
        members = dict(records.members)
        for owner, owned in new_roles.items():
            members[owner] = replace(members[owner], role=replace(members[owner].role, pair_relays=owned))
        plan.check(replace(records, members=members))
        olds = topology.as_read(self._d.store, records, sorted(touched | set(new_roles)))
        news = [h.with_role(nid, members[h.id].role) for h in olds]
        (change,) = outbox = self._stream.new_changes([nid], host_ids=tuple(h.id for h in olds))
        self._d.store.set_member_roles(olds, news, nid, change=change)
        self._stream.send(outbox)
        for c in done:
            log.info("autorelay: pair %s, %s in %s: %s -> %s (%s)", c.a, c.b, nid,
                     c.from_via or "direct", c.to_via or "direct", c.reason)
        return len(done)

    def _place(self, records: plan.NetworkRecords, reports: Mapping[HostId, HostStatus],
               policy: Policy) -> int:
        gateways = sorted({g for gs in records.groups.values() for g in gs})
        unread = [g for g in gateways if g not in reports]
        gateway_reports = {**self._d.store.host_statuses(unread),
                           **{g: reports[g] for g in gateways if g in reports}}
        now = self._d.clock.now()
        heard = {g: s.last_seen for g, s in gateway_reports.items() if s.last_seen is not None}
        if policy is _EVENT_POLICY:
            # A gateway with no report yet (just made one, its agent starting) is not silent for
            # a report that says it answers: only the schedule, a minute on, calls it silent.
            heard = {g: heard.get(g, now) for g in gateways}
        observations = Observations(
            samples={u: {r.target: Sample(r.rtt_ms, r.loss_pct, r.up, at=s.last_seen or 0)
                         for r in s.latency} for u, s in reports.items()},
            reported_at=heard)
        # Where each reporter's agent sends a range now: the plan's ranking without the gateways its
        # probes found down (the fast path's choice), so a live choice is kept, not moved again.
        seen_down = {u: frozenset(r.target for r in s.latency if not r.up) for u, s in reports.items()}
        groups, current, first = self._groups(records, seen_down)
        decisions = placement.place_all(groups, current, observations, now, policy)
        return self._write(records.network.id, decisions, first)

    @staticmethod
    def _groups(records: plan.NetworkRecords, seen_down: Mapping[HostId, frozenset[HostId]]) -> tuple[
            list[Group], dict[str, dict[HostId, HostId]], dict[str, dict[HostId, HostId]]]:
        """One group per shared range and for internet access (:attr:`plan.NetworkRecords.groups`): its
        gateways, the members that send it to one of them (not the gateways themselves, nor hosts
        without a full tunnel for internet access, nor relayed hosts: their relay chooses), and the
        pins (for internet access also the gateway a host names); by group, where each user is now
        (where its agent sends it, given the gateways it reported down) and the plan's first choice
        for it (its placement, or its own order)."""
        groups, current, first = [], {}, {}
        for prefix, cands in sorted(records.groups.items()):
            first[prefix] = {u: ranked[0] for u in sorted(records.members) if records.relay_of(u) is None
                             and (ranked := plan.candidates(records, u, prefix))}
            users = tuple(first[prefix])
            pinned = {u: p for u in users if (p := plan.pin(records, u, prefix)) is not None}
            groups.append(Group(prefix, cands, users, pinned))
            current[prefix] = {u: g if (down := seen_down.get(u)) is None else
                               plan.active_gateway(records, u, prefix, down) or g
                               for u, g in first[prefix].items()}
        return groups, current, first

    def _write(self, nid: NetworkId, decisions: Iterable[Decision],
               first: Mapping[str, Mapping[HostId, HostId]]) -> int:
        """The new placements on the hosts' roles wherever the plan would rank another gateway
        first (a move, or an agent's own switch confirmed: so the host stays there once the
        gateway it left is back), up to MAX_ROLE_WRITES hosts per write (one broadcast each); a
        write that lost a race is left to the next pass."""
        wanted: dict[HostId, dict[str, HostId]] = {}
        for d in decisions:
            for m in d.moves:
                log.info("failover: %s in %s for %s: %s -> %s (%s)", m.user, nid, d.group,
                         m.from_gateway, m.to_gateway, m.reason)
            for user, gateway in d.placement.items():
                # (a pinned host's first choice is its pin: it is never written)
                if first[d.group].get(user, gateway) != gateway:
                    wanted.setdefault(user, {})[d.group] = gateway
        hosts = sorted(wanted)
        moved = 0
        for i in range(0, len(hosts), MAX_ROLE_WRITES):
            chunk = hosts[i:i + MAX_ROLE_WRITES]
            try:
                moved += self._write_chunk(nid, chunk, wanted)
            except (StaleWriteError, UnavailableError) as e:
                log.warning("failover: placements of %d hosts in %s left to the next pass: %s",
                            len(chunk), nid, e)
        return moved

    def _write_chunk(self, nid: NetworkId, chunk: list[HostId],
                     wanted: Mapping[HostId, Mapping[str, HostId]]) -> int:
        olds: list[Host] = []
        news: list[Host] = []
        for hid in chunk:
            host = self._d.store.get_host(hid)
            if host is None or nid not in host.addresses:
                continue
            role = host.roles.get(nid, MemberRole())
            placed = {**dict(role.placed), **wanted[hid]}
            new_role = replace(role, placed=tuple(sorted(placed.items())))
            if new_role != role:
                olds.append(host)
                news.append(host.with_role(nid, new_role))
        if not olds:
            return 0
        (change,) = outbox = self._stream.new_changes([nid], host_ids=tuple(h.id for h in olds))
        self._d.store.set_member_roles(olds, news, nid, change=change)
        self._stream.send(outbox)
        return len(olds)


def _relays_pairs(records: plan.NetworkRecords) -> bool:
    """Whether the network has an auto-relay gateway or a recorded pair: else no pass does any work."""
    return any((m.role.gateway is not None and m.role.gateway.auto_relay) or m.role.pair_relays
               for m in records.members.values())


def _says_of_pairs(records: plan.NetworkRecords, reporter: HostId, status: HostStatus) -> bool:
    """Whether a report may change the network's pairs: it says a member that is no gateway is
    down, carries ``direct``, or its reporter is an end of a recorded pair."""
    if not _relays_pairs(records):
        return False
    if status.direct:
        return True
    if any(not r.up and r.target in records.members and records.gateway(r.target) is None
           for r in status.latency):
        return True
    return any(reporter in pair for pair in autorelay.recorded(records))
