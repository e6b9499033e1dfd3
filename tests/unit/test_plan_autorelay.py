"""Pairs relayed automatically in the network plan (chalicelib.domain.plan), as properties over
the generated networks of test_plan_relays (gateways, internet use, clients, manual relays) and
test_plan_ha (shared ranges, placements, gateways a host found dead), plus pair changes, and as
examples.

Over every network :func:`plan.check` accepts, after every change:

(a) no two peers of a host share an allowed IP; every host reaches every member, its egress
    ranges and the clients it serves through exactly one peer: for the two ends of a holding
    pair, the pair's relay (test_plan_relays' invariants, whose ``via`` knows pairs);
(b) the relay of a pair forwards the network's ranges and its ends' egress ranges;
(c) the agent's incremental path equals the full device, from every seat (an end, the relay,
    a bystander), also while the host's probes move a shared range;
(d) :func:`plan.check` refuses a pair naming a non-member, a via that is no auto-relay gateway,
    an end as its own via, or recorded on its larger end, naming the rule.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.converge import Outcome, Tracker
from chalicelib.domain import plan, protocol
from chalicelib.domain.device import merge_views
from chalicelib.domain.errors import ConflictError, InvalidInputError
from chalicelib.domain.ids import HostId
from chalicelib.domain.models import Gateway, MemberRole
from chalicelib.domain.plan import NetworkRecords, check
from tests.unit import test_plan_gateways as g
from tests.unit import test_plan_ha as ha
from tests.unit import test_plan_relays as relays
from tests.unit.test_plan_gateways import Step


def pair_delta(snap: protocol.Snapshot, a: int, b: int, via: int) -> protocol.Delta | None:
    """The pair host_a, host_b relayed through host_via, recorded on the smaller end as the
    service writes it; the same pair again ends it."""
    lo, hi = sorted((HostId(f"host_{a}"), HostId(f"host_{b}")))
    m = next((x for x in snap.members if x.host_id == lo), None)
    if m is None or lo == hi:
        return None
    pairs = dict(m.role.pair_relays)
    if pairs.get(hi) == f"host_{via}":
        del pairs[hi]
    else:
        pairs[hi] = HostId(f"host_{via}")
    role = replace(m.role, pair_relays=tuple(sorted(pairs.items())))
    return protocol.Delta(snap.network.id, snap.network.seq + 1, upsert=(replace(m, role=role),))


# --- over test_plan_relays' networks --------------------------------------------------------------

# op "pair": the pair host_n and another host (a) relayed through the first host of an order (c: mostly
# the gateways of relays.start first) that is neither end; again: ended
def pair_of(n: int, a: int, order: tuple[int, ...]) -> tuple[int, int, int]:
    other = 1 + (n + a % 4) % 5
    return n, other, next(v for v in order if v not in (n, other))

pair_steps = st.builds(Step, nid=st.sampled_from(g.NETS), op=st.just("pair"),
                       n=st.sampled_from(list(g.HOSTS)), a=st.integers(0, 7), b=st.integers(0, 31),
                       c=st.integers(0, 7))
scripts = st.lists(st.one_of(g.steps, relays.relay_steps, pair_steps, pair_steps, pair_steps),
                   min_size=1, max_size=30)


def accepted(tracker: Tracker, step: Step) -> protocol.Delta | None:
    if step.op != "pair":
        return relays.accepted(tracker, step)
    order = (2, 3, 1, 4, 5) if step.c < 6 else (1, 4, 5, 2, 3)
    return relays.checked(tracker, step, lambda snap, s: pair_delta(snap, *pair_of(s.n, s.a, order)))


def assert_pair_invariants(records: NetworkRecords) -> None:
    relays.assert_relay_invariants(records)
    p = plan.network_plan(records)
    for (a, b), via in records.pair_relays.items():
        assert b not in {x.host_id for x in p[a].peers} and a not in {x.host_id for x in p[b].peers}
        behind = {r for t in (a, b) if (tg := records.gateway(t)) is not None for r in tg.egress}
        assert {records.network.ipv4_cidr, records.network.ipv6_cidr} | behind <= set(p[via].forwards), \
            f"(b) {via} relays {a}, {b}"


@settings(max_examples=150, deadline=None)
@given(scripts)
def test_every_accepted_network_with_pair_relays_keeps_its_invariants_at_every_host(
        script: list[Step]) -> None:
    for t in g.run(script, relays.start(), accepted, initial=True):
        g.assert_everywhere(t, assert_pair_invariants)


@settings(max_examples=200, deadline=None)
@given(scripts, st.sampled_from(["host_1", "host_2", "host_3"]))
def test_the_agents_incremental_path_equals_the_full_device_with_pair_relays(script: list[Step],
                                                                            seat: str) -> None:
    t = Tracker(seat, relays.start())
    applied = g.Applied(t)
    for step in script:
        if step.op == "remove" and f"host_{step.n}" == seat:
            continue  # the seat leaving is a resync, not a delta
        delta = accepted(t, step)
        if delta is None:
            continue
        assert t.on_delta(delta) is Outcome.APPLIED
        applied.check(step)
        assert_index_kept(t)


def assert_index_kept(t: Tracker) -> None:
    """The tracker's device (its records keep an index of the members that record pairs) is the
    one records made afresh from its snapshots give."""
    fresh = [NetworkRecords.of(s.network, s.members, s.clients, down=t.down) for s in t.snapshots]
    assert t.device(51820) == merge_views([plan.network_plan(r)[t.host_id] for r in fresh], 51820)


# --- over test_plan_ha's networks (shared ranges, probes' verdicts) ------------------------------

# op "pair": as above, the relay mostly one of ha.start's gateways host_4 and host_2 (b > 3: host_3, which
# is relayed, so the pair is ignored, then host_1 and host_5, which are none)
ha_steps = st.one_of(ha.steps, st.builds(ha.Step, op=st.just("pair"), n=st.sampled_from(list(ha.HOSTS)),
                                         a=st.integers(0, 7), b=st.sampled_from(list(ha.HOSTS))))


@settings(max_examples=200, deadline=None)
@given(st.lists(ha_steps, min_size=1, max_size=30), st.sampled_from(["host_1", "host_2", "host_4"]))
def test_the_incremental_path_equals_the_full_device_with_pair_relays_and_moving_ranges(
        script: list[ha.Step], seat: str) -> None:
    t = Tracker(seat, [ha.start()])
    applied = g.Applied(t)
    for step in script:
        if step.op == "down":
            t.set_down(t.down ^ {HostId(f"host_{step.b}")})
            applied.check(step)
            assert_index_kept(t)
            continue
        snap = t.snapshots[0]
        if step.op == "remove" and f"host_{step.n}" == seat:
            continue
        order = (4, 2, 3, 1, 5) if step.b <= 3 else (3, 1, 5, 4, 2)
        delta = (pair_delta(snap, *pair_of(step.n, step.a, order)) if step.op == "pair"
                 else ha.delta_of(snap, step))
        if delta is None:
            continue
        try:
            check(ha.records_after(snap, delta))
        except (ConflictError, InvalidInputError):
            continue
        assert t.on_delta(delta) is Outcome.APPLIED
        applied.check(step)
        assert_index_kept(t)


# --- examples -------------------------------------------------------------------------------------

EGRESS = ("10.9.0.0/16",)
RELAY = Gateway(egress=("10.2.0.0/16",))


def four(pair: tuple[tuple[HostId, HostId], ...] = ((HostId("host_3"), HostId("host_2")),),
         relay: Gateway = RELAY) -> NetworkRecords:
    """host_1 and host_3 (an egress gateway) relayed through host_2 (an auto-relay gateway);
    host_4 a bystander."""
    return NetworkRecords.of(g.network("net_a"), [
        g.member("net_a", 1, role=MemberRole(pair_relays=pair)),
        g.member("net_a", 2, role=MemberRole(gateway=relay)),
        g.member("net_a", 3, role=MemberRole(gateway=Gateway(egress=EGRESS))),
        g.member("net_a", 4)])


def entries(records: NetworkRecords, hid: str) -> dict[str, tuple[str, ...]]:
    return {x.host_id: x.allowed_ips for x in plan.network_plan(records)[HostId(hid)].peers}


def test_a_relayed_pair_reaches_each_other_through_the_relay_and_everyone_else_directly() -> None:
    records = four()
    assert records.pair_relays == {("host_1", "host_3"): "host_2"}
    assert entries(records, "host_1") == {
        "host_2": ("100.64.0.2/32", "fd00:1::2/128", "10.2.0.0/16",
                   "100.64.0.3/32", "fd00:1::3/128", *EGRESS),
        "host_4": ("100.64.0.4/32", "fd00:1::4/128")}
    assert entries(records, "host_3") == {
        "host_2": ("100.64.0.2/32", "fd00:1::2/128", "10.2.0.0/16", "100.64.0.1/32", "fd00:1::1/128"),
        "host_4": ("100.64.0.4/32", "fd00:1::4/128")}
    assert entries(records, "host_2")["host_1"] == ("100.64.0.1/32", "fd00:1::1/128")
    assert entries(records, "host_2")["host_3"] == ("100.64.0.3/32", "fd00:1::3/128", *EGRESS)
    assert set(plan.network_plan(records)["host_2"].forwards) >= {"100.64.0.0/16", "fd00:1::/64", *EGRESS}
    assert entries(records, "host_4") == entries(four(pair=()), "host_4")


@pytest.mark.parametrize(("relay", "why"), [
    (Gateway(egress=("10.2.0.0/16",), auto_relay=False), "the via is no auto-relay"),
    (None, "the via is no gateway"),
])
def test_a_pair_the_via_cannot_relay_is_ignored_and_check_refuses_it(relay: Gateway | None, why: str) -> None:
    records = four(relay=relay) if relay is not None else NetworkRecords.of(
        g.network("net_a"), [*(m for h, m in four().members.items() if h != "host_2"), g.member("net_a", 2)])
    assert records.pair_relays == {}, why
    assert "host_3" in entries(records, "host_1"), "the pair goes direct"
    with pytest.raises(ConflictError) as e:
        check(records)
    assert e.value.code == "not_an_auto_relay"


def test_a_pair_with_a_relayed_end_is_ignored_the_manual_relay_wins() -> None:
    records = four()
    m3 = replace(records.members[HostId("host_3")],
                 role=MemberRole(gateway=Gateway(egress=EGRESS), relayed_by=HostId("host_4")))
    records = NetworkRecords(records.network, {**records.members, m3.host_id: m3})
    assert records.pair_relays == {}
    assert "100.64.0.3/32" in entries(records, "host_1")["host_4"]


@pytest.mark.parametrize(("owner", "pair", "code", "words"), [
    (1, (("host_3", "host_1"),), "pair_relay_itself",
     "the pair host_1, host_3 cannot be relayed through host_1"),
    (1, (("host_1", "host_2"),), "pair_relay_itself", "a pair is two members"),
    (1, (("host_9", "host_2"),), "pair_relay_not_a_member", "host_9 is not a member of network net_a"),
    (1, (("host_3", "host_9"),), "pair_relay_not_a_member", "host_9 is not a member of network net_a"),
    (3, (("host_1", "host_2"),), "pair_relay_owner",
     "recorded on its member with the smaller host id (host_1)"),
    (1, (("host_2", "host_4"),), "not_an_auto_relay", "host_4 cannot relay the pair host_1, host_2"),
])
def test_check_refuses_what_pair_relays_cannot_do_naming_the_rule(
        owner: int, pair: tuple[tuple[str, str], ...], code: str, words: str) -> None:
    base = four(pair=())
    m = base.members[HostId(f"host_{owner}")]
    m = replace(m, role=replace(m.role, pair_relays=tuple((HostId(p), HostId(v)) for p, v in pair)))
    with pytest.raises(ConflictError, match=re.escape(words)) as e:
        check(NetworkRecords(base.network, {**base.members, m.host_id: m}))
    assert e.value.code == code


def test_dependents_of_a_pair_record_are_both_ends_and_the_relay() -> None:
    before, after = four(pair=()), four()
    touched = plan.dependents(before, ["host_1"]) | plan.dependents(after, ["host_1"])
    assert {"host_1", "host_2"} <= touched
    # the relay losing its role ends the pair: the ends' entries come back everywhere
    gone = four(relay=Gateway(egress=("10.2.0.0/16",), auto_relay=False))
    assert {"host_1", "host_3"} <= plan.dependents(after, ["host_2"]) | plan.dependents(gone, ["host_2"])


def test_an_end_of_a_relayed_pair_probes_its_relay_as_a_gateway_it_depends_on() -> None:
    records = four(relay=Gateway())
    t = Tracker("host_1", [protocol.Snapshot(records.network, tuple(records.members.values()))])
    assert dict((m.host_id, fast) for m, fast in t.gateways()) == {"host_2": True, "host_3": True}
    t = Tracker("host_4", [protocol.Snapshot(records.network, tuple(records.members.values()))])
    assert dict((m.host_id, fast) for m, fast in t.gateways())[HostId("host_2")] is False
