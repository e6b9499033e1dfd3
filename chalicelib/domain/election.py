"""Which member of an HA gateway group is active: quorum leases fenced by epochs, as pure code.

A group's members share one WireGuard identity and one floating address; exactly one of them
may answer on it. Each member runs :func:`step` on its own observations; the control plane runs
:func:`vote` (its conditional write) and :func:`correct` (the failover functions). Nothing here
does I/O: time, messages and probe verdicts come in as arguments, what to send goes out.

The model
---------
- **Members** ``Group.members``, in priority order (first = preferred), ``n`` of them (2–4
  in practice). **Voters** are the members plus the control plane (:data:`CONTROL_PLANE`).
- **Observations** of a member at each step (:class:`Inputs`): its monotonic clock ``now``;
  the members its probes through the mesh see up (:class:`agent.probe.Prober`, 0.5 s, down
  after 3 misses); the :class:`Claim` and :class:`Ack` messages it received since its last step
  (over the mesh: possibly delayed, lost, duplicated, reordered, stale); the control plane's
  :class:`Record` when it answered (possibly stale).
- **Output** (:class:`Output`): its role (``active`` / ``standby``), the epoch it holds, the
  claim to broadcast to every voter and the acks to send back.

The protocol (a leader lease, as in Raft's lease reads or Chubby, with the control plane as a
witness for even groups):

1. A **claim** ``(member, epoch, sent)`` asks every voter for a lease; the active member sends
   one every ``heartbeat`` (renewal, same epoch), a candidate its first one with a new epoch.
2. A voter **acks** a claim (:func:`vote`) if it renews the promise it holds for that member
   (same member, epoch not lower), or if its promise has expired and the epoch is higher than
   any it promised. Acking promises: "no other member gets my ack for ``Timing.promise``
   (= ``lease · (1+ρ)/(1-ρ)``) on my clock". The control plane's ack is the same rule as one
   conditional write of its record (the fence it offers).
3. A claim's acks form a **quorum** (:meth:`Group.quorum`) when they come from more than half the
   members, or from exactly half of them and the control plane. Any two quorums share a voter.
4. A member is **active** while ``now < sent + lease`` for the latest claim of its epoch that a
   quorum acked (``sent`` on its own clock, before any ack was given). Otherwise standby.
5. A member **campaigns** when it is free (its own promise expired, so it is no voter for
   anyone; no current claim of another member heard for one ``promise``; a restarted member
   waits one ``promise`` first, having forgotten what it promised), after ``rank · stagger``
   where ``rank`` is its place among the members its probes see up (counted from the later of
   "free" and "its view last changed", so members whose ranks change at once do not claim at
   once): the highest-priority live member claims first. A member the control plane's record
   designates claims at rank 0. The epoch is one above any it has seen (claims,
   acks, refusals, the control plane's record). A campaign that gets no quorum within ``lease``
   stops; the member retries when free again. A candidate that sees a higher epoch drops its campaign;
   an active member keeps renewing its lease and is fenced only once it has run out (a claim or a
   refusal alone, e.g. of a member back from a crash that hears nobody yet, unseats nobody).

Why this is safe: a lease valid at real time t rests on a quorum whose acks were all given after
the claim was sent; each of those voters acks no other member for ``promise`` of its own time,
which is at least ``lease`` of the holder's time, so until after t. A second lease at t would need
a quorum too, and the two share a voter that would have broken its promise. Epochs make one
campaign per epoch win at most (a voter acks one member per epoch) and fence stale claims: a
delayed or duplicated claim with an old epoch gets no ack, a returning former active member's
claim neither; its lease ran out on its own clock while it was away (the clock runs on during a
crash or pause), so it comes back standby and stays so while the active member renews (no flap:
a healthy active member is never pre-empted, whatever its priority).

What is guaranteed (``tests/unit/test_election.py`` checks each over simulated groups):

- **Safety**, whatever the interleaving: never two members that consider themselves active at the
  same real time, under crash-stop failures and returns (with amnesia), paused processes, messages
  delayed, lost, duplicated, reordered or stale, a control plane up, down or stale, and clock
  *rates* within ``[1-ρ, 1+ρ]`` of real time (offsets do not matter: only durations are compared).
  This holds in network partitions too: the side without a quorum has no active member.
- **Liveness**: with a quorum of voters up and messages arriving within ``stagger / 2``, some
  member is active again within ``promise + (n-1) · stagger + 2 · delay`` of the active one's
  crash (≈ 1.5 + 0.25 + 0.1 s with the defaults and the next member seeing the dead one down; at
  most ≈ 2.4 s for n = 4), without the control plane for n ≥ 3.
- **Priority**: at a common start with messages flowing, the highest-priority live member
  becomes active.

What is not guaranteed, and what the design does then:

- **Two members and no control plane.** A 2-member group whose control plane is unreachable
  cannot tell "the other one crashed" from "we cannot hear each other"; no two-member protocol
  can decide that safely. This design chooses safety: the survivor stays standby (no member
  holds a quorum) until the control plane answers again; then the survivor gets the control
  plane's ack and takes over within one claim round trip. The current active member keeps its
  lease while its standby is down only through the control plane's acks. Failover with the
  control plane down needs three members (the e2e's "control plane stopped" case should run
  three). Likewise a restarted member is quiet for one ``promise``: in a 2-member group without
  the control plane the active member cannot renew during that time.
- **Byzantine members, clocks whose rate drifts beyond ρ** (a VM whose monotonic clock stops
  while the process runs), or a process paused *between* checking its lease and sending a
  packet on the floating address: the check-then-act window of every lease system. The agent
  keeps it short by checking :func:`is_active` right before it announces the address and on
  every step, and the floating address is withdrawn as soon as a step says standby.
- The control plane's :func:`correct` only nudges: it never makes a member active by itself
  (the member still needs a quorum), so it cannot break safety; it can be slow or stale.
- Liveness needs probes that settle: a member of rank > 0 restarts its stagger whenever its
  view changes, so probes flapping faster than ``stagger`` delay it (the rank-0 member is not
  delayed by that). A split vote (two candidates at one epoch, neither with a quorum) costs a
  retry: ``lease`` + ``promise`` ≈ 3 s more.

The timing budget (defaults of :class:`Timing`; the arithmetic is in ``Timing``): detection is
the lease running out, no separate failure detector on the critical path. The survivors are free
``promise`` ≈ 1.53 s after the last claim they heard from the dead member (which sent one every
``heartbeat`` = 0.5 s); the next member by priority claims then (probes, 3 misses at 0.5 s, see the
dead one down after 1.5–2 s, which makes it rank 0; until then it waits one ``stagger``), and one
round trip through the mesh later it is active. Simulated (20 ms one-way delay, 200 kills each for
n = 2–4, with and without the control plane where a quorum remains): p50 1.55–1.65 s, max 1.70 s
from the kill; the bound tested is 3 s. The new active member then adds the floating address and
sends gratuitous ARP / an unsolicited neighbour advertisement (tens of ms) and starts handshakes
to the clients' last endpoints (one round trip plus wireguard-go's handshake, well under 0.5 s;
a client's own retry would take ~5 s per Rekey-Timeout, up to ~15 s). Total ≈ 2–2.5 s, inside
the 5 s p99 goal with ~2.5 s to spare for scheduling on a loaded machine. On AWS the Elastic IP
reassociation dominates: DESIGN.md quotes 5–6 s measured by others, the older published figures
are minutes (docs/ha-groups.md, "What to expect on AWS"); the 5 s goal is not promised there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = ["CONTROL_PLANE", "ELECTION_PORT", "Ack", "Claim", "Group", "Inputs", "Output", "Promise", "Record",
           "Report", "Role", "State", "Timing", "correct", "is_active", "start", "step", "vote"]

Role = Literal["active", "standby"]
CONTROL_PLANE = "control-plane"  # the voter id of the control plane (no member may use it)
# UDP, on the members' overlay addresses (agent/election_loop.py listens on every address): so no
# group's floating port, nor a member's mesh port or underlay echo port (mesh port + 1), may be it
ELECTION_PORT = 51829


@dataclass(frozen=True)
class Timing:
    """The durations of the protocol, in seconds of a member's monotonic clock.

    ``heartbeat``: the active member renews every heartbeat (the probe interval: a missed renewal
    costs what a missed probe does). ``lease``: how long a quorum's acks keep a member active from
    the moment it sent the claim (three heartbeats: two lost renewals in a row are tolerated).
    ``drift`` ρ: clock rates lie within ``[1-ρ, 1+ρ]`` of real time (NTP-disciplined clocks are
    within 500 ppm; 1 % is a wide margin). ``stagger``: the delay per priority rank before a free
    member campaigns; it must exceed a claim's one-way delay for priority to hold (the mesh's
    RTT is a few ms on a LAN, tens across regions)."""

    heartbeat: float = 0.5
    lease: float = 1.5
    drift: float = 0.01
    stagger: float = 0.25

    def __post_init__(self) -> None:
        if not (0 <= self.drift < 1 and 0 < self.heartbeat < self.lease and self.stagger > 0):
            raise ValueError("need 0 <= drift < 1, 0 < heartbeat < lease and stagger > 0")

    @property
    def promise(self) -> float:
        """How long a voter acks nobody else after an ack, on its clock: ``lease · (1+ρ)/(1-ρ)``.
        The holder's lease lasts at most ``lease / (1-ρ)`` of real time; a voter's promise at least
        ``promise / (1+ρ)``, which is the same, and it starts no earlier than the claim was sent."""
        return self.lease * (1 + self.drift) / (1 - self.drift)


@dataclass(frozen=True)
class Group:
    """The members in priority order (first = preferred)."""

    members: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.members)) != len(self.members) or not self.members or CONTROL_PLANE in self.members:
            raise ValueError("members must be distinct, at least one, and not the control plane's id")

    def quorum(self, voters: Iterable[str]) -> bool:
        """More than half the members, or exactly half and the control plane. Two such sets always
        share a voter: two majorities do, a majority and a half do (together more than n), two
        halves share the control plane."""
        got = set(voters)
        members = len(got & set(self.members))
        return 2 * members > len(self.members) or (2 * members == len(self.members)
                                                    and CONTROL_PLANE in got)

    def rank(self, member: str, up: Iterable[str]) -> int:
        """``member``'s place among the members seen up (itself always counted)."""
        live = set(up) | {member}
        return [m for m in self.members if m in live].index(member)


@dataclass(frozen=True)
class Claim:
    """``member`` asks for (or renews) a lease at ``epoch``; ``sent`` is its clock when sent."""

    member: str
    epoch: int
    sent: float
    incarnation: int = 0  # which start of the member: a clock may restart with the host


@dataclass(frozen=True)
class Ack:
    """A voter's answer to ``claim``: ``granted``, or refused with the highest epoch it promised
    (so a candidate that forgot the epochs learns them)."""

    voter: str
    claim: Claim
    granted: bool
    epoch: int


@dataclass(frozen=True)
class Promise:
    """What a voter promised: no ack to anyone but ``member`` (at ``epoch`` or later) before
    ``until`` on the voter's clock."""

    member: str
    epoch: int
    until: float


def vote(promise: Promise | None, claim: Claim, now: float, timing: Timing) -> Promise | None:
    """The voter rule (members and the control plane's conditional write alike): the new promise
    if ``claim`` is acked at the voter's time ``now``, else None (the promise is unchanged).

    >>> t = Timing()
    >>> p = vote(None, Claim("a", 1, 0.0), 10.0, t)
    >>> (p.member, p.epoch, round(p.until, 2))
    ('a', 1, 11.53)
    >>> vote(p, Claim("b", 2, 0.0), 11.0, t) is None      # promised to a until 11.53
    True
    >>> vote(p, Claim("b", 1, 0.0), 12.0, t) is None      # expired, but epoch 1 was a's
    True
    >>> vote(p, Claim("b", 2, 0.0), 12.0, t).member
    'b'
    """
    if promise is not None:
        renews = promise.member == claim.member and claim.epoch >= promise.epoch
        if not renews and (now < promise.until or claim.epoch <= promise.epoch):
            return None
    return Promise(claim.member, claim.epoch, now + timing.promise)


@dataclass(frozen=True)
class Record:
    """The control plane's record of a group: who is active at which epoch (as members report it,
    or as :func:`correct` designates), and its own voter promise (its conditional write)."""

    active: str | None = None
    epoch: int = 0
    promise: Promise | None = None


@dataclass(frozen=True)
class State:
    """One member's memory. ``epoch``: the highest epoch it has seen. ``claim``: its current
    campaign or lease (its epoch and when it started), None when it claims nothing. ``acks``:
    who acked which of its claims (by the claim's send time). ``lease_from``: the send time of its
    latest claim a quorum acked. ``view``/``view_since``: the members its probes last saw up, and
    since when. ``quiet_until``: a restarted member votes and campaigns only
    after this (it forgot its promises). ``heard_until``: it heard another member's claim, so it
    does not campaign before this (a quiet member that cannot ack still defers to a live active
    one). ``incarnation``: which start of this member, in its claims (acks of another start's
    claims do not count: the monotonic clock may have restarted with the host)."""

    me: str
    epoch: int = 0
    promise: Promise | None = None
    claim_epoch: int | None = None
    claim_started: float = 0.0
    last_sent: float | None = None
    acks: Mapping[float, frozenset[str]] = field(default_factory=dict)
    lease_from: float | None = None
    quiet_until: float = 0.0
    heard_until: float = 0.0
    incarnation: int = 0
    view: frozenset[str] = frozenset()
    view_since: float = 0.0


@dataclass(frozen=True)
class Inputs:
    """What a member observed since its last step, at its clock ``now``."""

    now: float
    up: frozenset[str] = frozenset()
    claims: tuple[Claim, ...] = ()
    acks: tuple[Ack, ...] = ()
    record: Record | None = None


@dataclass(frozen=True)
class Output:
    """``role`` and ``epoch`` to act on and report; ``claim`` to broadcast to every other voter
    (members and the control plane); ``acks`` to send, each to its claim's member."""

    role: Role
    epoch: int
    claim: Claim | None = None
    acks: tuple[Ack, ...] = ()


def start(me: str, now: float, timing: Timing, incarnation: int = 0) -> State:
    """A member's state at (re)start: standby, and silent for one ``promise``, because a member that
    forgot what it promised before a crash must not ack anyone else until that promise ran out.
    ``incarnation`` must differ from every earlier start's (a boot id, a persisted counter)."""
    return State(me=me, quiet_until=now + timing.promise, incarnation=incarnation)


def is_active(state: State, now: float, timing: Timing) -> bool:
    """Whether ``state`` holds a lease at its clock ``now``: check right before acting on it."""
    return state.lease_from is not None and now < state.lease_from + timing.lease


def step(group: Group, timing: Timing, state: State, inputs: Inputs) -> tuple[State, Output]:
    """One step of a member: take in what it observed, return its new state and what to do.

    Call it on every message and at least every ``heartbeat / 2`` (the agent's loop); the result
    depends only on the arguments."""
    now, me = inputs.now, state.me
    s = state
    out_acks: list[Ack] = []
    quiet = now < s.quiet_until
    # Claims heard: vote (never while quiet), and learn their epochs.
    for c in sorted(set(inputs.claims), key=lambda c: (c.epoch, c.sent)):
        if c.member == me or c.member not in group.members:
            continue
        s = replace(s, epoch=max(s.epoch, c.epoch))
        if c.epoch >= s.epoch:  # a current claim: its member may be active, do not compete
            s = replace(s, heard_until=max(s.heard_until, now + timing.promise))
        if quiet:
            continue
        granted = vote(s.promise, c, now, timing)
        if granted is not None:
            s = replace(s, promise=granted)
        out_acks.append(Ack(me, c, granted is not None, s.promise.epoch if s.promise else c.epoch))
    # A higher epoch than our claim's elsewhere: a campaign of ours is fenced off. A lease we hold
    # is not: a claim alone proves nothing (a member back from a crash claims before it hears us), and
    # the voters that acked us keep refusing everyone else until our lease has run out anyway, so
    # dropping it would only hand the group to a member without a quorum, or to nobody (a flap). Nor
    # does a refusal (below): a voter promised to a candidate refuses our renewal, but our lease rests
    # on the quorum that acked it; it ends when renewals stop making a quorum, and then we are fenced.
    if s.claim_epoch is not None and s.epoch > s.claim_epoch and not is_active(s, now, timing):
        s = replace(s, claim_epoch=None, acks={}, lease_from=None)
    # Acks of our claims.
    acks = dict(s.acks)
    for a in inputs.acks:
        if a.claim.member != me:
            continue
        if not a.granted and a.epoch > s.epoch:
            s = replace(s, epoch=a.epoch)
        if (a.granted and a.claim.epoch == s.claim_epoch and a.claim.incarnation == s.incarnation
                and s.claim_started <= a.claim.sent <= now):
            acks[a.claim.sent] = acks.get(a.claim.sent, frozenset()) | {a.voter}
    if s.claim_epoch is not None and s.epoch > s.claim_epoch and not is_active(s, now, timing):
        s = replace(s, claim_epoch=None, acks={}, lease_from=None)
        acks = {}
    # Only claims that can still make a lease matter.
    acks = {sent: v for sent, v in acks.items() if sent + timing.lease > now}
    lease_from = s.lease_from
    for sent, voters in acks.items():
        if group.quorum(voters) and (lease_from is None or sent > lease_from):
            lease_from = sent
    s = replace(s, acks=acks, lease_from=lease_from)
    # A campaign without a quorum for a whole lease stops; the member retries when free again.
    if (s.claim_epoch is not None and not is_active(s, now, timing)
            and now - max(s.claim_started, s.lease_from or s.claim_started) >= timing.lease):
        s = replace(s, claim_epoch=None, acks={}, lease_from=None)
    if inputs.up != s.view:
        s = replace(s, view=inputs.up, view_since=now)
    claim: Claim | None = None
    if s.claim_epoch is None and not quiet:
        free_at = max(s.promise.until if s.promise is not None else 0.0, s.quiet_until, s.heard_until)
        designated = inputs.record is not None and inputs.record.active == me
        rank = 0 if designated else group.rank(me, inputs.up)
        # The stagger counts from the later of "free" and "the view changed": members whose ranks
        # change at once (the probes see a dead member down) must not claim in the same instant.
        if now >= max(free_at, s.view_since if rank else free_at) + rank * timing.stagger:
            # The record's epoch only feeds the next campaign: it must not fence off a claim of
            # ours that the record merely has not caught up with (or designated us for).
            epoch = max(s.epoch, inputs.record.epoch if inputs.record is not None else 0) + 1
            s = replace(s, epoch=epoch, claim_epoch=epoch, claim_started=now, acks={},
                        lease_from=None, last_sent=None)
    if s.claim_epoch is not None and (s.last_sent is None or now - s.last_sent >= timing.heartbeat):
        claim = Claim(me, s.claim_epoch, now, s.incarnation)
        own = vote(s.promise, claim, now, timing)
        if own is not None:  # our own vote, under the same rule as any other
            s = replace(s, promise=own, acks={**s.acks, now: frozenset({me})})
        s = replace(s, last_sent=now)
        # A one-member group (or a member whose own vote is a quorum) needs no round trip.
        if own is not None and group.quorum({me}):
            s = replace(s, lease_from=now)
    role: Role = "active" if is_active(s, now, timing) else "standby"
    return s, Output(role, s.claim_epoch if s.claim_epoch is not None else s.epoch, claim, tuple(out_acks))


@dataclass(frozen=True)
class Report:
    """A member's latest status report as the control plane has it: when (control plane time), its
    role and epoch, and the members its probes see down."""

    member: str
    at: float
    role: Role
    epoch: int
    down: frozenset[str] = frozenset()


def correct(group: Group, record: Record, reports: Mapping[str, Report], now: float,
            silent_after: float = 3.0) -> Record:
    """The control plane's correction (the failover functions, on reports and every minute).

    A member is *down* when its own report is older than ``silent_after`` (or missing), or every
    fresh report of another member says it is down. The record follows the live member that reports
    itself active at the highest epoch. When the recorded active member is down (or
    none is recorded), the record designates the first live member by priority at an epoch above
    every one seen, so that member campaigns at once and the others learn the epoch; the control
    plane's own promise is untouched (only a claim moves it, by :func:`vote`). The write is
    conditional on the record read (its epoch), the fence against a concurrent correction. With no
    member live the record is kept. The epoch never goes down.

    >>> g = Group(("a", "b", "c"))
    >>> reps = {"b": Report("b", 9.0, "standby", 4, frozenset({"a"})),
    ...         "c": Report("c", 9.0, "standby", 4, frozenset({"a"}))}
    >>> correct(g, Record("a", 4), reps, now=10.0)
    Record(active='b', epoch=5, promise=None)
    """
    fresh = {m: r for m, r in reports.items() if m in group.members and now - r.at <= silent_after}

    def down(m: str) -> bool:
        others = [r for o, r in fresh.items() if o != m]
        return m not in fresh or (bool(others) and all(m in r.down for r in others))

    live = [m for m in group.members if not down(m)]
    claimed = [r for r in fresh.values() if r.role == "active" and not down(r.member)]
    if claimed:  # members know best who holds a lease; a designation's epoch may be ahead of it
        best = max(claimed, key=lambda r: (r.epoch, -group.members.index(r.member)))
        return replace(record, active=best.member, epoch=max(record.epoch, best.epoch))
    if record.active is not None and record.active in live:
        return record
    if not live:
        return record
    top = max([record.epoch, *(r.epoch for r in reports.values())])
    return replace(record, active=live[0], epoch=top + 1)
