"""Automatic relays, agent side (issue 10): which peers a host tries to reach without a session
(:mod:`agent.reach`), how soon their probes may call them down, and how often the device is read
meanwhile. Pure: the device's counters and the times are passed in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.probe import FAST, SLOW, Probes, ProbeSettings, Target, choose_targets
from agent.reach import Attempts, ReachSettings
from agent.wg.base import DevicePeer
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.domain.models import Gateway, Member, MemberRole

WALL = 1_800_000_000.0  # unix seconds of the first read
PEER = HostId("host_peer")


def peer(key: str, handshake: float | None, tx: int) -> dict[str, DevicePeer]:
    return {key: DevicePeer(key, latest_handshake=None if handshake is None else int(handshake), tx_bytes=tx)}


def test_a_peer_sent_to_that_never_answered_is_tried_from_the_read_that_found_it() -> None:
    a = Attempts()
    a.observe(peer("k", None, 0), WALL, 100.0)
    assert a.trying() == {}  # nothing sent yet: most pairs of a mesh never talk
    a.observe(peer("k", None, 148), WALL + 1, 101.0)
    a.observe(peer("k", None, 296), WALL + 2, 102.0)
    assert a.trying() == {"k": 101.0} and a.hold_until("k") == 101.0 + 5.0
    a.observe(peer("k", WALL + 3, 400), WALL + 3, 103.0)  # the handshake came: a session
    assert a.trying() == {}


def test_a_path_that_broke_counts_once_the_session_expired_and_the_host_still_sends() -> None:
    a = Attempts()
    a.observe(peer("k", WALL - 100, 1000), WALL, 0.0)
    a.observe(peer("k", WALL - 100, 2000), WALL + 10, 10.0)  # sending, session 110 s old: fine
    assert a.trying() == {}
    a.observe(peer("k", WALL - 100, 2000), WALL + 90, 90.0)  # 190 s old but idle: nobody waits
    assert a.trying() == {}
    a.observe(peer("k", WALL - 100, 2100), WALL + 91, 91.0)  # past REJECT_AFTER_TIME and sending
    assert a.trying() == {"k": 91.0}
    a.observe(peer("k", WALL - 100, 2100), WALL + 92, 92.0)  # WireGuard paused its retries: still tried
    assert a.trying() == {"k": 91.0}
    a.observe(peer("k", WALL + 93, 2200), WALL + 93, 93.0)
    assert a.trying() == {}


def test_the_device_is_read_every_second_only_while_something_is_undecided_or_peers_just_came() -> None:
    a = Attempts(ReachSettings(bound=5.0, decide=5.0, settle=30.0, watch=1.0))
    assert a.next_read(0.0, otherwise=10.0) == 10.0
    a.peers_added(0.0)
    assert a.next_read(29.0, otherwise=10.0) == 1.0 and a.next_read(30.0, otherwise=10.0) == 10.0
    a.observe(peer("k", None, 148), WALL, 40.0)
    assert a.next_read(49.0, otherwise=10.0) == 1.0 and a.undecided("k", 49.0)
    assert a.next_read(50.0, otherwise=10.0) == 10.0 and not a.undecided("k", 50.0)


def test_a_target_held_cannot_go_down_before_its_bound_and_goes_at_the_first_miss_after() -> None:
    p = Probes(ProbeSettings(fast=0.5, timeout=1.0, down_after=3))
    p.set_targets({PEER: Target("100.64.0.9", FAST, hold_until=5.0)}, now=0.0)
    changes = []
    for t in range(0, 80):
        now = t / 10
        p.due(now)
        changes += [(c, now) for c in p.expire(now)]
    # six misses before 5 s say nothing; the miss counted at 5.0 s (sent at 4.0 s) makes it down
    assert changes == [((PEER, False), 5.0)]
    assert p.states()[PEER].loss_pct == 100


@given(st.lists(st.booleans(), min_size=1, max_size=40), st.floats(0.0, 20.0))
def test_a_hold_only_delays_down_it_never_hides_a_reply(answers: list[bool], hold: float) -> None:
    """Against the same target without a hold: the same up verdicts, and down never before ``hold``."""
    held, free = (Probes(ProbeSettings(fast=0.5, timeout=0.4)) for _ in range(2))
    held.set_targets({PEER: Target("100.64.0.9", FAST, hold)}, now=0.0)
    free.set_targets({PEER: Target("100.64.0.9", FAST)}, now=0.0)
    for i, answered in enumerate(answers):
        now = i * 0.5
        for p, changes in ((held, "h"), (free, "f")):
            for seq, _, a in p.due(now):
                if answered:
                    p.reply(seq, a, now + 0.01)
            out = p.expire(now + 0.45)
            if changes == "h":
                assert all(up or now + 0.45 >= hold for _, up in out)
        if free.states()[PEER].up:
            assert held.states()[PEER].up


def member(n: int, role: MemberRole | None = None) -> Member:
    return Member(NetworkId("net_a"), HostId(f"host_{n}"), f"h{n}", f"key{n}", f"100.64.0.{n}",
                  f"fd00::{n}", 51820, role=role or MemberRole())


def test_peers_without_a_session_come_before_gateways_this_host_does_not_use() -> None:
    used = member(1, MemberRole(gateway=Gateway(egress=("198.19.1.0/24",))))
    unused = member(2, MemberRole(gateway=Gateway(remote_access=True)))
    tried, old = member(3), member(4)
    out = choose_targets([(used, True), (unused, False)], [tried, old], limit=3,
                         trying={tried.host_id: (FAST, 12.0)})
    assert out == {used.host_id: Target(used.ipv4, FAST), tried.host_id: Target(tried.ipv4, FAST, 12.0),
                   old.host_id: Target(old.ipv4, SLOW)}
