"""The automatic relays' decision (chalicelib.domain.autorelay), as properties over generated
networks and reports, and as examples.

(a) a relayed pair's via is an auto-relay gateway that is fresh, that neither end reports down
    and that reports neither end down; the plan of the result honours every pair (it holds);
(b) a pair a fresh report says is down (and not direct) is relayed whenever such a via exists,
    through one with the fewest unknown RTTs, then the lowest combined RTT;
(c) deterministic (whatever the order of the inputs) and converged: run again on its own
    result it changes nothing;
(d) a pair is never both direct and relayed: at each end of a relayed pair the plan has no entry
    of the other; the changes lead exactly from the recorded pairs to the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain import plan
from chalicelib.domain.autorelay import PairDecision, Report, decide, recorded, role_changes
from chalicelib.domain.ids import HostId
from chalicelib.domain.models import Gateway, LatencyRow, MemberRole
from chalicelib.domain.plan import NetworkRecords
from tests.unit import test_plan_gateways as g

NOW = 1_000


def h(i: int) -> HostId:
    return HostId(f"host_{i}")


def cost(reports: dict[HostId, Report], pair: tuple[HostId, HostId], via: HostId) -> tuple[int, float]:
    """(unknown RTTs, the sum of the known ones) of the pair's ends to ``via``."""
    rtts = [next((t.rtt_ms for t in fresh(reports)[e].rows if t.target == via), None)
            if e in fresh(reports) else None for e in pair]
    return sum(t is None for t in rtts), sum(t for t in rtts if t is not None)


def applied(records: NetworkRecords, pairs: Mapping[tuple[HostId, HostId], HostId]) -> NetworkRecords:
    """The records with exactly these pairs recorded, as the caller writes a decision."""
    members = dict(records.members)
    for a, new in role_changes(records, pairs).items():
        members[a] = replace(members[a], role=replace(members[a].role, pair_relays=new))
    return NetworkRecords(records.network, members)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[NetworkRecords, dict[HostId, Report]]:
    """A network of 3–5 hosts, some of them gateways (most with auto_relay), a few relayed by
    hand, some pairs recorded; and reports: fresh, stale or none, with rows of some targets."""
    n = draw(st.integers(3, 5))
    ids = [h(i) for i in range(1, n + 1)]
    members = []
    for i in range(1, n + 1):
        gw = draw(st.sampled_from([None, Gateway(), Gateway(), Gateway(auto_relay=False)]))
        relayed_by = draw(st.sampled_from([None] * 12 + ids))
        members.append(g.member("net_a", i, role=MemberRole(gateway=gw, relayed_by=relayed_by)))
    records = NetworkRecords.of(g.network("net_a"), members)
    pairs = draw(st.dictionaries(st.tuples(st.sampled_from(ids), st.sampled_from(ids)), st.sampled_from(ids),
                                 max_size=4))
    pairs = {(min(a, b), max(a, b)): v for (a, b), v in pairs.items() if a != b}
    records = applied(records, pairs)
    reports = {}
    for hid in ids:
        kind = draw(st.sampled_from(["fresh"] * 6 + ["stale", "none"]))
        if kind == "none":
            continue
        targets = draw(st.lists(st.sampled_from(ids), unique=True, max_size=n))
        rtts = st.sampled_from([None, 1.0, 5.0, 20.0, 21.5])
        rows = tuple(LatencyRow(t, draw(rtts), 0, draw(st.sampled_from([True, True, False])))
                     for t in sorted(targets) if t != hid)
        direct = frozenset(draw(st.lists(st.sampled_from(ids), max_size=2)))
        reports[hid] = Report(NOW - (10 if kind == "fresh" else 500), rows, direct)
    return records, reports


def fresh(reports: dict[HostId, Report]) -> dict[HostId, Report]:
    return {x: r for x, r in reports.items() if NOW - r.at <= 90}


def down(reports: dict[HostId, Report], x: HostId, target: HostId) -> bool:
    r = fresh(reports).get(x)
    return r is not None and any(row.target == target and not row.up for row in r.rows)


def usable(records: NetworkRecords, reports: dict[HostId, Report], a: HostId, b: HostId, via: HostId) -> bool:
    """The model of rule 2, written plainly."""
    gw = records.gateway(via)
    return (gw is not None and gw.auto_relay and via not in (a, b) and via in fresh(reports)
            and records.pair_holds(a, b, via)
            and not any(down(reports, x, y) for x, y in ((a, via), (b, via), (via, a), (via, b))))


def decided(world: tuple[NetworkRecords, dict[HostId, Report]]
            ) -> tuple[NetworkRecords, dict[HostId, Report], PairDecision, NetworkRecords]:
    """The world, its decision, and the records with the decision written."""
    records, reports = world
    d = decide(records, reports, NOW)
    return records, reports, d, applied(records, d.pairs)


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_relays_go_through_usable_auto_relays_only_and_the_plan_honours_them(
        world: tuple[NetworkRecords, dict[HostId, Report]]) -> None:
    records, reports, d, after = decided(world)
    assert dict(after.pair_relays) == dict(d.pairs), "(a) the plan ignores a pair the decision made"
    for (a, b), via in d.pairs.items():
        assert usable(after, reports, a, b, via), f"(a) {a}, {b} through {via}"
        view_a, view_b = plan.network_plan(after)[a], plan.network_plan(after)[b]
        assert b not in {p.host_id for p in view_a.peers}, "(d)"
        assert a not in {p.host_id for p in view_b.peers}, "(d)"


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_an_unreachable_pair_is_relayed_through_the_best_usable_relay_when_there_is_one(
        world: tuple[NetworkRecords, dict[HostId, Report]]) -> None:
    records, reports, d, after = decided(world)
    before = recorded(records)
    for x, r in fresh(reports).items():
        for row in r.rows:
            if row.up or row.target == x or row.target in r.direct or row.target not in records.members:
                continue
            if row.target not in fresh(reports):
                assert (min(x, row.target), max(x, row.target)) not in set(d.pairs) - set(before), (
                    "(b) a pair with an end that has no fresh report (off) is not relayed")
                continue
            pair = (min(x, row.target), max(x, row.target))
            options = [v for v in records.members if usable(after, reports, *pair, v)]
            if pair in before:
                continue  # kept, moved or ended by the other rules
            assert (pair in d.pairs) == bool(options), f"(b) {pair}: {options}"
            if pair in d.pairs:
                costs = {v: cost(reports, pair, v) for v in options}
                assert costs[d.pairs[pair]] == min(costs.values()), f"(b) {pair}: {costs}"


@settings(max_examples=400, deadline=None)
@given(worlds())
def test_the_decision_is_deterministic_and_converged(
        world: tuple[NetworkRecords, dict[HostId, Report]]) -> None:
    records, reports = world
    d = decide(records, reports, NOW)
    shuffled = NetworkRecords(records.network, dict(reversed(list(records.members.items()))))
    assert decide(shuffled, dict(reversed(list(reports.items()))), NOW) == d, "(c) order"
    again = decide(applied(records, d.pairs), reports, NOW)
    assert again.changes == () and dict(again.pairs) == dict(d.pairs), "(c) converges"
    before = recorded(records)
    assert {(c.a, c.b): (c.from_via, c.to_via) for c in d.changes} == {
        p: (before.get(p), d.pairs.get(p)) for p in set(before) | set(d.pairs)
        if before.get(p) != d.pairs.get(p)}, "(d) the changes lead from the recorded pairs to the result"


# --- examples -------------------------------------------------------------------------------------


def five(**pairs: object) -> NetworkRecords:
    """host_1 and host_2 behind blocked paths; host_3, host_4 and host_5 auto-relay gateways."""
    roles = {i: MemberRole(gateway=Gateway()) for i in (3, 4, 5)}
    if pairs:
        roles[1] = MemberRole(pair_relays=((h(2), HostId(str(pairs["via"]))),))
    return NetworkRecords.of(g.network("net_a"), [g.member("net_a", i, role=roles.get(i, MemberRole()))
                                                   for i in range(1, 6)])


def rows(**rtt: float | None) -> tuple[LatencyRow, ...]:
    return tuple(LatencyRow(HostId(t), v, 0, True) for t, v in sorted(rtt.items()))


GATEWAYS = {h(i): Report(NOW, ()) for i in (3, 4, 5)}


def test_a_host_that_reports_a_peer_down_is_relayed_through_the_lowest_combined_rtt() -> None:
    reports = {**GATEWAYS,
               h(1): Report(NOW, (LatencyRow(h(2), None, 100, False),
                                  *rows(host_3=10.0, host_4=30.0, host_5=5.0))),
               h(2): Report(NOW, rows(host_3=10.0, host_4=1.0, host_5=30.0))}
    d = decide(five(), reports, NOW)
    assert dict(d.pairs) == {(h(1), h(2)): h(3)}  # 20 ms against 31 and 35
    assert [(c.a, c.b, c.from_via, c.to_via, c.reason) for c in d.changes] == [
        (h(1), h(2), None, h(3), "unreachable")]


def test_an_unknown_rtt_counts_as_worse_than_any_known_one_and_a_down_relay_is_never_used() -> None:
    reports = {**GATEWAYS,
               h(1): Report(NOW, (LatencyRow(h(2), None, 100, False), *rows(host_3=90.0, host_4=1.0),
                                  LatencyRow(h(5), None, 100, False))),
               h(2): Report(NOW, rows(host_3=90.0))}
    d = decide(five(), reports, NOW)
    assert d.pairs[(h(1), h(2))] == h(3)  # 90 + 90 known, against 1 + unknown
    assert d.pairs[(h(1), h(5))] == h(4), "host_1 reaches a gateway it has no direct path to through another"


def test_a_relayed_pair_stays_on_its_relay_until_it_is_unusable_then_moves() -> None:
    reports = {**GATEWAYS, h(1): Report(NOW, rows(host_3=50.0, host_4=1.0)),
               h(2): Report(NOW, rows(host_4=1.0))}
    assert decide(five(via="host_3"), reports, NOW).changes == ()  # no move for a lower RTT
    dead = {**reports, h(1): Report(NOW, (LatencyRow(h(3), None, 100, False), *rows(host_4=1.0)))}
    d = decide(five(via="host_3"), dead, NOW)
    assert d.pairs[(h(1), h(2))] == h(4)
    assert [c.reason for c in d.changes if (c.a, c.b) == (h(1), h(2))] == ["via_unusable"]


def test_a_pair_goes_direct_only_when_both_ends_report_the_direct_path() -> None:
    one = {**GATEWAYS, h(1): Report(NOW, (), frozenset({h(2)})), h(2): Report(NOW, ())}
    assert decide(five(via="host_3"), one, NOW).changes == ()
    both = {**one, h(2): Report(NOW, (), frozenset({h(1)}))}
    d = decide(five(via="host_3"), both, NOW)
    assert dict(d.pairs) == {} and [c.reason for c in d.changes] == ["direct"]
    stale = {**both, h(2): Report(NOW - 500, (), frozenset({h(1)}))}
    assert decide(five(via="host_3"), stale, NOW).changes == (), "a stale report says nothing"


def test_a_pair_is_relayed_only_when_both_ends_report_freshly() -> None:
    """A host that has not reported (its agent off or starting) or whose reports stopped is off,
    not unreachable: its peers' rows saying it is down relay nothing."""
    says_down = {**GATEWAYS, h(1): Report(NOW, (LatencyRow(h(2), None, 100, False), *rows(host_3=1.0)))}
    assert decide(five(), says_down, NOW).pairs == {}, "host_2 never reported"
    stale = {**says_down, h(2): Report(NOW - 500, rows(host_3=1.0))}
    assert decide(five(), stale, NOW).pairs == {}, "host_2's reports stopped"
    both = {**says_down, h(2): Report(NOW, rows(host_3=1.0))}
    assert dict(decide(five(), both, NOW).pairs) == {(h(1), h(2)): h(3)}
