"""The prober's pure parts (issue 10: probes): one target's up/down with hysteresis, RTT and loss;
the schedule and the matching of replies; the rule for reporting at once. No sockets: time is
passed in."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from agent.probe import (
    FAST,
    SLOW,
    Health,
    IcmpSocket,
    Prober,
    Probes,
    ProbeSettings,
    Target,
    clearly_better,
    echo_reply_seq,
    rows,
    worth_reporting_now,
)
from chalicelib.domain.ids import HostId
from chalicelib.domain.models import LatencyRow
from skymesh.lab.wait import wait_until

S = ProbeSettings()  # down after 3 misses, up after 2 replies
GW, GW2 = HostId("host_gw01"), HostId("host_gw02")


def health(outcomes: str) -> tuple[Health, list[bool]]:
    """Feed ``r`` (a 10 ms reply) and ``m`` (a miss); return the health and the changes it said."""
    h = Health(S)
    changes = []
    for o in outcomes:
        if (h.reply(10.0) if o == "r" else h.miss()):
            changes.append(h.up)
    return h, changes


def test_a_target_is_down_after_three_misses_in_a_row_and_up_after_two_replies() -> None:
    h, changes = health("rr")
    assert h.up is True and changes == [True]
    h, changes = health("rrmm")
    assert h.up is True and changes == [True]
    h, changes = health("rrmmm")
    assert h.up is False and changes == [True, False]
    h, changes = health("rrmmmr")
    assert h.up is False
    h, changes = health("rrmmmrr")
    assert h.up is True and changes == [True, False, True]


def test_nothing_is_said_before_the_first_verdict() -> None:
    assert health("r")[0].up is None and health("mm")[0].up is None
    assert health("mmm")[0].up is False  # never answered: down, said once


@given(st.text(alphabet="rm", max_size=60))
def test_a_single_miss_never_takes_an_up_target_down(outcomes: str) -> None:
    """Misses that are never three in a row (no "mmm") never make a target that was up go down."""
    h, changes = health("rr" + outcomes.replace("mmm", "mmr"))
    assert False not in changes and h.up is True


@given(st.text(alphabet="rm", min_size=1, max_size=60))
def test_the_verdict_follows_the_last_run_of_outcomes(outcomes: str) -> None:
    h, changes = health(outcomes)
    # each change flips the state, and the state is the last change
    assert all(a != b for a, b in zip(changes, changes[1:], strict=False))
    assert h.up == (changes[-1] if changes else None)
    tail = len(outcomes) - len(outcomes.rstrip(outcomes[-1]))
    if outcomes[-1] == "m" and tail >= S.down_after:
        assert h.up is False
    if outcomes[-1] == "r" and tail >= S.up_after:
        assert h.up is True


def test_loss_is_over_the_window_and_rtt_is_smoothed() -> None:
    h = Health(ProbeSettings(window=10, alpha=0.5))
    for _ in range(10):
        h.miss()
    assert h.loss_pct == 100
    for _ in range(5):
        h.reply(10.0)
    assert h.loss_pct == 50  # 5 misses of the last 10 probes
    h.reply(30.0)  # a spike moves the average half-way, not all the way
    assert h.rtt_ms == 20.0 and h.loss_pct == 40


def probes(**kw: float) -> Probes:
    p = Probes(ProbeSettings(**kw))  # type: ignore[arg-type]
    p.set_targets({GW: Target("100.64.0.1"), GW2: Target("100.64.0.2", SLOW)}, now=0.0)
    return p


def test_each_target_is_probed_at_its_interval() -> None:
    p = probes(fast=1.0, slow=10.0)
    first = p.due(0.0)
    assert [(h, a) for _, h, a in first] == [(GW, "100.64.0.1"), (GW2, "100.64.0.2")]
    assert p.due(0.5) == []
    assert [h for _, h, _ in p.due(1.0)] == [GW]
    sent = sum(len(p.due(t / 10)) for t in range(11, 101))
    assert sent == 9 + 1  # the fast one every second, the slow one once more at 10 s
    assert p.next_event(10.0) <= 1.0


def test_replies_count_only_from_the_probed_address_and_only_while_in_flight() -> None:
    p = probes(timeout=1.0)
    (s1, _, _), (s2, _, _) = p.due(0.0)
    assert p.reply(s1, "100.64.0.2", 0.01) is None  # another target's address: not counted
    assert p.reply(s1 + 1000, "100.64.0.1", 0.01) is None  # a seq never sent
    assert p.states()[GW].rtt_ms is None
    assert p.reply(s1, "100.64.0.1", 0.02) is None and p.states()[GW].rtt_ms == 20.0
    assert p.reply(s1, "100.64.0.1", 0.03) is None  # a duplicate
    assert p.states()[GW].sent == 1
    assert p.expire(1.5) == []  # GW2's first miss; nothing went down
    assert p.reply(s2, "100.64.0.2", 1.6) is None  # too late: the miss stands, no RTT
    assert p.states()[GW2].rtt_ms is None and p.states()[GW2].loss_pct == 100


def test_a_silent_target_goes_down_after_three_timeouts_and_says_so_once() -> None:
    p = probes(fast=1.0, timeout=0.5)
    p.set_targets({GW: Target("100.64.0.1")}, now=0.0)
    changes = []
    for t in range(0, 60):
        now = t / 10
        for seq, _, _ in p.due(now):
            if now < 2.0:
                p.reply(seq, "100.64.0.1", now + 0.005)
        changes += p.expire(now)
    assert changes == [(GW, False)]
    # the first miss is the probe sent at 2 s; the third (sent at 4 s) times out at 4.5 s
    assert p.states()[GW].up is False


def test_a_target_that_stays_keeps_its_history_and_one_that_goes_is_forgotten() -> None:
    p = probes()
    for seq, _, a in p.due(0.0):
        p.reply(seq, a, 0.01)
    p.set_targets({GW: Target("100.64.0.1", SLOW)}, now=0.5)
    assert set(p.states()) == {GW} and p.states()[GW].rtt_ms == 10.0
    p.set_targets({GW: Target("100.64.0.9")}, now=0.6)  # moved: a new target
    assert p.states()[GW].rtt_ms is None


def test_targets_are_bounded() -> None:
    p = Probes(ProbeSettings(max_targets=3))
    p.set_targets({HostId(f"host_{i:04d}"): Target(f"100.64.0.{i}") for i in range(10)}, now=0.0)
    assert len(p.due(0.0)) == 3


def test_rows_leave_out_targets_without_a_verdict_and_round_rtt() -> None:
    p = probes()
    for seq, _, a in p.due(0.0):
        p.reply(seq, a, 0.01234)
    assert rows(p.states()) == ()  # one reply is no verdict yet
    for seq, _, a in p.due(10.0):
        p.reply(seq, a, 10.02)
    assert [(r.target, r.up, r.loss_pct) for r in rows(p.states())] == [(GW, True, 0), (GW2, True, 0)]
    assert all(r.rtt_ms == round(r.rtt_ms, 1) for r in rows(p.states()))


def row(target: HostId, rtt: float | None, up: bool = True) -> LatencyRow:
    return LatencyRow(target, rtt, 0, up)


def test_hysteresis_is_ten_ms_and_two_thirds() -> None:
    assert clearly_better(20.0, 40.0) and clearly_better(50.0, 80.0)
    assert not clearly_better(25.0, 30.0)  # less than 10 ms better
    assert not clearly_better(70.0, 100.0)  # 30 ms better, but not below two thirds


def test_a_report_goes_out_at_once_when_a_target_goes_up_or_down_or_comes_or_goes() -> None:
    before = [row(GW, 10.0), row(GW2, 40.0)]
    assert worth_reporting_now(before, [row(GW, 10.0, up=False), row(GW2, 40.0)], [GW, GW2])
    assert worth_reporting_now(before, [row(GW, 10.0)], [GW, GW2])
    assert worth_reporting_now([row(GW, 10.0)], before, [GW, GW2])


def test_a_report_goes_out_at_once_when_the_gateways_ranking_flips_beyond_hysteresis() -> None:
    before = [row(GW, 30.0), row(GW2, 60.0)]
    assert not worth_reporting_now(before, [row(GW, 35.0), row(GW2, 28.0)], [GW, GW2])  # within the band
    assert not worth_reporting_now(before, [row(GW, 45.0), row(GW2, 120.0)], [GW, GW2])  # same order
    assert worth_reporting_now(before, [row(GW, 45.0), row(GW2, 20.0)], [GW, GW2])
    assert not worth_reporting_now(before, [row(GW, 45.0), row(GW2, 20.0)], [])  # not ranked: heartbeat


@given(st.lists(st.floats(1.0, 1000.0), min_size=2, max_size=2),
       st.lists(st.floats(-0.2, 0.2), min_size=2, max_size=2))
def test_latency_noise_within_a_fifth_never_reports_at_once(rtts: list[float], noise: list[float]) -> None:
    """RTTs that each move by at most 20 % never flip beyond hysteresis (a flip needs one to
    fall below two thirds of another that was no lower)."""
    before = [row(GW, rtts[0]), row(GW2, rtts[1])]
    after = [row(GW, rtts[0] * (1 + noise[0] / 2)), row(GW2, rtts[1] * (1 + noise[1] / 2))]
    assert not worth_reporting_now(before, after, [GW, GW2])


def test_fast_and_slow_are_the_settings_intervals() -> None:
    s = ProbeSettings(fast=0.3, slow=7.0)
    assert s.interval(FAST) == 0.3 and s.interval(SLOW) == 7.0


# --- what the socket side counts as a reply (pure; the sockets run in tests/e2e/test_latency.py) ---
TOKEN = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def icmp(kind: int, ident: int, seq: int, payload: bytes = TOKEN) -> bytes:
    return struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload


IPV4_HEADER = bytes([0x45]) + bytes(19)  # version 4, 20 bytes, as a raw IPv4 socket hands it over


def test_a_reply_to_our_echo_gives_its_sequence_number_on_each_kind_of_socket() -> None:
    assert echo_reply_seq(icmp(0, 7, 42), socket.AF_INET, raw=False, ident=0, token=TOKEN) == 42
    assert echo_reply_seq(IPV4_HEADER + icmp(0, 7, 42), socket.AF_INET, raw=True, ident=7, token=TOKEN) == 42
    assert echo_reply_seq(icmp(129, 7, 42), socket.AF_INET6, raw=True, ident=7, token=TOKEN) == 42
    assert echo_reply_seq(icmp(129, 9, 42), socket.AF_INET6, raw=False, ident=7, token=TOKEN) == 42


def test_other_programs_pings_requests_and_short_packets_are_not_replies() -> None:
    v4raw = {"family": socket.AF_INET, "raw": True, "ident": 7, "token": TOKEN}
    assert echo_reply_seq(IPV4_HEADER + icmp(0, 8, 42), **v4raw) is None  # another ident: another ping
    assert echo_reply_seq(IPV4_HEADER + icmp(0, 7, 42, b"12345678"), **v4raw) is None  # not our token
    assert echo_reply_seq(IPV4_HEADER + icmp(8, 7, 42), **v4raw) is None  # an echo request
    assert echo_reply_seq(IPV4_HEADER + icmp(0, 7, 42)[:12], **v4raw) is None  # cut short
    assert echo_reply_seq(b"", **v4raw) is None
    assert echo_reply_seq(icmp(0, 7, 42), socket.AF_INET6, raw=True, ident=7, token=TOKEN) is None  # v4 type


def test_without_an_icmp_socket_targets_show_down_and_the_refusal_is_not_retried_every_probe(caplog) -> None:
    """An agent the kernel refuses both kinds of ICMP socket (not root, ping_group_range empty):
    its targets are down to it, said once, and the socket is tried again only after a while."""
    tries = []

    def refused(family: int, token: bytes) -> IcmpSocket:
        tries.append(family)
        raise PermissionError("Operation not permitted")

    changes = []
    prober = Prober(ProbeSettings(fast=0.02, timeout=0.02), open_socket=refused,
                    on_change=lambda host, up: changes.append((host, up)))
    prober.set_targets({GW: Target("100.64.0.1")})
    prober.start()
    try:
        wait_until(lambda: prober.states()[GW].sent >= 10, 10.0, "ten probes counted", interval=0.01)
    finally:
        prober.stop()
    assert changes == [(GW, False)] and prober.states()[GW].up is False
    assert tries == [socket.AF_INET]
    assert sum("cannot open an ICMP socket" in r.getMessage() for r in caplog.records) == 1


def test_a_report_goes_out_at_once_when_a_gateway_moves_past_hysteresis_and_another_is_now_apart() -> None:
    """Scenario 5: the gateway a host uses was a little slower than another (inside the band, as
    reported) and becomes much slower (+40 ms): the other is now clearly better, which moves the
    host, although the order of the two did not flip. Likewise one that was a little faster becomes
    much faster. Without a report at once the control plane hears of it at the heartbeat (5 min)."""
    RANKED = [GW, GW2]  # noqa: N806
    before = [row(GW, 7.0), row(GW2, 0.3)]
    assert worth_reporting_now(before, [row(GW, 40.0), row(GW2, 0.3)], [GW, GW2])
    assert worth_reporting_now([row(GW, 30.0), row(GW2, 25.0)], [row(GW, 30.0), row(GW2, 5.0)], [GW, GW2])
    # past the hysteresis against its own last report, but no other gateway clearly better: heartbeat
    assert not worth_reporting_now([row(GW, 30.0), row(GW2, 40.0)], [row(GW, 47.0), row(GW2, 40.0)], RANKED)
    # already clearly apart in the last report: nothing new for placement
    assert not worth_reporting_now([row(GW, 40.0), row(GW2, 0.3)], [row(GW, 90.0), row(GW2, 0.3)], RANKED)
