"""The gateway group election runtime (agent/election_loop.py) without sockets: the message codec
(bounds, HMAC, another group's or key version's messages dropped), the per-group driver with an
injected clock (who becomes active, when the hooks run, when the control plane is asked), and the
incarnation counter."""

from __future__ import annotations

import base64
import json
import os
import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import keys
from agent.election_loop import (
    MAX_ENDPOINTS,
    MAX_SIZE,
    TICK,
    DropError,
    Endpoints,
    GroupConfig,
    GroupDriver,
    Hooks,
    decode,
    encode,
    encode_endpoints,
    mac_key,
    next_incarnation,
)
from chalicelib.domain.election import CONTROL_PLANE, Ack, Claim, Timing

T = Timing()
NET, GID = "net_abcd1234", "grp_abcd1234"
KEY = keys.new_wireguard_key()
K1 = mac_key(KEY, NET, GID, 1)


def served(*groups: tuple[str, int, bytes]) -> Callable[[str], tuple[int, bytes] | None]:
    table = {g: (v, k) for g, v, k in groups}
    return table.get


ONE = served((GID, 1, K1))
NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=64)
TIMES = st.floats(allow_nan=False, allow_infinity=False)
INTS = st.integers(0, 2**63 - 1)


# ------------------------------------------------------------------------------------------ codec
@given(NAMES, INTS, TIMES, INTS)
def test_a_claim_reads_back_exactly(member: str, epoch: int, sent: float, incarnation: int) -> None:
    claim = Claim(member, epoch, sent, incarnation)
    data = encode(claim, GID, 1, K1)
    assert len(data) <= MAX_SIZE and decode(data, ONE) == (GID, claim)


@given(NAMES, NAMES, INTS, TIMES, INTS, st.booleans(), INTS)
def test_an_ack_reads_back_exactly(voter: str, member: str, epoch: int, sent: float, incarnation: int,
                                   granted: bool, promised: int) -> None:
    ack = Ack(voter, Claim(member, epoch, sent, incarnation), granted, promised)
    data = encode(ack, GID, 1, K1)
    assert len(data) <= MAX_SIZE and decode(data, ONE) == (GID, ack)


def endpoints(n: int) -> dict[str, str]:
    out = {}
    for i in range(n):
        key = base64.b64encode(i.to_bytes(32, "big")).decode()
        out[key] = (f"198.18.{i // 250}.{i % 250 + 1}:{1024 + i}" if i % 3
                    else f"[fd00::{i + 1:x}]:{65535 - i}")
    return out


def test_endpoints_go_in_bounded_messages_that_read_back_to_the_same_map() -> None:
    clients = endpoints(2 * MAX_ENDPOINTS + 3)
    bad = {"not base64!": "198.18.0.1:1", base64.b64encode(b"short").decode(): "198.18.0.1:1",
           base64.b64encode(b"k" * 32).decode(): "a.name:51820",
           base64.b64encode(b"p" * 32).decode(): "198.18.0.1:0"}
    packets = encode_endpoints("host_a", 7, 100, {**clients, **bad}, GID, 1, K1)
    assert len(packets) == 3 and all(len(p) <= MAX_SIZE for p in packets)
    merged: dict[str, str] = {}
    seqs = []
    for p in packets:
        _, msg = decode(p, ONE)
        assert isinstance(msg, Endpoints) and msg.member == "host_a" and msg.incarnation == 7
        assert len(msg.endpoints) <= MAX_ENDPOINTS
        merged.update(msg.endpoints)
        seqs.append(msg.seq)
    assert merged == clients and seqs == [100, 101, 102]  # the ones that do not parse are left out
    assert len(encode_endpoints("host_a", 7, 1, {}, GID, 1, K1)) == 1  # "none yet" is said too


def reason(data: bytes, keys_: Callable[[str], tuple[int, bytes] | None] = ONE) -> str:
    with pytest.raises(DropError) as e:
        decode(data, keys_)
    return e.value.reason


CLAIM = encode(Claim("host_a", 3, 12.5, 9), GID, 1, K1)
ACK = encode(Ack("host_b", Claim("host_a", 3, 12.5, 9), True, 3), GID, 1, K1)
ENDS = encode_endpoints("host_a", 9, 1, endpoints(5), GID, 1, K1)[0]


@given(st.sampled_from((CLAIM, ACK, ENDS)), st.data())
def test_a_message_changed_in_any_byte_is_dropped_with_a_reason(data: bytes, draw: st.DataObject) -> None:
    at = draw.draw(st.integers(0, len(data) - 1))
    flip = draw.draw(st.integers(1, 255))
    changed = bytearray(data)
    changed[at] ^= flip
    assert reason(bytes(changed)) in {"malformed", "unknown_group", "other_version", "bad_mac"}


@given(st.binary(max_size=MAX_SIZE + 10))
def test_any_bytes_are_a_message_or_dropped_never_an_exception(data: bytes) -> None:
    try:
        decode(data, ONE)
    except DropError as e:
        assert e.reason in {"malformed", "unknown_group", "other_version", "bad_mac"}


def test_truncated_oversized_or_trailing_bytes_are_malformed() -> None:
    for cut in range(len(CLAIM)):
        assert reason(CLAIM[:cut]) in {"malformed", "bad_mac"}
    assert reason(CLAIM + b"x") == "bad_mac"
    # a well-MACed message with a byte after its body: the MAC holds, the shape does not
    body = CLAIM[:-32] + b"x"
    import hashlib
    import hmac
    assert reason(body + hmac.new(K1, body, hashlib.sha256).digest()) == "malformed"
    assert reason(b"SMG\x01\x01" + b"\0" * MAX_SIZE) == "malformed"
    nan = encode(Claim("host_a", 3, float("nan"), 9), GID, 1, K1)
    assert reason(nan) == "malformed"  # a time that is not a number is no time


def test_another_groups_or_versions_messages_are_dropped_even_with_a_valid_mac() -> None:
    other_key = keys.new_wireguard_key()
    k_other = mac_key(other_key, NET, "grp_other123", 1)
    k2 = mac_key(KEY, NET, GID, 2)
    # the keys are bound to network, group and version: all different from K1
    assert len({K1, k_other, k2, mac_key(KEY, "net_other123", GID, 1),
                mac_key(KEY, NET, "grp_x1234", 1)}) == 5
    theirs = encode(Claim("host_a", 3, 1.0, 1), "grp_other123", 1, k_other)
    assert reason(theirs) == "unknown_group"  # a group we do not serve
    # a group we serve too, but its message relabelled as ours (or ours keyed with its key)
    both = served((GID, 1, K1), ("grp_other123", 1, k_other))
    relabelled = encode(Claim("host_a", 3, 1.0, 1), GID, 1, k_other)
    assert reason(relabelled, both) == "bad_mac"
    assert reason(encode(Claim("host_a", 3, 1.0, 1), GID, 2, k2)) == "other_version"  # after rotate-key
    assert reason(encode(Claim("host_a", 3, 1.0, 1), GID, 1, k2)) == "bad_mac"  # a new key, old label
    v2 = served((GID, 2, k2))
    assert reason(CLAIM, v2) == "other_version"  # a replay of version 1 once we hold version 2


# ---------------------------------------------------------------------------------------- driver
@dataclass
class Net:
    """Members' drivers with one injected clock; datagrams through the real codec, delivered at the
    next tick (or dropped for a member cut off)."""

    names: tuple[str, ...]
    now: float = 0.0
    cut: set[str] = field(default_factory=set)
    up: dict[str, set[str]] = field(default_factory=dict)
    calls: list[tuple[float, str, str]] = field(default_factory=list)
    asked: list[Claim] = field(default_factory=list)
    drivers: dict[str, GroupDriver] = field(default_factory=dict)
    inflight: list[tuple[bytes, str]] = field(default_factory=list)
    fail_activate: set[str] = field(default_factory=set)
    rng: random.Random | None = None  # with one: each datagram lost (1 in 5) or delayed up to 0.1 s
    delayed: list[tuple[float, bytes, str]] = field(default_factory=list)
    most_active: int = 0  # the most members acting active at one moment

    def __post_init__(self) -> None:
        for n in self.names:
            self.start(n)

    def start(self, n: str, incarnation: int = 1) -> None:
        peers = {m: ("127.0.0.1", i) for i, m in enumerate(self.names) if m != n}
        config = GroupConfig(NET, GID, n, self.names, peers, 1, KEY)
        self.up[n] = set(self.names) - {n}

        def on_active(n: str = n) -> None:
            self.calls.append((self.now, n, "active"))
            if n in self.fail_activate:
                raise RuntimeError("pyroute2 said no")

        def on_standby(n: str = n) -> None:
            self.calls.append((self.now, n, "standby"))

        def up(n: str = n) -> set[str]:
            return self.up[n]

        hooks = Hooks(up=up, on_active=on_active, on_standby=on_standby)
        self.drivers[n] = GroupDriver(config, hooks, incarnation, self.now, T,
                                      ask=lambda _net, _gid, c: self.asked.append(c))

    def send_from(self, n: str) -> Callable[[bytes, tuple[str, int]], None]:
        def send(data: bytes, address: tuple[str, int]) -> None:
            if n in self.cut:
                return
            if self.rng is None:
                self.inflight.append((data, self.names[address[1]]))
            elif self.rng.random() >= 0.2:
                self.delayed.append((self.now + self.rng.uniform(0.0, 0.1), data, self.names[address[1]]))
        return send

    def run(self, until: float, dt: float = 0.01) -> None:
        while self.now < until:
            self.now = round(self.now + dt, 6)
            arrived, self.inflight = self.inflight, []
            arrived += [(d, to) for at, d, to in self.delayed if at <= self.now]
            self.delayed = [x for x in self.delayed if x[0] > self.now]
            for data, to in arrived:
                if to in self.drivers and to not in self.cut:
                    d = self.drivers[to]
                    _, msg = decode(data, served((GID, 1, d.key()[1])))
                    d.receive(msg)
            for n, d in self.drivers.items():
                if d.pending or d.next_at <= self.now:
                    d.tick(lambda: self.now, self.send_from(n))
            self.most_active = max(self.most_active, len(self.active()))

    def active(self) -> list[str]:
        return [n for n, d in self.drivers.items() if d.acted == "active"]


def test_at_a_common_start_the_first_member_becomes_active_once_and_stays() -> None:
    net = Net(("a", "b", "c"))
    net.run(5.0)
    assert net.active() == ["a"]
    assert [(n, r) for _, n, r in net.calls] == [("a", "active")]  # one call, no flapping
    status = net.drivers["a"].status()
    assert status.as_row() == {"id": GID, "role": "active", "epoch": 1, "down": []}
    assert net.drivers["b"].status().role == "standby"


def test_a_crash_of_the_active_member_moves_it_to_the_next_within_the_liveness_bound() -> None:
    net = Net(("a", "b", "c"))
    net.run(5.0)
    net.cut.add("a")
    del net.drivers["a"]
    crash = net.now
    net.run(crash + 0.5)
    net.up["b"].discard("a")  # the probes see it down
    net.up["c"].discard("a")
    net.run(crash + 5.0)
    assert net.active() == ["b"]
    took = next(t for t, n, r in net.calls if n == "b" and r == "active") - crash
    assert took < T.promise + 2 * T.stagger + 0.1
    assert net.drivers["c"].status().down == ("a",)


def test_a_member_cut_off_withdraws_when_its_lease_ends_not_a_tick_later() -> None:
    net = Net(("a", "b", "c"))
    net.run(5.0)
    a = net.drivers["a"]
    net.run(5.2, dt=0.001)
    lease_from = a.state.lease_from
    assert lease_from is not None
    net.cut.add("a")  # it hears nobody and nobody hears it: no more acks
    net.run(10.0, dt=0.001)
    (withdrawn,) = [t for t, n, r in net.calls if n == "a" and r == "standby"]
    # at the first tick after the lease ran out (1 ms steps), not at the next regular tick (≤ 0.25 s)
    assert 0 <= withdrawn - (lease_from + T.lease) <= 0.0015
    took = next(t for t, n, r in net.calls if n != "a" and r == "active")
    assert took > withdrawn  # the next one takes over only after it withdrew


def probes(net: Net) -> None:
    """Every member's probes' verdict: the live members it can hear (a member cut off hears none)."""
    for n in net.drivers:
        net.up[n] = set() if n in net.cut else {m for m in net.drivers if m != n and m not in net.cut}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from((("a", "b", "c"), ("a", "b", "c", "d"))),
       st.lists(st.tuples(st.floats(0.5, 20.0), st.sampled_from(("crash", "restart", "cut", "heal"))),
                max_size=8))
def test_never_two_members_act_active_at_once_under_loss_delay_partitions_crashes_and_restarts(
        seed: int, names: tuple[str, ...], events: list[tuple[float, str]]) -> None:
    net = Net(names, rng=random.Random(seed))
    rng = random.Random(seed + 1)
    starts = dict.fromkeys(names, 1)
    for at, what in sorted(events):
        net.run(at)
        dead = [n for n in names if n not in net.drivers]
        # the active member is the interesting victim: it must stop acting before another starts
        victim = net.active()[0] if net.active() and rng.random() < 0.7 else rng.choice(list(net.drivers))
        if what == "crash" and len(dead) < len(names) - 1:
            del net.drivers[victim]  # it falls silent, its address goes with it
            net.cut.discard(victim)
        elif what == "restart" and dead:
            back = rng.choice(dead)
            starts[back] += 1
            net.start(back, incarnation=starts[back])
        elif what == "cut":
            net.cut.add(victim)  # alive, and acting on what it knows, but nobody hears it
        elif what == "heal" and net.cut:
            net.cut.discard(rng.choice(sorted(net.cut)))
        probes(net)  # they see it at once (the worst case: no stagger to wait out)
    net.run(net.now + 3.0)
    assert net.most_active <= 1
    net.rng, net.cut = None, set()  # then messages flow (each in 10 ms): with a quorum alive, one is active
    probes(net)
    net.run(net.now + T.lease + T.promise + len(names) * T.stagger + 1.0)
    assert net.most_active <= 1
    if len(net.drivers) * 2 > len(names):
        assert len(net.active()) == 1


def test_a_free_member_steps_when_its_turn_comes_not_a_tick_later() -> None:
    net = Net(("a", "b", "c"))
    net.run(3.0, dt=0.001)
    a = net.drivers["a"]
    # quiet for one promise after the start, then a campaigns at once (ticks alone: up to 0.25 s later)
    assert a.state.claim_epoch == 1 and 0 <= a.state.claim_started - T.promise <= 0.0015
    net.cut.add("a")
    del net.drivers["a"]
    crash = net.now
    net.run(crash + 4.0, dt=0.001)
    b = net.drivers["b"]
    # b (rank 1: a is still seen up) is free one promise after a's last claim, and claims one stagger later
    assert b.state.claim_epoch == 2 and crash < b.state.heard_until <= crash + T.promise
    assert 0 <= b.state.claim_started - (b.state.heard_until + T.stagger) <= 0.0015


def test_on_active_is_called_only_when_the_lease_holds_right_before_the_call() -> None:
    net = Net(("a", "b", "c"))
    a = net.drivers["a"]

    def acks_for_a() -> list[bytes]:
        return [d for d, to in net.inflight if to == "a" and isinstance(decode(d, ONE)[1], Ack)]

    while not acks_for_a():  # a claims once free; b and c ack
        net.run(net.now + 0.01)
    for data in acks_for_a():
        a.receive(decode(data, ONE)[1])
    readings = iter([net.now])  # the step's own reading; the check right before acting reads far later
    a.tick(lambda: next(readings, net.now + 10.0), net.send_from("a"))
    assert a.role == "active" and a.acted == "standby" and net.calls == []
    readings = iter([net.now + 0.01])
    a.tick(lambda: next(readings, net.now + 0.02), net.send_from("a"))  # in time: it acts
    assert a.acted == "active" and [r for _, _, r in net.calls] == ["active"]


def test_a_failing_on_active_is_withdrawn_and_tried_again() -> None:
    net = Net(("a", "b", "c"))
    net.fail_activate.add("a")
    net.run(2.0)
    assert net.calls[:2] == [(net.calls[0][0], "a", "active"), (net.calls[0][0], "a", "standby")]
    net.fail_activate.clear()
    net.run(4.0)
    assert net.active() == ["a"] and net.calls[-1][1:] == ("a", "active")
    tries = [t for t, n, r in net.calls if r == "active"]
    assert len(tries) == 2 and tries[1] - tries[0] >= 1.0  # tried again after a second, not every tick


def test_the_control_plane_is_asked_for_a_first_claim_and_while_the_members_up_are_no_quorum() -> None:
    net = Net(("a", "b", "c"))
    net.run(5.0)
    assert [c.epoch for c in net.asked] == [1]  # renewals with b and c up: not asked again
    net.up["a"] = {"b"}  # a and b: a quorum of three without the control plane
    net.run(6.0)
    assert len(net.asked) == 1
    net.up["a"] = set()  # it sees nobody up: every renewal goes to the control plane too
    net.run(7.0)
    assert len(net.asked) >= 2 and all(c.member == "a" and c.epoch == 1 for c in net.asked)
    assert [c.sent for c in net.asked] == sorted({c.sent for c in net.asked})


def test_two_members_the_survivor_is_active_only_with_the_control_planes_ack_even_a_late_one() -> None:
    net = Net(("a", "b"))
    net.run(5.0)
    assert net.active() == ["a"]
    net.cut.add("a")
    del net.drivers["a"]
    net.up["b"] = set()
    net.run(12.0)
    b = net.drivers["b"]
    assert net.active() == [] and net.asked  # it asked, nobody answered: standby
    first = next(c for c in net.asked if c.member == "b")
    b.receive(Ack(CONTROL_PLANE, first, True, first.epoch), from_control_plane=True)  # late: 1st claim
    net.run(12.5)
    assert net.active() == []  # that campaign is over: a stale ack makes no lease
    latest = [c for c in net.asked if c.member == "b"][-1]
    b.receive(Ack(CONTROL_PLANE, latest, True, latest.epoch), from_control_plane=True)
    net.run(12.5 + TICK)
    assert net.active() == ["b"]


def test_foreign_acks_other_incarnations_and_non_members_are_counted_not_used() -> None:
    counters: Counter[str] = Counter()
    config = GroupConfig(NET, GID, "a", ("a", "b", "c"), {}, 1, KEY)
    d = GroupDriver(config, Hooks(up=lambda: ()), 5, 0.0, T, counters=counters)
    d.receive(Ack("b", Claim("a", 1, 0.0, 4), True, 1))  # our claim, an earlier start's
    d.receive(Ack("b", Claim("c", 1, 0.0, 5), True, 1))  # someone else's claim
    d.receive(Claim("z", 1, 0.0, 1))  # not a member
    d.receive(Claim("a", 1, 0.0, 5))  # ourselves, replayed
    d.receive(Ack(CONTROL_PLANE, Claim("a", 1, 0.0, 5), True, 1))  # "the control plane" over UDP
    assert counters == Counter(other_incarnation=1, not_ours=1, not_member=3) and not d.pending
    d.receive(Ack(CONTROL_PLANE, Claim("a", 1, 0.0, 5), True, 1), from_control_plane=True)
    assert d.pending  # the vote worker's answer is taken


def test_a_standby_learns_the_active_members_endpoints_merged_and_skips_stale_ones() -> None:
    learned: list[dict[str, str]] = []
    config = GroupConfig(NET, GID, "b", ("a", "b"), {}, 1, KEY)
    hooks = Hooks(up=lambda: (), learn_endpoints=lambda e: learned.append(dict(e)))
    d = GroupDriver(config, hooks, 1, 0.0, T)
    e = endpoints(3)
    first, second = dict(list(e.items())[:2]), dict(list(e.items())[2:])
    d.receive(Endpoints("a", 1, 5, first))
    d.receive(Endpoints("a", 1, 6, second))
    d.receive(Endpoints("a", 1, 5, {next(iter(e)): "198.18.9.9:9"}))  # a replay of an older one
    assert learned == [first, e] and d.counters["stale_endpoints"] == 1


# -------------------------------------------------------------------------------------- incarnation
def test_every_start_gets_a_new_incarnation_persisted_privately(tmp_path) -> None:
    boot = "b13c995b-ba92-4942-8547-18c5b56bc122"
    got = [next_incarnation(tmp_path, boot, wall=1_800_000_000) for _ in range(3)]  # restarts in one second
    assert len(set(got)) == 3 and got == sorted(got)
    path = tmp_path / "election.json"
    assert json.loads(path.read_text())["counter"] == 1_800_000_002
    assert (os.stat(path).st_mode & 0o777) == 0o600
    # the counter file restored from a backup: a new boot, or a later second, still gives a new one
    path.write_text(json.dumps({"counter": 0}))
    assert next_incarnation(tmp_path, "another-boot", wall=1_800_000_000) not in got
    path.write_text("{not json")
    assert next_incarnation(tmp_path, boot, wall=1_800_000_100) not in got
    assert all(0 <= i < 2**48 for i in got)  # an exact JSON number for the control plane


def test_the_claim_wire_shape_is_compact() -> None:
    assert len(CLAIM) < 120 and len(ACK) < 140
    assert struct.unpack("!3sBB", CLAIM[:5]) == (b"SMG", 1, 1)
