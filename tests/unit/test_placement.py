"""The HA placement function (chalicelib.domain.placement): its rules as properties over generated
groups and observations, each checked against this file's own reading of the rule (the naive
helpers below, written from the rule's words, not from the implementation), and the whole function
against a deliberately simple brute-force model (as headscale checks its primary-route election).

1. never a dead, silent or non-candidate gateway while a live candidate exists; none live: stay;
2. a latency move only past the hysteresis (≥ 10 ms *and* < ⅔) and only to a settled gateway,
   noise inside the band moves nobody, an unknown latency to a live current gateway stays;
3. new users and users that must leave go to the best, ties (half band) to the least loaded;
4. balanced within one host of even across equals, with as few moves as that needs; a recovered
   gateway takes users by new placements and rebalancing, and its old users only once settled;
5. it converges: its own output, the same observations, no move;
6. under a random walk of latencies a user's latency switches stay within the stated bound;
7. it equals the brute-force model on small inputs.
"""

from __future__ import annotations

import doctest
import hashlib
import random
from collections import Counter
from collections.abc import Mapping

from hypothesis import given, settings, target
from hypothesis import strategies as st

from chalicelib.domain import placement
from chalicelib.domain.ids import HostId
from chalicelib.domain.placement import Decision, Group, Move, Observations, Policy, Sample, place, place_all

NOW = 100_000
POLICY = Policy()
GATEWAYS = tuple(HostId(f"gw_{c}") for c in "abcde")
USERS = tuple(HostId(f"host_{i:02d}") for i in range(10))


# --- the rules' words, naively --------------------------------------------------------------------

def is_live(obs: Observations, u: HostId, g: HostId, policy: Policy = POLICY, now: int = NOW) -> bool:
    """Live for ``u``: the gateway reported within ``silent_after``, and ``u``'s latest sample, if
    still fresh, says up with loss no more than ``max_loss_pct``."""
    last = obs.reported_at.get(g)
    if last is None or now - last > policy.silent_after:
        return False
    s = obs.samples.get(u, {}).get(g)
    if s is None or now - s.at > policy.stale_after:
        return True
    return s.up and s.loss_pct <= policy.max_loss_pct


def rtt_of(obs: Observations, u: HostId, g: HostId, policy: Policy = POLICY, now: int = NOW) -> float | None:
    s = obs.samples.get(u, {}).get(g)
    if not is_live(obs, u, g, policy, now) or s is None or now - s.at > policy.stale_after:
        return None
    return s.rtt_ms


def settled(obs: Observations, g: HostId, policy: Policy = POLICY, now: int = NOW) -> bool:
    """Back from silence for at least ``settle_after`` (or never known to have been away)."""
    since = obs.up_since.get(g)
    return since is None or now - since >= policy.settle_after


def clearly_better(a: float, b: float) -> bool:
    return a <= b - 10 and a < b * 2 / 3


def equals_of(obs: Observations, group: Group, u: HostId, policy: Policy = POLICY) -> dict[HostId, float]:
    """The live candidates within 5 ms of the best known RTT (every live one when none is known)."""
    live = [g for g in group.candidates if is_live(obs, u, g, policy)]
    known = {g: rtt_of(obs, u, g, policy) for g in live if rtt_of(obs, u, g, policy) is not None}
    if not known:
        return dict.fromkeys(live, 0.0)
    best = min(known.values())
    return {g: r for g, r in known.items() if r - best < policy.hysteresis_ms / 2}  # type: ignore[operator]


def observations(flat: Mapping[tuple[HostId, HostId], Sample], reported_at: Mapping[HostId, int],
                 up_since: Mapping[HostId, int] | None = None) -> Observations:
    """Observations from samples keyed by (user, gateway)."""
    nested: dict[HostId, dict[HostId, Sample]] = {}
    for (u, g), s in flat.items():
        nested.setdefault(u, {})[g] = s
    return Observations(nested, reported_at, up_since or {})


def loads(group: Group, d: Decision) -> Counter[HostId]:
    c: Counter[HostId] = Counter(dict.fromkeys(group.candidates, 0))
    c.update(g for g in d.placement.values() if g in group.candidates)
    return c


def rendezvous(u: HostId, g: HostId) -> bytes:
    return hashlib.blake2b(f"{u}\0{g}".encode(), digest_size=8).digest()


# --- rule 7: the brute-force model ----------------------------------------------------------------

def model(group: Group, current: Mapping[HostId, HostId], obs: Observations,
          policy: Policy = POLICY) -> dict[HostId, HostId]:
    """Every decision by enumerating every candidate afresh, one user at a time, in user order:
    stayers first, then movers to the least loaded equal (for a latency move: the settled
    gateways within 5 ms of the best settled one, clearly better; rendezvous breaks ties), then single
    rebalancing moves, each the first of all possible ones in (busiest, idlest, least lost, user)
    order, until no two equals of a movable user differ by two."""
    cands = sorted(set(group.candidates))
    users = sorted(set(group.users))
    pos: dict[HostId, HostId] = {}
    movers: list[tuple[HostId, list[HostId]]] = []
    for u in users:
        if u in group.pinned:
            pos[u] = group.pinned[u]
            continue
        cur = current.get(u)
        live = [g for g in cands if is_live(obs, u, g, policy)]
        if cur in live:
            r = rtt_of(obs, u, cur, policy)  # type: ignore[arg-type]
            ready = [g for g in live if settled(obs, g, policy)]
            known = {g: x for g in ready if (x := rtt_of(obs, u, g, policy)) is not None}
            if r is not None and known and clearly_better(min(known.values()), r):
                near = [g for g, x in known.items() if x - min(known.values()) < policy.hysteresis_ms / 2]
                movers.append((u, [g for g in near if clearly_better(known[g], r)]))
            else:
                pos[u] = cur  # type: ignore[assignment]
        elif live:
            movers.append((u, list(equals_of(obs, group, u, policy))))
        elif cur in cands:
            pos[u] = cur  # type: ignore[assignment]  # nothing live: stay
        elif cands:
            movers.append((u, cands))

    def load(g: HostId) -> int:
        return sum(1 for x in pos.values() if x == g)

    for u, options in movers:
        pos[u] = min(options, key=lambda g: (load(g), rendezvous(u, g)))
    if not policy.rebalance:
        return pos
    while True:
        possible = []
        for u in users:
            g = pos.get(u)
            eq = equals_of(obs, group, u, policy)
            if u in group.pinned or g not in eq:
                continue
            for h, x in eq.items():
                if load(g) - load(h) >= 2:  # type: ignore[arg-type]
                    possible.append(((-load(g), g, load(h), h, x - eq[g], u), h))  # type: ignore[arg-type,index]
        if not possible:
            return pos
        (_, _, _, _, _, u), h = min(possible)
        pos[u] = h


# --- generated worlds -----------------------------------------------------------------------------

# Mostly healthy, as a network is: a few of each way to be dead or unknown.
AGES = st.sampled_from([0, 5, 30, 60, 300, 600, 600, 660, 0, 5, 30, 661, 5000])  # the last two: stale/silent


ANY_RTT = st.one_of(st.none(), st.floats(0.1, 300, allow_nan=False),
                    st.sampled_from([1.0, 5.0, 10.0, 15.0, 20.0, 30.0, 100.0]))
CLOSE_RTT = st.none() | st.floats(20, 26)  # mostly equals: the worlds where load decides


@st.composite
def samples(draw: st.DrawFn, rtts: st.SearchStrategy[float | None] = ANY_RTT) -> Sample:
    rtt = draw(rtts)
    return Sample(rtt, draw(st.sampled_from([0.0] * 12 + [10.0, 50.0, 50.1, 100.0])),
                  draw(st.sampled_from([True] * 9 + [False])), NOW - draw(AGES))


@st.composite
def worlds(draw: st.DrawFn, policy: Policy = POLICY) -> tuple[Group, dict[HostId, HostId], Observations]:
    gws = draw(st.lists(st.sampled_from(GATEWAYS), min_size=1, max_size=5, unique=True))
    cands = tuple(g for g in gws if draw(st.integers(0, 5)))  # now and then one that is not a candidate
    users = tuple(draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=10, unique=True)))
    pinned = {u: draw(st.sampled_from(gws)) for u in users if draw(st.integers(0, 9)) == 0}
    current = {u: draw(st.sampled_from(gws)) for u in users if draw(st.integers(0, 5))}
    rtts = draw(st.sampled_from([ANY_RTT, CLOSE_RTT]))
    obs = observations(
        {(u, g): draw(samples(rtts)) for u in users for g in gws if draw(st.integers(0, 4))},
        reported_at={g: NOW - draw(AGES) for g in gws if draw(st.integers(0, 9))},
        up_since={g: NOW - draw(st.sampled_from([0, 100, 299, 300, 5000]))
                  for g in gws if not draw(st.integers(0, 3))})
    return Group("10.0.0.0/16", cands, users, pinned), current, obs


def decided() -> st.SearchStrategy[tuple[Group, dict[HostId, HostId], Observations, Decision]]:
    """A world and what :func:`place` decides in it."""
    return worlds().map(lambda w: (*w, place(*w, NOW)))


WORLDS = settings(max_examples=300)


# --- rule 1 ---------------------------------------------------------------------------------------

@WORLDS
@given(decided())
def test_never_a_dead_silent_or_foreign_gateway_while_a_live_candidate_exists(case):
    group, current, obs, d = case
    for u in group.users:
        if u in group.pinned:
            assert d.placement[u] == group.pinned[u]  # the operator's choice, even when down
            continue
        live = [g for g in group.candidates if is_live(obs, u, g)]
        if live:
            assert d.placement[u] in live, (u, d.placement[u], live)
            assert u not in d.stranded
        elif current.get(u) in group.candidates:
            assert d.placement[u] == current[u] and u in d.stranded  # moving cannot help
        elif group.candidates:
            assert d.placement[u] in group.candidates and u in d.stranded
        else:
            assert u not in d.placement


def test_a_gateway_that_went_silent_loses_its_users_to_live_ones_and_nothing_live_keeps_them():
    group = Group("internet", (HostId("gw_a"), HostId("gw_b")), USERS[:4])
    fresh = {g: NOW - 10 for g in group.candidates}
    d = place(group, dict.fromkeys(USERS[:4], HostId("gw_a")),
              Observations({}, {**fresh, "gw_a": NOW - POLICY.silent_after - 1}), NOW)
    assert set(d.placement.values()) == {"gw_b"}
    assert {(m.from_gateway, m.to_gateway, m.reason) for m in d.moves} == {("gw_a", "gw_b", "silent")}
    gone = place(group, d.placement, Observations({}, {}), NOW)  # every gateway silent
    assert gone.placement == d.placement and not gone.moves and gone.stranded == USERS[:4]


# --- rule 2 ---------------------------------------------------------------------------------------

# Mostly whole milliseconds in a small range, which land on the thresholds (10 ms, ⅔, half the
# band) and near one another often; and any RTT.
MS = st.integers(1, 30).map(float)
RTTS = st.one_of(MS, MS, st.integers(1, 120).map(float), st.floats(0.1, 400, allow_nan=False))


@settings(max_examples=500)
@given(cur=RTTS, others=st.lists(RTTS, min_size=1, max_size=4), u=st.sampled_from(USERS))
def test_a_healthy_gateway_is_left_exactly_when_another_is_10ms_and_a_third_better(cur, others, u):
    """One user (no load to balance): it moves iff some live gateway is clearly better, and then to
    a clearly better one within 5 ms of the best (the user varies: so does its rendezvous order)."""
    gws = GATEWAYS[:len(others) + 1]
    obs = observations({(u, g): Sample(r, 0.0, True, NOW) for g, r in zip(gws, (cur, *others), strict=True)},
                       dict.fromkeys(gws, NOW))
    d = place(Group("g", gws, (u,)), {u: gws[0]}, obs, NOW)
    if any(clearly_better(r, cur) for r in others):
        [m] = d.moves
        to = others[gws.index(m.to_gateway) - 1]
        assert m.reason == "better" and clearly_better(to, cur) and to - min(others) < 5
    else:
        assert not d.moves and d.placement[u] == gws[0]


@settings(max_examples=300)
@given(best=st.floats(0.5, 200), over=st.floats(0.01, 20), near=st.floats(0, 4.99), u=st.sampled_from(USERS))
def test_a_latency_move_goes_past_the_hysteresis_not_to_any_equal_of_the_best(best, over, near, u):
    """The best is clearly better than the current; a second gateway is within 5 ms of the best
    (an equal of it) but often not clearly better than the current: the user goes to one that is."""
    cur = max(best + 10, 1.5 * best) + over
    a, b, c = GATEWAYS[:3]
    obs = observations({(u, a): Sample(cur, at=NOW), (u, b): Sample(best, at=NOW),
                        (u, c): Sample(best + near, at=NOW)}, {a: NOW, b: NOW, c: NOW})
    [m] = place(Group("g", (a, b, c), (u,)), {u: a}, obs, NOW).moves
    assert m.to_gateway == b or clearly_better(best + near, cur)


def test_marginal_gains_move_nobody_and_a_clear_one_does():
    u, (a, b) = USERS[0], GATEWAYS[:2]
    group = Group("g", (a, b), (u,))

    def after(cur: float, other: float) -> HostId:
        obs = observations({(u, a): Sample(cur, at=NOW), (u, b): Sample(other, at=NOW)}, {a: NOW, b: NOW})
        return place(group, {u: a}, obs, NOW).placement[u]

    assert after(100.0, 89.0) == a  # 11 ms better but above ⅔: Tailscale stays
    assert after(20.0, 12.0) == a  # below ⅔ but only 8 ms better
    assert after(100.0, 66.0) == b  # both
    assert after(30.0, 20.0) == a  # 10 ms but exactly ⅔: not below it


@st.composite
def banded(draw: st.DrawFn) -> tuple[Group, dict[tuple[HostId, HostId], float], random.Random]:
    """Users with a few near gateways (within 1 ms of one another) and the rest far (clearly worse
    even after the noise): which gateways are equal never changes under noise below 1.9 ms."""
    gws = GATEWAYS[:draw(st.integers(2, 5))]
    users = USERS[:draw(st.integers(1, 10))]
    base: dict[tuple[HostId, HostId], float] = {}
    for u in users:
        b = draw(st.floats(0.5, 150, allow_nan=False))
        near = draw(st.lists(st.sampled_from(gws), min_size=1, unique=True))
        for g in gws:
            base[u, g] = (b + draw(st.floats(0, 1)) if g in near
                          else 1.5 * (b + 3) + 15 + draw(st.floats(0, 100)))
    return Group("g", gws, users), base, draw(st.randoms(use_true_random=False))


@settings(max_examples=200)
@given(banded())
def test_noise_inside_the_band_moves_nobody(case):
    group, base, rng = case
    reported = dict.fromkeys(group.candidates, NOW)

    def observe(noise: float) -> Observations:
        return observations({k: Sample(max(0.01, r + rng.uniform(-noise, noise)), at=NOW)
                             for k, r in base.items()}, reported)

    d = place(group, {}, observe(0), NOW)
    for _ in range(20):
        again = place(group, d.placement, observe(1.9), NOW)
        assert not again.moves, again.moves
        assert again.placement == d.placement


@WORLDS
@given(decided())
def test_an_unknown_latency_to_a_live_current_gateway_stays(case):
    group, current, obs, d = case
    for u, cur in current.items():
        if u in group.pinned or cur not in group.candidates or not is_live(obs, u, cur):
            continue
        if rtt_of(obs, u, cur) is None:
            known = [g for g in group.candidates if rtt_of(obs, u, g) is not None]
            if known:
                assert d.placement[u] == cur  # nothing to compare with: no latency move, not balanced
            else:
                assert d.placement[u] == cur or [m.reason for m in d.moves if m.user == u] == ["balance"]


@WORLDS
@given(decided())
def test_latency_moves_go_only_to_settled_gateways_and_past_the_hysteresis(case):
    """A user leaves for latency only for a settled gateway clearly better than its own; it ends
    there, or, rebalanced in the same pass, on another of its equals (two legal steps in one)."""
    group, current, obs, d = case
    for m in d.moves:
        if m.reason == "better":
            was = rtt_of(obs, m.user, m.from_gateway)  # type: ignore[arg-type]
            assert was is not None
            ready = [g for g in group.candidates if is_live(obs, m.user, g) and settled(obs, g)
                     and (x := rtt_of(obs, m.user, g)) is not None and clearly_better(x, was)]
            assert ready
            assert m.to_gateway in ready or m.to_gateway in equals_of(obs, group, m.user)


def test_a_gateway_back_from_silence_takes_its_users_back_only_once_settled():
    """Users that a gateway 30 ms better than the others lost when it went silent: while it is
    back for less than settle_after they stay where they went (it may come and go again); then
    they go back for the latency."""
    a, b = GATEWAYS[:2]
    users = USERS[:6]
    group = Group("g", (a, b), users)
    rtts = observations({(u, g): Sample(20.0 if g == a else 50.0, at=NOW) for u in users for g in (a, b)},
                        {a: NOW, b: NOW})
    first = place(group, {}, rtts, NOW)
    assert set(first.placement.values()) == {a}
    gone = place(group, first.placement, Observations(rtts.samples, {b: NOW}), NOW)
    assert set(gone.placement.values()) == {b} and {m.reason for m in gone.moves} == {"silent"}
    back = Observations(rtts.samples, {a: NOW, b: NOW}, up_since={a: NOW - 10})
    assert not place(group, gone.placement, back, NOW).moves
    later = place(group, gone.placement, back, NOW - 10 + POLICY.settle_after)
    assert set(later.placement.values()) == {a} and {m.reason for m in later.moves} == {"better"}


# --- rule 3 ---------------------------------------------------------------------------------------

@WORLDS
@given(decided())
def test_new_and_evicted_users_go_to_the_best_live_candidate_within_half_the_band(case):
    group, current, obs, d = case
    for m in d.moves:
        if m.reason in ("new", "down", "silent") and m.user not in d.stranded:
            eq = equals_of(obs, group, m.user)
            assert m.to_gateway in eq, (m, eq)  # (rebalancing only moves between equals, so it holds after)


def test_new_users_spread_over_equal_gateways_and_a_faster_one_wins():
    users = tuple(HostId(f"host_{i:03d}") for i in range(30))
    gws = GATEWAYS[:3]
    group = Group("g", gws, users)
    alive = dict.fromkeys(gws, NOW)
    equal = place(group, {}, Observations({}, alive), NOW)
    assert sorted(loads(group, equal).values()) == [10, 10, 10]
    assert all(m.reason == "new" for m in equal.moves) and len(equal.moves) == 30
    rtts = {(u, g): Sample(20.0 if g == gws[2] else 40.0, at=NOW) for u in users for g in gws}
    fast = place(group, {}, observations(rtts, alive), NOW)
    assert set(fast.placement.values()) == {gws[2]}  # 20 ms beats 40: latency first, load second


# --- rule 4 ---------------------------------------------------------------------------------------

@WORLDS
@given(decided())
def test_balanced_within_one_of_even_across_equal_gateways(case):
    group, current, obs, d = case
    load = loads(group, d)
    for u in group.users:
        g = d.placement.get(u)
        eq = equals_of(obs, group, u)
        if u in group.pinned or g not in eq:
            continue
        for h in eq:
            assert load[h] >= load[g] - 1, (u, g, h, load)  # type: ignore[index]
    for m in d.moves:
        if m.reason == "balance":
            eq = equals_of(obs, group, m.user)
            assert m.from_gateway in eq and m.to_gateway in eq  # no latency lost beyond the band


@settings(max_examples=300)
@given(counts=st.lists(st.integers(0, 12), min_size=2, max_size=5), new=st.integers(0, 5))
def test_among_equals_rebalancing_moves_exactly_as_many_as_getting_within_one_of_even_needs(counts, new):
    """A recovered (or added) gateway is one with few or no users: it fills up by new users first,
    then by the fewest balance moves that bring every gateway within one of even."""
    gws = GATEWAYS[:len(counts)]
    current = {}
    for g, n in zip(gws, counts, strict=True):
        current.update({HostId(f"host_{g}_{i:02d}"): g for i in range(n)})
    newcomers = tuple(HostId(f"host_new_{i}") for i in range(new))
    group = Group("g", gws, (*current, *newcomers))
    d = place(group, current, Observations({}, dict.fromkeys(gws, NOW)), NOW)
    total, k = len(group.users), len(gws)
    q, r = divmod(total, k)
    # The fewest moves: the r busiest keep q + 1, the rest q; add the newcomers where there is room.
    before = sorted(counts, reverse=True)
    need = sum(max(0, c - (q + 1 if i < r else q)) for i, c in enumerate(before))
    assert max(loads(group, d).values()) - min(loads(group, d).values()) <= 1
    assert sum(1 for m in d.moves if m.reason == "balance") == need
    assert Counter(m.reason for m in d.moves)["new"] == new


def test_a_recovered_gateway_gets_new_users_and_rebalancing_but_no_flap_back():
    gws = GATEWAYS[:3]
    a = gws[0]
    users = tuple(HostId(f"host_{i:03d}") for i in range(30))
    group = Group("g", gws, users)
    near = {(u, g): Sample(30.0 + (i + j) % 3, at=NOW)  # within 5 ms: all three are equal for everyone
            for i, u in enumerate(users) for j, g in enumerate(gws)}
    up = dict.fromkeys(gws, NOW)
    first = place(group, {}, observations(near, up), NOW)
    assert sorted(loads(group, first).values()) == [10, 10, 10]
    down = place(group, first.placement, observations(near, {**up, a: NOW - 10_000}), NOW)
    assert loads(group, down)[a] == 0 and {m.reason for m in down.moves} == {"silent"}
    assert len(down.moves) == 10  # only a's users moved
    back = place(group, down.placement, observations(near, up), NOW)
    assert sorted(loads(group, back).values()) == [10, 10, 10]
    assert len(back.moves) == 10 and {m.reason for m in back.moves} == {"balance"}
    assert {m.to_gateway for m in back.moves} == {a}  # nobody else shuffled


# --- rule 5 ---------------------------------------------------------------------------------------

@WORLDS
@given(decided())
def test_it_converges_its_own_output_moves_nobody(case):
    group, current, obs, d = case
    again = place(group, d.placement, obs, NOW)
    assert not again.moves, again.moves
    assert again.placement == d.placement


# --- rule 6 ---------------------------------------------------------------------------------------

STEP = 0.5  # ms: the largest change of one RTT between two runs
RUNS = 100
# The most latency switches one user makes in RUNS runs (chalicelib.domain.placement, rule 6): 21.
# A placement lands within 5 ms of the best and a switch needs one 10 ms better, so the difference of
# two RTTs must move by more than 5 ms between a move and the next switch: 2 * STEP per run at most.
SWITCH_BOUND = 1 + int(RUNS * 4 * STEP / POLICY.hysteresis_ms)


@settings(max_examples=30, deadline=None)
@given(spread=st.floats(0, 30), seed=st.integers(0, 2**32))
def test_under_a_random_walk_latency_switches_per_user_are_bounded(spread, seed):
    """Every RTT walks by at most STEP per run from within ``spread`` ms of the others, all gateways
    up: no user makes more than SWITCH_BOUND latency switches in RUNS runs, and each one is past
    the hysteresis at the RTTs of its run. (Hypothesis steers toward the walks with most switches;
    a variant without hysteresis makes 15-52 per user here, this function at most 1.)"""
    rng = random.Random(seed)
    gws = GATEWAYS[:4]
    users = tuple(HostId(f"host_{i:03d}") for i in range(40))
    group = Group("g", gws, users)
    rtt = {(u, g): 5 + rng.uniform(0, spread) for u in users for g in gws}
    up = dict.fromkeys(gws, NOW)
    placed: Mapping[HostId, HostId] = {}
    switches: Counter[HostId] = Counter()
    for _ in range(RUNS):
        d = place(group, placed, observations({k: Sample(r, at=NOW) for k, r in rtt.items()}, up), NOW)
        for m in d.moves:
            if m.reason == "better":
                switches[m.user] += 1
                to, best = rtt[m.user, m.to_gateway], min(rtt[m.user, g] for g in gws)
                assert clearly_better(to, rtt[m.user, m.from_gateway]) or to - best < 5  # type: ignore[index]
        placed = d.placement
        rtt = {k: max(0.1, r + rng.uniform(-STEP, STEP)) for k, r in rtt.items()}
    most = max(switches.values(), default=0)
    target(most)
    assert most <= SWITCH_BOUND, switches.most_common(3)


# --- rule 7 ---------------------------------------------------------------------------------------

@settings(max_examples=500)
@given(worlds(), st.booleans())
def test_it_equals_the_brute_force_model(world, rebalance):
    group, current, obs = world
    policy = Policy(rebalance=rebalance)
    d = place(group, current, obs, NOW, policy)
    assert dict(d.placement) == model(group, current, obs, policy)
    assert [m.user for m in d.moves] == sorted(u for u in d.placement if d.placement[u] != current.get(u))


# --- the rest of the contract ---------------------------------------------------------------------

@settings(max_examples=100)
@given(worlds(), st.randoms(use_true_random=False))
def test_the_order_of_users_and_groups_changes_nothing_and_place_all_equals_place(world, rng):
    group, current, obs = world
    shuffled = list(group.users)
    rng.shuffle(shuffled)
    other = Group("internet", group.candidates[::-1], tuple(shuffled), group.pinned)
    d = place(group, current, obs, NOW)
    both = place_all([group, other], {group.id: current, other.id: current}, obs, NOW)
    assert both[0] == d
    assert both[1].placement == d.placement and [m.user for m in both[1].moves] == [m.user for m in d.moves]


def test_moves_say_where_from_and_why_and_pinning_wins():
    a, b = GATEWAYS[:2]
    u, v, w = USERS[:3]
    group = Group("g", (a, b), (u, v, w), pinned={w: b})
    obs = observations({(u, a): Sample(None, 100.0, False, NOW)}, {a: NOW, b: NOW})
    d = place(group, {u: a, w: a}, obs, NOW)
    assert d.moves == (Move("g", u, a, b, "down"), Move("g", v, None, a, "new"), Move("g", w, a, b, "pinned"))


def test_the_docstring_examples_hold():
    assert doctest.testmod(placement, raise_on_error=False).failed == 0
