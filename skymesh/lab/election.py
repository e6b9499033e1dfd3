"""A gateway group's election on loopback: members as :class:`agent.election_loop.ElectionLoop`\\ s in
this process, each on 127.0.0.1 and a port of its own, real sockets and real time (the functional
test and ``bench/election_takeover.py``).

What stands in for the rest of the agent:

- the prober (:class:`Probes`): a stopped member is seen down ``detect`` seconds after it stopped,
  up again once it runs (the real prober: 3 misses at 0.5 s, each counted 1 s after its echo, so
  2.0–2.5 s after a crash);
- the group data plane: each member's hooks record when it became active or standby
  (:attr:`LoopbackGroup.timeline`) and what client endpoints it learned; the active member shows
  its own (:data:`CLIENT_ENDPOINTS`);
- a crash: :meth:`LoopbackGroup.kill` stops the member's loop without calling its hooks (it falls
  silent, as a dead host does) and records it as standby from then on.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent import keys
from agent.election_loop import DEFAULT_TIMING, ElectionLoop, GroupConfig, Hooks, Vote
from chalicelib.domain.election import Timing

from .wait import wait_until

__all__ = ["CLIENT_ENDPOINTS", "Probes", "LoopbackGroup", "overlaps"]

NETWORK, GROUP = "net_electionlab", "grp_electionlab"
CLIENT_ENDPOINTS = {keys.wireguard_public_key(keys.new_wireguard_key()): f"198.18.7.{i}:{40000 + i}"
                    for i in range(1, 31)}  # 30 clients: two endpoint messages


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Probes:
    """Which members the prober sees up: a member stopped at t is down from t + ``detect``."""

    def __init__(self, detect: float) -> None:
        self.detect = detect
        self._stopped: dict[str, float] = {}
        self._lock = threading.Lock()

    def stopped(self, member: str) -> None:
        with self._lock:
            self._stopped[member] = time.monotonic()

    def started(self, member: str) -> None:
        with self._lock:
            self._stopped.pop(member, None)

    def up(self, members: tuple[str, ...]) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            return frozenset(m for m in members if now < self._stopped.get(m, now + 1) + self.detect)


@dataclass
class _Member:
    name: str
    port: int
    loop: ElectionLoop | None = None
    incarnations: int = 0
    learned: dict[str, str] = field(default_factory=dict)


class LoopbackGroup:
    """``n`` members (``m0`` first by priority) of one group on loopback; ``vote``: the control
    plane's (None: none). Use as a context manager: every loop is stopped at the end."""

    def __init__(self, n: int, *, detect: float = 2.0, vote: Vote | None = None,
                 timing: Timing = DEFAULT_TIMING) -> None:
        self.names = tuple(f"m{i}" for i in range(n))
        self.probes = Probes(detect)
        self.vote = vote
        self.timing = timing
        self.key = keys.new_wireguard_key()
        self.members = {m: _Member(m, free_udp_port()) for m in self.names}
        self.timeline: list[tuple[float, str, str]] = []  # (monotonic time, member, "active"/"standby")
        self.known_at_takeover: list[int] = []  # client endpoints each member knew when it became active
        self._lock = threading.Lock()

    def __enter__(self) -> LoopbackGroup:
        return self

    def __exit__(self, *_exc: object) -> None:
        for m in self.members.values():
            if m.loop is not None:
                m.loop.stop(withdraw=True)
                m.loop = None

    # ---------------------------------------------------------------------------------- members
    def _record(self, member: str, role: str) -> None:
        with self._lock:
            self.timeline.append((time.monotonic(), member, role))

    def _activated(self, member: str) -> None:
        with self._lock:
            self.known_at_takeover.append(len(self.members[member].learned))
        self._record(member, "active")

    def _learn(self, member: str, endpoints: Mapping[str, str]) -> None:
        with self._lock:
            self.members[member].learned = dict(endpoints)

    def start(self, name: str) -> None:
        """Start (or restart, as a new incarnation) member ``name``."""
        m = self.members[name]
        assert m.loop is None
        m.incarnations += 1
        m.learned = {}  # a new process knows nothing it did not hear since
        loop = ElectionLoop(m.incarnations, port=m.port, host="127.0.0.1", timing=self.timing, vote=self.vote)
        config = GroupConfig(NETWORK, GROUP, name, self.names,
                             {o: ("127.0.0.1", self.members[o].port) for o in self.names if o != name},
                             1, self.key)
        loop.set_group(config, Hooks(
            up=lambda: self.probes.up(self.names),
            on_active=lambda: self._activated(name),
            on_standby=lambda: self._record(name, "standby"),
            client_endpoints=lambda: CLIENT_ENDPOINTS,
            learn_endpoints=lambda e: self._learn(name, e)))
        self.probes.started(name)
        loop.start()
        m.loop = loop

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def kill(self, name: str) -> float:
        """Crash ``name``: its loop stops, its hooks are not called; returns when (monotonic: just before
        the stop, so a takeover is measured from the earliest moment; it counts as standby only from
        the moment its thread ended)."""
        m = self.members[name]
        assert m.loop is not None
        at = time.monotonic()
        m.loop.stop(withdraw=False)
        m.loop = None
        self.probes.stopped(name)
        self._record(name, "standby")  # a dead host answers nothing on the floating address
        return at

    def running(self) -> list[str]:
        return [n for n, m in self.members.items() if m.loop is not None]

    def active(self) -> list[str]:
        """The running members whose hooks made them active now."""
        return [n for n, m in self.members.items()
                if m.loop is not None and m.loop.role(GROUP) == "active"]

    def voting(self, name: str) -> bool:
        """Whether ``name`` takes part: active, or it has voted since it started (its quiet time after
        a start is over)."""
        loop = self.members[name].loop
        return loop is not None and (loop.role(GROUP) == "active" or loop.counters().get("acks_sent", 0) > 0)

    def learned(self, name: str) -> dict[str, str]:
        with self._lock:
            return dict(self.members[name].learned)

    def became_active_after(self, since: float, other_than: str) -> float | None:
        """When a member other than ``other_than`` became active at or after ``since``."""
        with self._lock:
            return next((t for t, m, role in self.timeline
                         if t >= since and m != other_than and role == "active"), None)

    # ---------------------------------------------------------------------------------- a run
    def takeovers(self, kills: int, timeout: float = 10.0) -> list[float]:
        """Kill the active member ``kills`` times; after each, wait for another to become active,
        restart the dead one and wait until it votes again. The takeover times, in seconds."""
        out = []
        wait_until(lambda: len(self.active()) == 1, timeout, "one active member")
        for _ in range(kills):
            wait_until(lambda: all(self.voting(n) for n in self.names), timeout, "every member voting")
            (victim,) = wait_until(self.active, timeout, "an active member")
            out.append(self._takeover(victim, timeout))
            self.start(victim)
        return out

    def _takeover(self, victim: str, timeout: float) -> float:
        at = self.kill(victim)
        took = wait_until(lambda: self.became_active_after(at, victim), timeout,
                          f"a member other than {victim} active after its crash")
        assert took is not None
        return took - at


def overlaps(timeline: list[tuple[float, str, str]]) -> list[tuple[float, str, str]]:
    """The moments two members were active at once: (time, one, the other)."""
    active: dict[str, bool] = {}
    out = []
    for t, member, role in sorted(timeline):
        active[member] = role == "active"
        others = [o for o, on in active.items() if on and o != member]
        if role == "active" and others:
            out.append((t, member, others[0]))
    return out
