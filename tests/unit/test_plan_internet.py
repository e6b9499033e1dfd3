"""Internet access as an HA group in the network plan (``internet_gateway: auto``).

Over generated networks (internet gateways coming and going, hosts using ``auto``, naming one
gateway or none, pinned or placed, relayed, gateways a host found dead), as the service would
accept them (:func:`plan.check`), after every change:

(a) at every host with a full tunnel, exactly one peer carries ``0.0.0.0/0`` and ``::/0`` (a
    relayed host: its relay): the gateway it names or its pin; else the first candidate of its
    ranking it has not found dead (its placement first); never a dead one while a live one is
    left; at every other host, no peer carries them;
(b) no two peers of a host share an allowed IP, also while internet access moves;
(c) the agent's incremental path (a delta, or its probes' ``set_down``) equals the full device;
    a move touches the internet gateways' entries only and never the full-tunnel routing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.converge import Outcome, Tracker
from chalicelib.domain import plan, protocol
from chalicelib.domain.errors import ConflictError, InvalidInputError
from chalicelib.domain.ids import HostId
from chalicelib.domain.models import AUTO, Gateway, Member, MemberRole
from chalicelib.domain.plan import INTERNET, NetworkRecords, check
from chalicelib.service.failover import Failover

from .test_plan_gateways import Applied, lookup, member, network
from .test_plan_ha import follow

NID = "net_a"
HOSTS = range(1, 6)  # host_1 is the agent under test in (c)
V4, V6 = plan.DEFAULT_ROUTES


def h(n: int) -> HostId:
    return HostId(f"host_{n}")


def internet_gateway(n: int) -> Member:
    return member(NID, n, role=MemberRole(gateway=Gateway(internet=True)))


def user(n: int, uses: str | None = AUTO, **role: object) -> Member:
    return member(NID, n, role=MemberRole(internet_gateway=None if uses is None else HostId(uses),
                                          full_tunnel=uses is not None, **role))  # type: ignore[arg-type]


def start() -> protocol.Snapshot:
    """host_2, host_3 and host_4 are internet gateways; host_1 uses any of them (auto), host_5
    names host_2."""
    members = (user(1), internet_gateway(2), internet_gateway(3), internet_gateway(4), user(5, "host_2"))
    return protocol.Snapshot(network(NID), members)


@dataclass(frozen=True)
class Step:
    op: str  # inet (toggle n's internet gateway role), use (a: 0 none, 1 auto, 2 names b), place / pin
    # (b; again: taken back), down (b), relay (n relayed by b; again: not relayed)
    n: int
    a: int = 0
    b: int = 0


OPS = ["inet", "use", "use", "place", "place", "pin", "down", "down", "down", "relay"]
steps = st.builds(Step, op=st.sampled_from(OPS), n=st.sampled_from(list(HOSTS)), a=st.integers(0, 2),
                  b=st.sampled_from(list(HOSTS)))


def delta_of(snap: protocol.Snapshot, step: Step) -> protocol.Delta:
    me = {m.host_id: m for m in snap.members}[h(step.n)]
    role = me.role
    if step.op == "inet":
        role = replace(role, gateway=None if role.gateway is not None else Gateway(internet=True))
    elif step.op == "use":
        uses = (None, HostId(AUTO), h(step.b))[step.a]
        role = replace(role, internet_gateway=uses, full_tunnel=uses is not None)
    elif step.op == "relay":
        role = replace(role, relayed_by=None if role.relayed_by == h(step.b) else h(step.b))
    else:
        field = "placed" if step.op == "place" else "pinned"
        pairs = dict(getattr(role, field))
        if pairs.get(INTERNET) == h(step.b):
            del pairs[INTERNET]
        else:
            pairs[INTERNET] = h(step.b)
        role = replace(role, **{field: tuple(sorted(pairs.items()))})
    return protocol.Delta(NID, snap.network.seq + 1, upsert=(replace(me, role=role),))


def run(script: list[Step], t: Tracker | None = None) -> Iterator[tuple[Tracker, Step]]:
    """host_1's tracker after each accepted step: a change :func:`plan.check` accepts, as a delta,
    or a ``down`` step (host_1's probes' verdict on a gateway toggles)."""
    t = t or Tracker("host_1", [start()])
    for step in script:
        if step.op == "down":
            t.set_down(t.down ^ {h(step.b)})
            yield t, step
            continue
        snap = t.snapshots[0]
        delta = delta_of(snap, step)
        members = {m.host_id: m for m in snap.members} | {m.host_id: m for m in delta.upsert}
        try:
            check(NetworkRecords(snap.network, members))
        except (ConflictError, InvalidInputError):
            continue
        assert t.on_delta(delta) is Outcome.APPLIED
        yield t, step


def assert_internet_invariants(records: NetworkRecords) -> None:
    p = plan.network_plan(records)
    internet = [g for g in sorted(records.members) if (gw := records.gateway(g)) is not None and gw.internet]
    for hid in p:
        view, role = p[hid], records.members[hid].role
        claimed = [a for x in view.peers for a in x.allowed_ips]
        assert len(claimed) == len(set(claimed)), f"(b) {hid}: {sorted(claimed)}"
        carriers = [x.host_id for x in view.peers if V4 in x.allowed_ips]
        assert carriers == [x.host_id for x in view.peers if V6 in x.allowed_ips], f"(a) {hid}: v4, v6 apart"
        if not role.full_tunnel:
            assert carriers == [] and not view.full_tunnel, f"(a) {hid} has no full tunnel: {carriers}"
            continue
        assert view.full_tunnel and len(carriers) == 1, f"(a) {hid}: 0.0.0.0/0 → {carriers}"
        assert lookup(view, "198.19.1.1") == {carriers[0]}, f"(a) {hid}: the internet is not reached once"
        relay = records.relay_of(hid)
        if relay is not None:
            assert carriers == [relay], f"(a) relayed {hid} sends the internet to {carriers}, not its relay"
            continue
        if role.internet_gateway != AUTO:
            assert carriers == [role.internet_gateway], f"(a) {hid} names {role.internet_gateway}: {carriers}"
            continue
        mine = [g for g in internet if g != hid]
        assert carriers[0] in mine, f"(a) {hid}: {carriers} is no internet gateway"
        live = [g for g in mine if g not in records.down]
        pin = role.pin(INTERNET)
        if pin in mine:
            assert carriers == [pin], f"(a) {hid} pinned to {pin}, sends to {carriers}"
        elif live:
            assert carriers[0] in live, f"(a) {hid} sends the internet to dead {carriers} ({live} live)"
            placed = role.placement(INTERNET)
            if placed in live:
                assert carriers == [placed], f"(a) {hid} placed on {placed}: {carriers}"


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, min_size=1, max_size=30))
def test_every_full_tunnel_host_sends_the_internet_to_one_live_ranked_gateway_and_the_agent_follows(
        script: list[Step]) -> None:
    """(a) and (b) in the control plane's view and in host_1's (its probes' down set); (c) at host_1."""
    t = Tracker("host_1", [start()])
    applied = Applied(t)
    for _, step in run(script, t):
        snap = t.snapshots[0]
        assert_internet_invariants(NetworkRecords.of(snap.network, snap.members))
        assert_internet_invariants(NetworkRecords.of(snap.network, snap.members, down=t.down))
        tunnel = applied.device.full_tunnel
        _, touched, before = follow(applied, step)  # (a probe's verdict never rebuilds the whole device)
        if step.op == "down":
            assert t.device(51820).full_tunnel == tunnel, "the full-tunnel routing does not change on a move"
            internet = {m.public_key for m in snap.members
                        if m.role.gateway is not None and m.role.gateway.internet}
            moved = {k for k, x in touched.items() if x != before.get(k)}
            assert moved <= internet, "(c) a move changed the entry of a peer that is no internet gateway"


def test_the_agent_moves_the_internet_to_its_next_candidate_in_one_peer_update_and_back() -> None:
    t = Tracker("host_1", [start()])
    applied = Applied(t)
    ranked = plan.candidates(t.records(NID), h(1), INTERNET)
    assert sorted(ranked) == ["host_2", "host_3", "host_4"]
    assert t.records(NID).internet_gateway(h(1)) == ranked[0]
    t.set_down({ranked[0]})
    full, touched = applied.check("down")
    assert not full
    carriers = {k for k, x in applied.peers.items() if V4 in x.allowed_ips}
    key = {m.host_id: m.public_key for m in t.snapshots[0].members}
    assert carriers == {key[ranked[1]]}
    assert set(touched) == {key[g] for g in ranked}  # the internet gateways' entries, nothing else
    assert {k for k, x in touched.items() if x != t.device(51820).peers.get(k)} == set()
    t.set_down(set())
    applied.check("up")
    assert {k for k, x in applied.peers.items() if V4 in x.allowed_ips} == {key[ranked[0]]}
    t.set_down(set(ranked))  # nowhere better to go: it stays on its first choice
    applied.check("all down")
    assert {k for k, x in applied.peers.items() if V4 in x.allowed_ips} == {key[ranked[0]]}


def test_the_agent_probes_its_internet_candidates_fast() -> None:
    t = Tracker("host_1", [start()])
    assert {m.host_id: fast for m, fast in t.gateways()} == {"host_2": True, "host_3": True, "host_4": True}
    snap = t.snapshots[0]
    split = replace(user(1, None), public_key=snap.members[0].public_key)
    assert t.on_delta(protocol.Delta(NID, snap.network.seq + 1, upsert=(split,))) is Outcome.APPLIED
    assert {m.host_id: fast for m, fast in t.gateways()} == dict.fromkeys(("host_2", "host_3", "host_4"),
                                                                           False)


def test_hosts_with_auto_spread_over_the_internet_gateways() -> None:
    gateways = [internet_gateway(n) for n in (1, 2, 3)]
    users = [replace(user(5), host_id=h(n), public_key=f"key{n}") for n in range(10, 310)]
    records = NetworkRecords.of(network(NID), [*gateways, *users])
    first = Counter(records.internet_gateway(u.host_id) for u in users)
    assert set(first) == {"host_1", "host_2", "host_3"}
    assert min(first.values()) >= 70, first


@pytest.mark.parametrize(("members", "code"), [
    ((user(1), member(NID, 2)), "no_internet_gateways"),
    ((user(1, gateway=Gateway(internet=True)), internet_gateway(2)), "internet_gateway_chain"),
    ((user(1, relayed_by=h(3)), internet_gateway(2), member(NID, 3)), "relayed_full_tunnel"),
])
def test_check_refuses_auto_where_it_cannot_work(members: tuple[Member, ...], code: str) -> None:
    with pytest.raises(ConflictError) as e:
        check(NetworkRecords.of(network(NID), members))
    assert e.value.code == code


def test_a_relayed_host_with_auto_sends_the_internet_to_its_relay_when_that_is_an_internet_gateway() -> None:
    records = NetworkRecords.of(network(NID), (user(1, relayed_by=h(3)), internet_gateway(2),
                                               internet_gateway(3)))
    check(records)
    assert plan.candidates(records, h(1), INTERNET) == (h(3),)
    view = plan.network_plan(records)["host_1"]
    assert [(x.host_id, V4 in x.allowed_ips) for x in view.peers] == [("host_3", True)]


def test_a_pair_of_an_auto_host_and_one_of_its_internet_gateways_is_not_relayed_automatically() -> None:
    relay = member(NID, 4, role=MemberRole(gateway=Gateway(egress=("10.9.0.0/16",))))
    a = user(1, pair_relays=((h(2), h(4)),))
    records = NetworkRecords.of(network(NID), (a, internet_gateway(2), internet_gateway(3), relay))
    assert not records.pair_relays  # whichever gateway is active there, every host agrees


def test_failover_places_full_tunnel_hosts_in_the_internet_group_and_holds_those_that_name_one() -> None:
    members = (internet_gateway(1), internet_gateway(2), user(3), user(4, "host_1"),
               replace(user(5), role=replace(user(5).role, full_tunnel=False)))
    records = NetworkRecords.of(network(NID), members)
    check(records)
    assert records.groups == {INTERNET: (h(1), h(2))}
    (group,), current, _ = Failover._groups(records, {})
    assert (group.id, group.candidates, group.users) == (INTERNET, (h(1), h(2)), (h(3), h(4)))
    assert group.pinned == {h(4): h(1)}
    down = Failover._groups(records, {h(3): frozenset({current[INTERNET][h(3)]})})[1]
    assert down[INTERNET][h(3)] != current[INTERNET][h(3)]  # where its agent went by itself
    one = NetworkRecords.of(network(NID), members[:1] + members[2:4])
    assert one.groups == {}  # one internet gateway: nothing to place
