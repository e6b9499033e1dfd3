"""Automatic relays: which pairs of members go through an auto-relay gateway, as one pure function.

A pair of hosts that cannot reach each other directly (CGNAT on both sides, a firewall that
drops the other's UDP) is relayed through a gateway with ``auto_relay`` on: the plan then
routes each end's traffic for the other to that gateway (:attr:`plan.NetworkRecords.pair_relays`,
recorded on the pair's smaller end: one decision is one member record in one broadcast).
This function decides, from the latest reports and the pairs recorded now, the pairs to
relay, move and end; the caller writes the changed roles (:func:`role_changes`) as one
conditional change and logs each :class:`PairChange` with its reason.

What a report says, and the rules (each one a property test in ``tests/unit/test_autorelay.py``):

1. *Unreachable.* A host reports a peer it has no direct path to (it sent to it and never shook
   hands) as a latency row with ``up`` false: the agent probes such peers through the tunnel,
   and the probe fails while there is no path. A pair (a, b) not relayed yet is relayed when
   either end's fresh report (younger than ``stale_after``) says the other is down, and the
   other is not in that end's ``direct`` set (below), and only when both ends have a fresh
   report: a host whose agent is not running or has not reported yet is off, not unreachable
   (relaying it would waste a relay, and the pair would then wait for rule 4 to end). Both ends
   are members without a gateway role: a gateway's down row is what the host's HA probes say
   (a dead gateway, which placement and the agent's fast path handle; relaying every user to a
   dead gateway through another would write a pair per user in the middle of a failover); a
   host that cannot reach a gateway directly uses another gateway of the range or a relay set
   by hand.
2. *Through the best relay.* The via is an auto-relay gateway the pair can hold through
   (:meth:`plan.NetworkRecords.pair_holds`: a member, neither end, not relayed itself, no pair
   of its own with either end), whose own report is fresh (a silent gateway is no relay), and
   that neither end reports down. Among those: the lowest combined RTT a→r + b→r as the ends
   measured it, an RTT neither end knows counting as worse than any known one (fewer unknowns
   first), then a rendezvous hash of (pair, via), so every run and process picks alike and pairs
   spread over equal relays.
3. *Kept.* A relayed pair stays on its via while the via stays usable (rule 2's conditions but
   the ranking): no move for a lower RTT (no flapping between relays); a via that is no longer
   usable moves the pair to the best usable one, or ends it when there is none (the direct path
   may work again; rule 1 relays it again when it does not).
4. *Direct again.* A relayed pair ends when both ends' fresh reports list the other in
   ``direct``: the agent's verdict, with its own hysteresis, that a probe of the other over the
   *underlay* succeeded for a while. Not ``up``: while relayed, a probe of the peer's overlay
   address goes through the relay and says nothing about the direct path (the module's last
   section says how the agent reaches that verdict).
5. *Converges and is deterministic.* Run again on its own result with the same reports it
   changes nothing; a pair is never both kept direct and relayed (the result is one mapping,
   pair → via).

Where ``direct`` comes from (``agent/underlay.py``): each end of a relayed pair (both read
the pair in the plan) sends a small authenticated UDP echo to the other's reported endpoints
from a second socket bound next to its WireGuard port (``listen_port + 1``), every 2 s, both
ends at once so that NAT mappings open (the simultaneous-open of hole punching); ``direct``
holds after 5 answers in a row over at least 30 s, and is dropped at the first miss; after a
flap (a pair ended on its word and relayed again within 10 minutes) the agent doubles that time.
It is an approximation (the WireGuard port's own NAT mapping may differ from the probe port's):
a pair ended on a wrong verdict is relayed again by rule 1 within the agent's no-handshake bound
(one REKEY_TIMEOUT, ``agent/reach.py``). The alternative that needs no probe, ending a pair on a
schedule and relaying it again when it fails, costs an outage of that bound at every try.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from .ids import HostId
from .models import LatencyRow
from .placement import Policy as PlacementPolicy
from .plan import NetworkRecords

__all__ = ["Policy", "Report", "PairChange", "PairDecision", "decide", "recorded", "release", "role_changes"]

Pair = tuple[HostId, HostId]  # (a, b), a < b
Reason = Literal["unreachable", "via_unusable", "direct"]


@dataclass(frozen=True)
class Policy:
    """``stale_after``: a report older than this (s) says nothing. It must exceed the agents'
    heartbeat (300 s: an agent with nothing new reports that seldom), so it is placement's: two
    heartbeats and a minute, the time after which a host shows offline too."""

    stale_after: int = PlacementPolicy.stale_after


@dataclass(frozen=True)
class Report:
    """A host's latest report as the decision reads it: when (s), its latency rows (gateways, and
    peers it has no direct path to), and ``direct``: the peers of its relayed pairs whose
    underlay path answered for a while (rule 4; empty until agents send it)."""

    at: int
    rows: tuple[LatencyRow, ...] = ()
    direct: frozenset[HostId] = frozenset()

    def row(self, target: HostId) -> LatencyRow | None:
        return next((r for r in self.rows if r.target == target), None)


@dataclass(frozen=True)
class PairChange:
    """The pair (a, b) goes from ``from_via`` (None: it was direct) to ``to_via`` (None: direct)."""

    a: HostId
    b: HostId
    from_via: HostId | None
    to_via: HostId | None
    reason: Reason


@dataclass(frozen=True)
class PairDecision:
    """Every pair relayed after the decision (pair → via) and the changes that lead there, in pair order."""

    pairs: Mapping[Pair, HostId] = field(default_factory=dict)
    changes: tuple[PairChange, ...] = ()


def recorded(records: NetworkRecords) -> dict[Pair, HostId]:
    """Every pair recorded on a member's role (holding or not), pair → via."""
    return {(a, b): via for a in sorted(records.members)
            for b, via in records.members[a].role.pair_relays if a < b}


def decide(records: NetworkRecords, reports: Mapping[HostId, Report], now: int,
           policy: Policy = Policy()) -> PairDecision:
    """The pairs to relay, move and end (module docstring, rules 1–5), from the records (with the
    pairs recorded now) and each host's latest report.

    It runs the rules (:func:`_decide_once`) until they change nothing, so that run again on its
    own result it changes nothing: a pair that ends in the first pass may free a via for a pair
    that found none (rule 2 refuses a via paired with an end), so a second pass may relay more;
    a pair relayed or moved never makes another's via unusable (an end paired with a via reports
    it down, or is reported down by it), so a third finds nothing. Each pair's change is reported
    once, from where it was to where it ends, with the reason of its last step.
    """
    fresh = {h: r for h, r in reports.items() if now - r.at <= policy.stale_after and h in records.members}
    start = recorded(records)
    current, reasons = records, dict[Pair, Reason]()
    for _ in range(_PASSES):
        step = _decide_once(current, fresh)
        if not step:
            break
        reasons.update((p, why) for p, (_, why) in step.items())
        current = _with_pairs(current, {**{p: v for p, (v, _) in step.items() if v is not None},
                                        **{p: v for p, v in recorded(current).items() if p not in step}})
    out = recorded(current)
    changes = tuple(PairChange(a, b, start.get((a, b)), out.get((a, b)), reasons[(a, b)])
                    for a, b in sorted(set(start) | set(out)) if start.get((a, b)) != out.get((a, b)))
    return PairDecision(out, changes)


_PASSES = 3  # two change something (see decide); the third is a guard


Step = dict[Pair, tuple[HostId | None, Reason]]


def _decide_once(records: NetworkRecords, fresh: Mapping[HostId, Report]) -> Step:
    """One pass of the rules: pair → (its new via, None: direct; why), for the pairs that change.

    In order, each on the records as the steps before leave them (a pair recorded on an end
    makes that end's partner no via for the end's other pairs, so what ends first frees vias):
    the pairs that go direct; the pairs whose via is unusable, moved or, with no usable via,
    ended; the new pairs, through the best via of what is left.
    """

    def down(x: HostId, target: HostId) -> bool:
        row = fresh[x].row(target) if x in fresh else None
        return row is not None and not row.up

    def best(on: NetworkRecords, a: HostId, b: HostId) -> HostId | None:
        options = [r for r in sorted(on.members) if _usable(on, fresh, down, a, b, r)]
        return min(options, key=lambda r: _rank(a, b, r, fresh), default=None)

    now_pairs = recorded(records)
    out: Step = {}
    for a, b in sorted(now_pairs):
        if a in fresh and b in fresh and b in fresh[a].direct and a in fresh[b].direct:
            out[(a, b)] = (None, "direct")
    left = _with_pairs(records, {p: v for p, v in now_pairs.items() if p not in out})
    for (a, b), via in sorted(now_pairs.items()):
        if (a, b) not in out and not _usable(left, fresh, down, a, b, via):
            out[(a, b)] = (best(left, a, b), "via_unusable")
    left = _with_pairs(records, {p: v for p, v in now_pairs.items() if out.get(p, (v,))[0] is not None})
    wanted = sorted({(min(x, t.target), max(x, t.target)) for x, r in fresh.items() for t in r.rows
                     if not t.up and t.target in records.members and t.target in fresh and t.target != x
                     and t.target not in r.direct
                     and records.gateway(x) is None and records.gateway(t.target) is None})
    for a, b in wanted:
        if (a, b) not in now_pairs and (to := best(left, a, b)) is not None:
            out[(a, b)] = (to, "unreachable")
    return out


def _usable(records: NetworkRecords, fresh: Mapping[HostId, Report], down: Callable[[HostId, HostId], bool],
            a: HostId, b: HostId, via: HostId) -> bool:
    """Rule 2: the pair can hold through ``via``, whose report is fresh, and no end and the via
    report each other down."""
    return (records.pair_holds(a, b, via) and via in fresh and not down(a, via) and not down(b, via)
            and not down(via, a) and not down(via, b))


def _with_pairs(records: NetworkRecords, pairs: Mapping[Pair, HostId]) -> NetworkRecords:
    """The records with exactly these pairs recorded (on their smaller ends)."""
    members = dict(records.members)
    for a, new in role_changes(records, pairs).items():
        m = members[a]
        members[a] = replace(m, role=replace(m.role, pair_relays=new))
    return NetworkRecords(records.network, members, records.clients, down=records.down)


def _rank(a: HostId, b: HostId, via: HostId, fresh: Mapping[HostId, Report]) -> tuple[int, float, bytes]:
    rtts = [row.rtt_ms if (row := fresh[x].row(via) if x in fresh else None) is not None else None
            for x in (a, b)]
    known = [r for r in rtts if r is not None]
    return (len(rtts) - len(known), sum(known), _rendezvous(a, b, via))


def _rendezvous(a: HostId, b: HostId, via: HostId) -> bytes:
    return hashlib.blake2b(f"{a}\0{b}\0{via}".encode(), digest_size=8).digest()


def role_changes(records: NetworkRecords, pairs: Mapping[Pair, HostId]) -> dict[HostId, tuple[Pair, ...]]:
    """The members whose recorded pairs differ from ``pairs`` (a decision's), each with its new
    ``pair_relays`` (peer → via, sorted): what the caller writes, one member record per owner."""
    want: dict[HostId, list[Pair]] = {}
    for (a, b), via in pairs.items():
        want.setdefault(a, []).append((b, via))
    owners = set(want) | {a for a, _ in recorded(records)}
    return {a: new for a in sorted(owners) if a in records.members
            and (new := tuple(sorted(want.get(a, ())))) != records.members[a].role.pair_relays}




def release(records: NetworkRecords) -> tuple[NetworkRecords, dict[HostId, tuple[Pair, ...]]]:
    """The records without the recorded pairs that do not hold on them (an end or the via left, the
    via is no auto-relay gateway any more, an end is relayed by hand, ...), and the members whose
    ``pair_relays`` that changes, each with its new ones: what a change that makes a pair not hold
    writes in the same write, so no pair outlives what made it valid (:func:`plan.check` refuses a
    pair through a member that is no auto-relay gateway or no member).
    """
    holding = {(a, b): via for (a, b), via in recorded(records).items() if records.pair_holds(a, b, via)}
    changes = role_changes(records, holding)
    return (_with_pairs(records, holding) if changes else records), changes
