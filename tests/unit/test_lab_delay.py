"""The lab's delay line (:class:`skymesh.lab.delay.DelayLine`): the pure part of the userspace link
that stands in for netem in scenario 5 (placement with added delay)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skymesh.lab.delay import DelayLine, Impairment
from skymesh.lab.errors import LabError


def test_a_packet_is_released_after_the_delay_and_not_before() -> None:
    line = DelayLine(Impairment(delay_ms=40), random.Random(0))
    assert line.push(b"p", now=1.0) == pytest.approx(1.04)
    assert line.due(1.0399) == [] and len(line) == 1
    assert line.due(1.0401) == [b"p"] and len(line) == 0 and line.forwarded == 1


def test_jitter_spreads_the_delays_over_the_band_around_the_mean() -> None:
    line = DelayLine(Impairment(delay_ms=5, jitter_ms=3), random.Random(7))
    waits = []
    for i in range(2000):
        at = line.push(b"x", now=float(i))  # a second apart: no packet waits for the one ahead
        assert at is not None
        waits.append((at - i) * 1000)
        line.due(at)
    assert 2.0 <= min(waits) < 2.1 and 7.9 < max(waits) <= 8.0
    assert sum(waits) / len(waits) == pytest.approx(5.0, abs=0.1)


@given(st.lists(st.tuples(st.floats(0, 0.05), st.integers(0, 1000)), max_size=60), st.integers(0, 2**32))
def test_packets_leave_in_arrival_order_each_no_earlier_than_its_delay_allows(
        gaps: list[tuple[float, int]], seed: int) -> None:
    line = DelayLine(Impairment(delay_ms=10, jitter_ms=8), random.Random(seed))
    now, sent, released = 0.0, [], []
    for gap, n in gaps:
        now += gap
        at = line.push(n.to_bytes(2, "big"), now)
        assert at is not None and at >= now + 0.002 - 1e-9  # 10 - 8 ms at least
        sent.append(n.to_bytes(2, "big"))
        released += line.due(now)
    released += line.due(now + 1)
    assert released == sent


def test_loss_drops_that_share_of_the_packets_and_a_new_setting_applies_to_later_ones() -> None:
    line = DelayLine(Impairment(loss_pct=100), random.Random(3))
    assert [line.push(b"x", 0.0) for _ in range(5)] == [None] * 5 and line.dropped == 5
    line.impairment = Impairment(loss_pct=25)
    kept = sum(line.push(b"x", 0.0) is not None for _ in range(4000))
    assert 2800 < kept < 3200
    line.impairment = Impairment()
    assert line.push(b"y", 5.0) == 5.0


def test_lowering_the_delay_never_lets_a_packet_overtake_one_queued_before() -> None:
    line = DelayLine(Impairment(delay_ms=40), random.Random(0))
    first = line.push(b"1", 0.0)
    line.impairment = Impairment()
    assert line.push(b"2", 0.001) == first
    assert line.due(first or 0) == [b"1", b"2"]


@pytest.mark.parametrize("bad", [dict(delay_ms=-1), dict(jitter_ms=-0.5), dict(loss_pct=101)])
def test_an_impossible_impairment_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(LabError):
        Impairment(**bad)
