"""The election of one active member of an HA gateway group (chalicelib.domain.election), over
simulated groups of 2–4 members with a scheduler that crashes, restarts and pauses members, delays,
loses, duplicates and reorders messages, cuts links (partitions, one way too), runs every clock at
its own rate within the drift bound and takes the control plane up and down:

(a) safety: never two members that consider themselves active at the same real time;
(b) no flap: a returning member (the former active one too) stays standby while the active one is
    healthy;
(c) liveness: with a quorum of voters up and messages flowing, a member is active within 3 s of
    the active one's crash (n ≥ 3 without the control plane; n = 2 with it), and within a bound
    after any chaos;
(d) priority: at a common start, the highest-priority live member becomes active;
(e) the control plane's ``correct`` never designates a member reports say is down while a live
    one exists, keeps a live active member, and never lowers the epoch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from chalicelib.domain import election as el
from chalicelib.domain.election import CONTROL_PLANE, Ack, Claim, Group, Record, Report, Timing

T = Timing()
DT = 0.05  # the scheduler's real-time step; members step every DT (their loop runs at ≥ 2/heartbeat)
DETECT = 1.5  # probes: a member is seen down 3 misses × 0.5 s after it stops answering


@dataclass
class Node:
    name: str
    rate: float
    offset: float
    state: el.State
    alive: bool = True
    paused_until: float = 0.0
    inbox: list[Claim | Ack] = field(default_factory=list)
    starts: int = 0
    seen_up: bool = True
    changed_at: float = -10.0


class Sim:
    """A group on a simulated network. Real time ``now``; each node's clock is ``offset + rate·now``."""

    def __init__(self, n: int, seed: int, rates: list[float], cp_up: bool = True) -> None:
        self.group = Group(tuple(f"m{i}" for i in range(n)))
        self.rng = random.Random(seed)
        self.now = 0.0
        self.nodes = {m: Node(m, rates[i], 1000.0 * i, el.start(m, 1000.0 * i, T))
                      for i, m in enumerate(self.group.members)}
        self.cp_up, self.cp_rate, self.record = cp_up, rates[-1] if len(rates) > n else 1.0, Record()
        self.cp_stale: Record | None = None
        self.in_flight: list[tuple[float, int, str, Claim | Ack]] = []
        self.seq = 0
        self.delay, self.loss, self.dup = 0.02, 0.0, 0.0
        self.cut: set[tuple[str, str]] = set()  # links (from, to) that lose everything: partitions
        self.active_log: list[tuple[float, str]] = []  # (real time, member) after each step

    # ------------------------------------------------------------------ the world
    def clock(self, node: Node) -> float:
        return node.offset + node.rate * self.now

    def running(self, node: Node) -> bool:
        return node.alive and self.now >= node.paused_until

    def send(self, src: str, dst: str, msg: Claim | Ack) -> None:
        for _ in range(2 if self.rng.random() < self.dup else 1):
            if self.rng.random() < self.loss or (src, dst) in self.cut:
                continue
            self.seq += 1
            self.in_flight.append((self.now + self.rng.uniform(0, self.delay), self.seq, dst, msg))

    def actives(self) -> list[str]:
        """Every member that holds a lease by its own clock now (paused ones too: they would act on
        it the moment they resume, until their clock says it ran out)."""
        return [n.name for n in self.nodes.values()
                if n.alive and el.is_active(n.state, self.clock(n), T)]

    def up_view(self) -> frozenset[str]:
        return frozenset(n.name for n in self.nodes.values() if n.seen_up)

    def tick(self) -> None:
        self.now += DT
        for n in self.nodes.values():  # probes: a change is seen DETECT after it happened
            if self.running(n) != n.seen_up and self.now - n.changed_at >= DETECT:
                n.seen_up = self.running(n)
        due = sorted(m for m in self.in_flight if m[0] <= self.now)
        self.in_flight = [m for m in self.in_flight if m[0] > self.now]
        self.rng.shuffle(due)  # reordered among the due ones too
        for _, _, dst, msg in due:
            if dst == CONTROL_PLANE:
                self.control_plane(msg)
            elif self.nodes[dst].alive:
                self.nodes[dst].inbox.append(msg)
        for n in list(self.nodes.values()):
            if not self.running(n):
                continue
            record = (self.cp_stale or self.record) if self.cp_up and self.rng.random() < 0.5 else None
            claims = tuple(m for m in n.inbox if isinstance(m, Claim))
            acks = tuple(m for m in n.inbox if isinstance(m, Ack))
            n.inbox = []
            n.state, out = el.step(self.group, T, n.state,
                                   el.Inputs(self.clock(n), self.up_view(), claims, acks, record))
            if out.claim is not None:
                for dst in [*self.group.members, CONTROL_PLANE]:
                    if dst != n.name:
                        self.send(n.name, dst, out.claim)
            for a in out.acks:
                self.send(n.name, a.claim.member, a)
        self.cp_correct()
        act = self.actives()
        assert len(act) <= 1, f"two active members at {self.now:.2f}: {act}"
        self.active_log.append((self.now, act[0] if act else ""))

    def control_plane(self, msg: Claim | Ack) -> None:
        if not self.cp_up or not isinstance(msg, Claim):
            return
        promise = el.vote(self.record.promise, msg, self.now * self.cp_rate, T)
        if promise is not None:
            self.record = Record(self.record.active, self.record.epoch, promise)
        held = self.record.promise
        self.send(CONTROL_PLANE, msg.member, Ack(CONTROL_PLANE, msg, promise is not None,
                                  held.epoch if held else msg.epoch))

    def cp_correct(self) -> None:
        if not self.cp_up or int(self.now / DT) % 20:  # the failover functions, once a second here
            return
        reports = {n.name: Report(n.name, self.now, "active" if n.name in self.actives() else "standby",
                                  n.state.epoch, self.group_down(n))
                   for n in self.nodes.values() if self.running(n)}
        before = self.record
        self.record = el.correct(self.group, self.record, reports, self.now)
        self.cp_stale = before if self.rng.random() < 0.3 else None

    def group_down(self, n: Node) -> frozenset[str]:
        return frozenset(self.group.members) - self.up_view() - {n.name}

    # ------------------------------------------------------------------ the scheduler's moves
    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / DT)):
            self.tick()

    def crash(self, name: str) -> None:
        n = self.nodes[name]
        if n.alive:
            n.alive, n.inbox, n.changed_at = False, [], self.now

    def restart(self, name: str) -> None:
        n = self.nodes[name]
        if not n.alive:
            n.starts += 1
            n.alive, n.changed_at = True, self.now
            n.state = el.start(name, self.clock(n), T, incarnation=n.starts)

    def pause(self, name: str, seconds: float) -> None:
        n = self.nodes[name]
        n.paused_until, n.changed_at = max(n.paused_until, self.now + seconds), self.now

    def calm(self) -> None:
        """Messages flow again (≤ 20 ms, none lost) and every pause has ended."""
        self.delay, self.loss, self.dup, self.cut = 0.02, 0.0, 0.0, set()
        self.run(max([0.0, *(n.paused_until - self.now for n in self.nodes.values())]) + DT)

    def quorum_up(self) -> bool:
        live = [m for m, n in self.nodes.items() if n.alive]
        return self.group.quorum([*live, *([CONTROL_PLANE] if self.cp_up else [])])

    def time_to_active(self, bound: float) -> float | None:
        start = self.now
        while self.now - start < bound:
            self.tick()
            if self.actives():
                return self.now - start
        return None


rates = st.lists(st.floats(1 - T.drift, 1 + T.drift), min_size=5, max_size=5)


class Chaos(RuleBasedStateMachine):
    """Safety under any interleaving (checked after every 50 ms of simulated time, inside
    ``Sim.tick``), liveness and no flap after every calm spell."""

    @initialize(n=st.integers(2, 4), seed=st.integers(0, 2**32 - 1), rates=rates, cp_up=st.booleans())
    def setup(self, n: int, seed: int, rates: list[float], cp_up: bool) -> None:
        self.sim = Sim(n, seed, rates, cp_up)

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.0, 4.0]))
    def run(self, seconds: float) -> None:
        self.sim.run(seconds)

    @rule(i=st.integers(0, 3))
    def crash(self, i: int) -> None:
        self.sim.crash(self.sim.group.members[i % len(self.sim.group.members)])

    @rule(i=st.integers(0, 3))
    def crash_active(self, i: int) -> None:
        for m in self.sim.actives():
            self.sim.crash(m)

    @rule(i=st.integers(0, 3))
    def restart(self, i: int) -> None:
        self.sim.restart(self.sim.group.members[i % len(self.sim.group.members)])

    @rule(i=st.integers(0, 3), seconds=st.sampled_from([0.3, 1.0, 2.0, 5.0]))
    def pause(self, i: int, seconds: float) -> None:
        self.sim.pause(self.sim.group.members[i % len(self.sim.group.members)], seconds)

    @rule(up=st.booleans())
    def control_plane(self, up: bool) -> None:
        self.sim.cp_up = up

    @rule(delay=st.sampled_from([0.0, 0.1, 0.5, 2.0]), loss=st.sampled_from([0.0, 0.2, 0.6, 1.0]),
          dup=st.sampled_from([0.0, 0.3]))
    def network(self, delay: float, loss: float, dup: float) -> None:
        self.sim.delay, self.sim.loss, self.sim.dup = delay, loss, dup

    @rule(links=st.sets(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=8))
    def partition(self, links: set[tuple[int, int]]) -> None:
        """Cut links, one way or both (index 4: the control plane): any partition, asymmetric too."""
        names = [*self.sim.group.members, CONTROL_PLANE]
        self.sim.cut = {(names[a % len(names)], names[b % len(names)]) for a, b in links}

    @rule(sides=st.lists(st.booleans(), min_size=5, max_size=5))
    def split(self, sides: list[bool]) -> None:
        """A clean partition in two sides (the last flag: the control plane's side)."""
        names = [*self.sim.group.members, CONTROL_PLANE]
        side = dict(zip(names, [*sides[:len(names) - 1], sides[-1]], strict=True))
        self.sim.cut = {(x, y) for x in names for y in names if side[x] != side[y]}

    @precondition(lambda self: hasattr(self, "sim"))
    @rule()
    def calm_then_crash_and_return(self) -> None:
        """(c) after any chaos, a calm spell elects a member; (b) members that come back do not take
        over; (c) the active member's crash is repaired within 3 s."""
        s = self.sim
        s.calm()
        if not s.quorum_up():
            return
        # members restarted just before are quiet for one promise: they ack nobody yet (in a group
        # of two without the control plane the active one cannot renew until then)
        s.run(T.promise)
        bound = 3 * T.promise + len(s.group.members) * T.stagger + T.lease
        took = s.time_to_active(bound)
        assert took is not None, f"no active member within {bound:.1f} s of calm"
        s.run(T.lease)  # settled: the leases of the chaos are over
        (first,) = s.actives()
        for m in s.group.members:
            s.restart(m)
        s.run(2 * T.promise + 2)
        assert {m for _, m in s.active_log[-round((2 * T.promise + 2) / DT):]} == {first}, "flapped"
        s.crash(first)
        if s.quorum_up():
            took = s.time_to_active(3.0)
            assert took is not None, "no takeover within 3 s of the active member's crash"


# No "explain" phase: it re-runs simulations for minutes when something fails.
Chaos.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                   phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink))
TestChaos = Chaos.TestCase


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 4), seed=st.integers(0, 2**32 - 1), rates=rates,
       dead=st.sets(st.integers(0, 3)))
def test_the_highest_priority_live_member_is_elected_at_a_common_start(n, seed, rates, dead) -> None:
    sim = Sim(n, seed, rates, cp_up=True)
    dead_names = {sim.group.members[i] for i in dead if i < n}
    for m in dead_names:
        sim.crash(m)
        sim.nodes[m].seen_up = False  # the others' probes never saw it
    live = [m for m in sim.group.members if m not in dead_names]
    if not sim.quorum_up():
        return
    assert sim.time_to_active(T.promise + n * T.stagger + 0.5) is not None
    assert sim.actives() == [live[0]]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 4), seed=st.integers(0, 2**32 - 1), rates=rates, cp_up=st.booleans())
def test_takeover_after_the_active_member_crashes_takes_under_3_seconds(n, seed, rates, cp_up) -> None:
    sim = Sim(n, seed, rates, cp_up=True)
    sim.run(T.promise + 2)
    (first,) = sim.actives()
    sim.cp_up = cp_up  # the control plane stopped during the kill, or not
    sim.crash(first)
    took = sim.time_to_active(5.0)
    if n == 2 and not cp_up:  # the documented limit: one member of two alone never takes over
        assert took is None
        return
    assert took is not None and took <= 3.0, f"took {took}"
    # the next one by priority, once probes see the dead one down, which they do before the lease
    # lets anyone claim
    assert sim.actives() == [next(m for m in sim.group.members if m != first)]


def test_a_returning_former_active_member_stays_standby() -> None:
    sim = Sim(3, 7, [1.0] * 5)
    sim.run(T.promise + 2)
    (first,) = sim.actives()
    sim.crash(first)
    sim.run(3.0)
    (second,) = sim.actives()
    sim.restart(first)
    sim.run(10.0)
    assert sim.actives() == [second]
    assert all(m == second for _, m in sim.active_log[-round(10.0 / DT):])
    assert sim.nodes[first].state.epoch == sim.nodes[second].state.epoch  # it learnt the epoch


def test_a_returning_member_that_hears_nobody_yet_does_not_unseat_the_active_one() -> None:
    # Seen in the e2e: a member back from a crash claims before its tunnels carry anything to it (it
    # hears no claim and no ack), at an epoch above the active member's. Its claims reach the others,
    # who refuse them (their promises hold); the active member must keep its lease, not drop it on
    # hearing the higher epoch (that handed the group back and forth, a flap, with nobody serving).
    sim = Sim(3, 11, [1.0] * 5)
    sim.run(T.promise + 2)
    (first,) = sim.actives()
    sim.crash(first)
    sim.run(3.0)
    (second,) = sim.actives()
    sim.cut |= {(src, first) for src in (*sim.group.members, CONTROL_PLANE) if src != first}
    sim.restart(first)
    sim.run(5.0)
    sim.cut.clear()
    sim.run(5.0)
    assert [m for _, m in sim.active_log[-round(10.0 / DT):]] == [second] * round(10.0 / DT)


def test_a_paused_active_member_finds_its_lease_expired_on_resuming() -> None:
    sim = Sim(3, 3, [1.0] * 5)
    sim.run(T.promise + 2)
    (first,) = sim.actives()
    sim.pause(first, 5.0)
    sim.run(5.0)
    (second,) = sim.actives()
    assert second != first
    sim.run(3.0)
    assert sim.actives() == [second]


def test_across_a_partition_only_the_majority_side_elects() -> None:
    sim = Sim(3, 11, [1.0] * 5, cp_up=False)
    sim.run(T.promise + 2)
    (first,) = sim.actives()
    rest = [m for m in sim.group.members if m != first]
    # the active member alone on one side, the two others (a quorum) on the other
    sim.cut = {(x, y) for x in sim.group.members for y in sim.group.members if (x == first) != (y == first)}
    sim.run(6.0)  # safety is asserted at every tick
    assert sim.actives() and sim.actives()[0] in rest
    assert not el.is_active(sim.nodes[first].state, sim.clock(sim.nodes[first]), T)


def test_a_member_cut_off_from_the_active_one_only_does_not_take_over() -> None:
    """B cannot hear the active member A (both ways) but both hear C: B campaigns, and C, promised
    to A, must refuse it while A renews through C (B and C alone would be a quorum of 3)."""
    sim = Sim(3, 13, [1.0] * 5, cp_up=False)
    sim.run(T.promise + 2)
    (a,) = sim.actives()
    b = next(m for m in sim.group.members if m != a)
    sim.cut = {(a, b), (b, a)}
    sim.run(8.0)  # safety is asserted at every tick
    assert sim.actives() == [a]
    assert all(m == a for _, m in sim.active_log[-round(8.0 / DT):])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_late_acks_do_not_stretch_a_lease(seed) -> None:
    """Acks take up to a second: a lease counts from the claim's send time, not the ack's arrival,
    so when the active member is then cut off, it has stopped before the others elect."""
    sim = Sim(3, seed, [1.0] * 5, cp_up=False)
    sim.run(T.promise + 2)
    (a,) = sim.actives()
    sim.delay = 1.0
    sim.run(3.0)
    sim.delay = 0.0
    sim.cut = {(x, y) for x in [*sim.group.members, CONTROL_PLANE] for y in sim.group.members
               if (x == a) != (y == a)}
    sim.run(5.0)  # safety is asserted at every tick


def test_the_partition_side_without_a_quorum_has_no_active_member() -> None:
    sim = Sim(3, 5, [1.0] * 5, cp_up=False)
    sim.run(T.promise + 2)
    (first,) = sim.actives()
    sim.loss = 1.0  # nobody hears anybody: every member is in a minority of one
    sim.run(T.lease + 0.1)
    assert sim.actives() == []


# ---------------------------------------------------------------------------------- the voter rule
def test_a_voter_acks_no_other_member_until_its_promise_ran_out() -> None:
    p = el.vote(None, Claim("a", 3, 0.0), 10.0, T)
    assert p is not None
    assert el.vote(p, Claim("b", 4, 10.0), 10.0 + T.promise - 0.01, T) is None
    assert el.vote(p, Claim("a", 3, 10.5), 10.5, T) is not None  # renewal
    assert el.vote(p, Claim("a", 2, 10.5), 10.5, T) is None  # a stale claim of its own
    assert el.vote(p, Claim("b", 3, 0.0), 10.0 + T.promise, T) is None  # epoch 3 was a's
    assert el.vote(p, Claim("b", 4, 0.0), 10.0 + T.promise, T) is not None


def test_quorums_always_intersect() -> None:
    for n in range(1, 6):
        g = Group(tuple(f"m{i}" for i in range(n)))
        voters = [*g.members, CONTROL_PLANE]
        sets = [frozenset(v for j, v in enumerate(voters) if mask >> j & 1)
                for mask in range(1 << len(voters))]
        qs = [q for q in sets if g.quorum(q)]
        assert all(a & b for a in qs for b in qs)


def test_timing_promise_covers_the_lease_under_drift() -> None:
    # the holder's lease in real time (slowest clock) ends before any voter's promise (fastest)
    assert T.lease / (1 - T.drift) <= T.promise / (1 + T.drift) + 1e-12


# ------------------------------------------------------------------------- the control plane side
members = st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=2, max_size=4, unique=True)


@st.composite
def situations(draw):
    ms = draw(members)
    g = Group(tuple(ms))
    now = 100.0
    reports = {}
    for m in ms:
        if draw(st.booleans()):
            reports[m] = Report(m, now - draw(st.sampled_from([0.0, 1.0, 10.0])),
                                draw(st.sampled_from(["active", "standby"])), draw(st.integers(0, 9)),
                                frozenset(draw(st.sets(st.sampled_from(ms)))) - {m})
    record = Record(draw(st.one_of(st.none(), st.sampled_from(ms))), draw(st.integers(0, 9)))
    return g, record, reports, now


@settings(max_examples=400, deadline=None)
@given(situations())
def test_correct_never_designates_a_down_member_while_a_live_one_exists(sit) -> None:
    g, record, reports, now = sit
    out = el.correct(g, record, reports, now)
    fresh = {m: r for m, r in reports.items() if now - r.at <= 3.0}

    def down(m: str) -> bool:
        others = [r for o, r in fresh.items() if o != m]
        return m not in fresh or (bool(others) and all(m in r.down for r in others))

    live = [m for m in g.members if not down(m)]
    assert out.epoch >= record.epoch
    if live:
        assert out.active in live
    claimed = [r for m, r in fresh.items() if r.role == "active" and not down(m)]
    if claimed:  # the record follows the members: the live one active at the highest epoch
        assert out.active == max(claimed, key=lambda r: (r.epoch, -g.members.index(r.member))).member
    elif record.active in live:
        assert out == record  # a live active member is kept
    elif live:  # a new designation fences every epoch seen
        assert out.epoch > max([record.epoch, *(r.epoch for r in reports.values())])
    assert el.correct(g, out, reports, now) == out  # converged


def test_correct_names_the_next_live_member_by_priority_at_a_higher_epoch() -> None:
    g = Group(("a", "b", "c"))
    reports = {"b": Report("b", 99.0, "standby", 4, frozenset({"a"})),
               "c": Report("c", 99.0, "standby", 4, frozenset({"a"}))}
    assert el.correct(g, Record("a", 4), reports, now=100.0) == Record("b", 5)
    # one fresh report still sees a up: a is kept
    reports["c"] = Report("c", 99.0, "standby", 4, frozenset())
    assert el.correct(g, Record("a", 4), {**reports, "a": Report("a", 99.0, "active", 4)}, 100.0) \
        == Record("a", 4)
