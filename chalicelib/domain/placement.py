"""Which HA gateway serves each host: the failover functions' placement, as one pure function.

Several gateways may serve the same thing (an egress range, internet access): a *group*.
Agents switch to the next live candidate on their own when the active one dies (the fast
path); this function owns the slower decisions the control plane makes from the latest
reports, event-driven and once a minute: where new hosts go, who must leave a dead or
silent gateway, who gains enough to move, and how load spreads across equals. The caller
writes the result as one conditional change and logs each :class:`Move` with its reason.

The rules (each one a property test in ``tests/unit/test_placement.py``):

1. Never a gateway that is down for the user (its latest fresh sample says down, or loss
   above ``max_loss_pct``), silent (its own reports stopped for ``silent_after``), or not a
   candidate, while a live candidate exists. With none live, the user keeps its current
   candidate (moving cannot help) and is listed in :attr:`Decision.stranded`.
2. A user leaves a live current gateway for latency only when another one is *clearly
   better* — at least ``hysteresis_ms`` lower *and* below ``hysteresis_ratio`` of the current
   RTT (Tailscale's home-region rule) — and the gateway it goes to is itself clearly better.
   Noise inside the band (it makes no gateway clearly better, and changes no user's equals of
   rule 3) moves nobody: headscale's anti-flap, a healthy primary is kept. A user whose
   latency to its live current gateway is unknown stays. A gateway back from silence for less
   than ``settle_after`` (``Observations.up_since``) is no target of latency moves yet.
3. New users and users that must leave go to the best live candidate by RTT. Candidates
   within *half* the hysteresis (``hysteresis_ms / 2``) of the best count as equal: among
   them the least loaded wins, then a rendezvous hash of (user, gateway), so placements are
   deterministic and spread. Half, not the whole band: a placement at the edge of the band
   would be one millisecond of drift away from a "clearly better" switch; half the band
   leaves the other half as margin.
4. Balance: across the gateways that are equal for a user (rule 3's half band, the user's
   current one among them), no user sits on a gateway two or more users busier than an equal
   one. Rebalancing moves a user only between such equals, from the busiest gateway to the
   least busy, preferring the users that lose least latency; each move lowers Σ load² by at
   least 2, so it ends, and with one set of equals it moves exactly as many users as getting
   within one of even needs. So a recovered gateway takes users as new users, users leaving a
   dead gateway and this rebalancing, and only once settled by clear latency gains: it does not
   take its old users back with it each time it comes and goes.
5. Converges: run again on its own output with the same observations, it moves nobody.
6. Bounded switching: every placement lands within ``hysteresis_ms / 2`` of the user's best,
   and a latency switch needs another gateway ``hysteresis_ms`` better, so between a move and
   the user's next latency switch the RTT difference of two gateways must drift by more than
   ``hysteresis_ms / 2``. If no RTT changes by more than ``s`` ms between runs, a user makes at
   most ``1 + R * 4 * s / hysteresis_ms`` latency switches in ``R`` runs (plus balance moves,
   each of which lowers Σ load² by at least 2), and at most one move per group per run. (A
   random walk of 0.5 ms steps over 100 runs: bound 21, observed at most 1 per user; without
   the hysteresis 15–52.)

Pinned users (the operator's choice) are placed on their pinned gateway, even a down one,
count in its load and are never moved otherwise. Load is counted per group.

>>> g = Group("10.0.0.0/16", candidates=("gw_a", "gw_b"), users=("h1", "h2"))
>>> obs = Observations(samples={"h1": {"gw_a": Sample(20.0, at=100), "gw_b": Sample(60.0, at=100)},
...                             "h2": {"gw_a": Sample(5.0, up=False, at=100)}},
...                    reported_at={"gw_a": 100, "gw_b": 100})
>>> d = place(g, {"h1": "gw_b", "h2": "gw_a"}, obs, now=110)
>>> dict(d.placement)
{'h1': 'gw_a', 'h2': 'gw_b'}
>>> [(m.user, m.reason) for m in d.moves]
[('h1', 'better'), ('h2', 'down')]
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from .ids import HostId

__all__ = ["Decision", "Group", "Move", "Observations", "Policy", "Reason", "Sample", "place", "place_all"]

Reason = Literal["new", "down", "silent", "better", "balance", "pinned"]


@dataclass(frozen=True)
class Policy:
    """The knobs of placement; the defaults follow Tailscale's hysteresis and the agents' timings.

    ``stale_after`` and ``silent_after`` must exceed the agents' heartbeat (a report at least
    every 300 s, ``agent.runner.Timings``; changes are reported at once): two heartbeats and one
    scheduled run. A gateway is not declared silent between two of its normal reports.
    """

    hysteresis_ms: float = 10.0  # a switch gains at least this much …
    hysteresis_ratio: float = 2 / 3  # … and the new RTT is below this share of the current one
    stale_after: int = 660  # s: an older sample says nothing (unknown latency, not down)
    silent_after: int = 660  # s: a gateway whose own reports stopped this long is down for everyone
    max_loss_pct: float = 50.0  # more loss than this counts as down
    rebalance: bool = True  # False: only new, forced, pinned and latency moves
    settle_after: int = 300  # s: a gateway back from silence takes no latency moves for this long

    def clearly_better(self, rtt: float, current: float) -> bool:
        """Whether ``rtt`` beats ``current`` past the hysteresis (both conditions, as Tailscale).

        >>> Policy().clearly_better(89.0, 100.0), Policy().clearly_better(60.0, 100.0)
        (False, True)
        """
        return rtt <= current - self.hysteresis_ms and rtt < self.hysteresis_ratio * current


@dataclass(frozen=True)
class Sample:
    """One user's latest probe summary of one gateway, as reported at ``at`` (s).

    ``rtt_ms`` None: no reply measured (latency unknown; whether the gateway is down is ``up``).
    """

    rtt_ms: float | None
    loss_pct: float = 0.0
    up: bool = True
    at: int = 0


@dataclass(frozen=True)
class Observations:
    """The latest reports: ``samples`` by user, then gateway (a host's latest report of what it measured),
    and each gateway's own last report time (s; a gateway missing here never reported: silent) and
    since when it has been reporting without a silence (s; missing: long enough to have settled)."""

    samples: Mapping[HostId, Mapping[HostId, Sample]] = field(default_factory=dict)
    reported_at: Mapping[HostId, int] = field(default_factory=dict)
    up_since: Mapping[HostId, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    """Gateways that can each serve one thing (``id``: an egress range, ``"0.0.0.0/0"``: internet access),
    and its users.

    ``pinned`` maps a user to the one gateway the operator chose for it.
    """

    id: str
    candidates: tuple[HostId, ...]
    users: tuple[HostId, ...]
    pinned: Mapping[HostId, HostId] = field(default_factory=dict)


@dataclass(frozen=True)
class Move:
    """``user`` of ``group`` goes from ``from_gateway`` (None: it had none) to ``to_gateway``, because
    ``reason``: ``new`` (no gateway, or not a candidate), ``down`` or ``silent`` (its gateway is),
    ``better`` (clearly, past the hysteresis), ``balance`` (between equals), ``pinned`` (by the operator).
    The reason is why the user left; rebalancing in the same pass may then have moved it on to another
    of its equals (two legal steps, one move)."""

    group: str
    user: HostId
    from_gateway: HostId | None
    to_gateway: HostId
    reason: Reason


@dataclass(frozen=True)
class Decision:
    """A group's new placement (user → gateway, every user with a candidate), the moves that lead
    there from the current one (one per moved user, in user order), and the users with no live
    candidate (kept where they were, or placed on a candidate if they had none)."""

    group: str
    placement: Mapping[HostId, HostId]
    moves: tuple[Move, ...]
    stranded: tuple[HostId, ...] = ()


_DEFAULT = Policy()
_NONE: Mapping[HostId, Sample] = {}


def place(group: Group, current: Mapping[HostId, HostId], observations: Observations, now: int,
          policy: Policy = _DEFAULT) -> Decision:
    """One group's placement from the current one and the latest observations (the rules above).

    Users absent from ``current`` or placed on a gateway that is not a candidate are placed
    anew. Deterministic: the same inputs give the same output, whatever the order of ``users``.
    """
    return _Placer(observations, now, policy, group.candidates).place(group, current)


def place_all(groups: Iterable[Group], current: Mapping[str, Mapping[HostId, HostId]],
              observations: Observations, now: int, policy: Policy = _DEFAULT) -> tuple[Decision, ...]:
    """:func:`place` for every group (``current`` by group id), reading each user's samples once
    for all groups: one scheduled pass over a network."""
    groups = tuple(groups)
    placer = _Placer(observations, now, policy, {g for group in groups for g in group.candidates})
    return tuple(placer.place(group, current.get(group.id, {})) for group in groups)


class _View:
    """One user's view of the gateways: the live ones with their RTT (None: unknown)."""

    __slots__ = ("live", "ranked")

    def __init__(self, live: dict[HostId, float | None]) -> None:
        self.live = live
        # Live gateways with a known RTT, best first (ties in gateway order): scanning a prefix of
        # this finds a group's best and its equals without looking at every candidate. Gateways,
        # not (rtt, gateway) pairs: fewer objects for the collector in a pass over 10^5 placements.
        self.ranked = sorted(g for g, rtt in live.items() if rtt is not None)
        self.ranked.sort(key=live.__getitem__)  # type: ignore[arg-type]  # stable: ties stay in name order


class _Placer:
    """One pass: which gateways are silent or unsettled, each user's view (read once, for all groups)."""

    def __init__(self, observations: Observations, now: int, policy: Policy,
                 gateways: Iterable[HostId]) -> None:
        self.policy = policy
        self.now = now
        self.samples = observations.samples
        self.gateways = tuple(sorted(set(gateways)))
        self.silent = frozenset(g for g in self.gateways
                                if now - observations.reported_at.get(g, now - policy.silent_after - 1)
                                > policy.silent_after)
        self.heard = tuple(g for g in self.gateways if g not in self.silent)  # the others are down for all
        self.unsettled = frozenset(g for g in self.heard
                                   if now - observations.up_since.get(g, now - policy.settle_after)
                                   < policy.settle_after)
        self.views: dict[HostId, _View] = {}

    def view(self, user: HostId) -> _View:
        v = self.views.get(user)
        if v is None:
            p, now, samples = self.policy, self.now, self.samples.get(user, _NONE)
            live: dict[HostId, float | None] = {}
            for g in self.heard:
                s = samples.get(g)
                if s is None or now - s.at > p.stale_after:
                    live[g] = None
                elif s.up and s.loss_pct <= p.max_loss_pct:
                    live[g] = s.rtt_ms
            v = self.views[user] = _View(live)
        return v

    def equals(self, view: _View, candidates: Mapping[HostId, object]) -> tuple[float | None, list[HostId]]:
        """(the user's best known RTT to a live candidate, or None; the live candidates equal to it:
        within half the band of it, best first — every live candidate when none has a known RTT)."""
        half = self.policy.hysteresis_ms / 2
        live = view.live
        out: list[HostId] = []
        best = 0.0
        for g in view.ranked:
            if g in candidates:
                if not out:
                    best = live[g]  # type: ignore[assignment]
                elif live[g] - best >= half:  # type: ignore[operator]
                    break
                out.append(g)
        if out:
            return best, out
        return None, [g for g in sorted(candidates) if g in live]

    def place(self, group: Group, current: Mapping[HostId, HostId]) -> Decision:
        p = self.policy
        load = dict.fromkeys(group.candidates, 0)  # also the set of candidates
        position: dict[HostId, HostId] = {}
        reasons: dict[HostId, Reason] = {}
        stranded: list[HostId] = []
        equal: dict[HostId, list[HostId]] = {}  # users with more than one equal: rebalancing may move them
        movers: list[tuple[HostId, Reason, list[HostId]]] = []  # (user, reason, where it may go)
        pinned, views, view_of, equals, clearly_better = (group.pinned, self.views, self.view, self.equals,
                                                          p.clearly_better)

        # A gateway back from silence for less than settle_after is no target of latency moves:
        # one that comes and goes would otherwise drag its users back and forth with it.
        settled = {g: 0 for g in load if g not in self.unsettled} if self.unsettled else load

        for u in dict.fromkeys(group.users):  # each once, in the given order
            if pinned and u in pinned:
                pin = position[u] = pinned[u]
                if pin in load:
                    load[pin] += 1
                if current.get(u) != pin:
                    reasons[u] = "pinned"
                continue
            cur = current.get(u)
            view = views.get(u) or view_of(u)
            best, eq = equals(view, load)
            if len(eq) > 1:
                equal[u] = eq  # a choice: rebalancing may use it
            if cur in load and cur in view.live:
                rtt = view.live[cur]  # type: ignore[index]
                if settled is not load:
                    best, better = equals(view, settled)
                else:
                    better = eq
                if rtt is None or best is None or not clearly_better(best, rtt):
                    position[u] = cur  # type: ignore[assignment]
                    load[cur] += 1  # type: ignore[index]
                else:
                    live = view.live
                    movers.append((u, "better", [g for g in better if clearly_better(live[g], rtt)]))  # type: ignore[arg-type]
                continue
            reason: Reason = "new" if cur not in load else "silent" if cur in self.silent else "down"
            if eq:
                movers.append((u, reason, eq))
            elif cur in load:
                stranded.append(u)  # moving cannot help: nothing is live for it
                position[u] = cur  # type: ignore[assignment]
                load[cur] += 1  # type: ignore[index]
            elif load:
                stranded.append(u)
                movers.append((u, reason, sorted(load)))

        # Movers go in user order after every stayer is counted, each to the least loaded of
        # its options (equals; for a latency move those clearly better; every candidate for a
        # user with nothing live), so the order of arrival in one run does not decide who gets
        # the better gateway.
        movers.sort(key=lambda m: m[0])
        for u, reason, options in movers:
            target = self.least_loaded(u, options, load)
            position[u] = target
            load[target] += 1
            reasons[u] = reason

        if p.rebalance:
            for u in _rebalance(load, position, equal, views):
                reasons.setdefault(u, "balance")

        moves = tuple(Move(group.id, u, current.get(u), position[u], reasons[u])
                      for u in sorted(reasons) if position.get(u) != current.get(u))
        return Decision(group.id, position, moves, tuple(sorted(stranded)))

    @staticmethod
    def least_loaded(user: HostId, options: list[HostId], load: Mapping[HostId, int]) -> HostId:
        if len(options) == 1:
            return options[0]
        low = min(load[g] for g in options)
        tied = [g for g in options if load[g] == low]
        if len(tied) == 1:
            return tied[0]
        return min(tied, key=lambda g: _rendezvous(user, g))


def _rebalance(load: dict[HostId, int], position: dict[HostId, HostId],
               equal: Mapping[HostId, list[HostId]], views: Mapping[HostId, _View]) -> list[HostId]:
    """Greedy single moves between equals, from the busiest gateway to the least busy one, while
    a movable user's equals differ by two or more; returns the users moved, in order.

    A user is movable when it sits on one of its equals (so not pinned, nor kept inside the band
    or with an unknown RTT: those are not ours to move). Each move lowers Σ load² by at least 2.
    """
    if not load or max(load.values()) - min(load.values()) < 2:
        return []
    # (from, to) → heap of (latency the move loses, user): the cheapest move first.
    pairs: dict[tuple[HostId, HostId], list[tuple[float, HostId]]] = {}
    movable: dict[HostId, dict[HostId, float]] = {}
    for u, eq_list in equal.items():
        if len(eq_list) < 2:
            continue
        g = position.get(u)
        if g not in eq_list:
            continue
        live = views[u].live
        eq = {h: live[h] or 0.0 for h in eq_list}  # None: no RTT known to any, all equal
        movable[u] = eq
        for h, r in eq.items():
            if h != g:
                pairs.setdefault((g, h), []).append((r - eq[g], u))  # type: ignore[index]
    for heap in pairs.values():
        heapq.heapify(heap)
    moved: list[HostId] = []
    by_name = sorted(load)
    while True:
        busiest = sorted(by_name, key=lambda g: -load[g])
        idlest = sorted(by_name, key=load.__getitem__)
        found = None
        for g in busiest:
            if load[g] - load[idlest[0]] < 2:
                break
            for h in idlest:
                if load[h] > load[g] - 2:
                    break
                queue = pairs.get((g, h))
                while queue and position[queue[0][1]] != g:
                    heapq.heappop(queue)  # moved away since: stale
                if queue:
                    found = (g, h, heapq.heappop(queue)[1])
                    break
            if found:
                break
        if found is None:
            return moved
        g, h, u = found
        position[u] = h
        load[g] -= 1
        load[h] += 1
        moved.append(u)
        eq = movable[u]
        for x, r in eq.items():
            if x != h:
                heapq.heappush(pairs.setdefault((h, x), []), (r - eq[h], u))


def _rendezvous(user: HostId, gateway: HostId) -> bytes:
    """A stable pseudo-random order of gateways per user (highest random weight, lowest wins)."""
    return hashlib.blake2b(f"{user}\0{gateway}".encode(), digest_size=8).digest()
