"""HA gateways in the network plan: ranges several gateways serve (chalicelib.domain.plan).

Over generated networks (gateways sharing ranges, hosts pinned or placed, gateways a host
found dead), as the service would accept them (:func:`plan.check`), after every change:

(a) at every host, a shared range it does not serve itself is carried by exactly one peer (a
    relayed gateway's through its relay, everything of a relayed host through its relay):
    its pin when it has one; else the first candidate of its ranking it has not found dead
    (its placement first); never a dead one while a live one is left;
(b) no two peers of a host share an allowed IP, also while a range moves;
(c) a gateway that serves a shared range routes it to nobody, and no peer of it carries it;
(d) the agent's incremental path (a delta, or its probes' ``set_down``) equals the full device,
    and a move touches the entries of that range's gateways only: the tunnels to every other
    peer stay as they are;
(e) hosts without a placement spread over a range's gateways (rendezvous), in every process alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.converge import Outcome, Tracker
from chalicelib.domain import plan, protocol
from chalicelib.domain.device import PeerConfig, merge_views
from chalicelib.domain.errors import ConflictError, InvalidInputError
from chalicelib.domain.ids import HostId
from chalicelib.domain.models import Gateway, Member, MemberRole
from chalicelib.domain.plan import NetworkRecords, check

from .test_plan_gateways import Applied, lookup, member, network

NID = "net_a"
HOSTS = range(1, 6)  # host_1 is the agent under test in (d)
SHARED = ("10.200.0.0/16", "fd10:c8::/48", "10.201.0.0/16")  # ranges gateways may share


def served(mask: int) -> tuple[str, ...]:
    return tuple(r for i, r in enumerate(SHARED) if mask >> i & 1)


def with_gateway(n: int, mask: int, **role: object) -> Member:
    gw = Gateway(egress=served(mask)) if mask else None
    return member(NID, n, role=MemberRole(gateway=gw, **role))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Step:
    op: str  # serve (a: mask of SHARED), place / pin (a: range index, b: gateway), down (b), remove,
    # relay (n relayed by b; again: not relayed)
    n: int
    a: int = 0
    b: int = 0


OPS = ["serve", "serve", "place", "place", "pin", "down", "down", "remove", "relay"]
steps = st.builds(Step, op=st.sampled_from(OPS), n=st.sampled_from(list(HOSTS)), a=st.integers(0, 7),
                  b=st.sampled_from(list(HOSTS)))


def start() -> protocol.Snapshot:
    """host_2, host_3 and host_4 serve the first range, host_3 and host_4 the second too; host_1
    and host_5 use them; host_5 relays host_3."""
    members = (with_gateway(1, 0), with_gateway(2, 1), with_gateway(3, 3, relayed_by=HostId("host_5")),
               with_gateway(4, 7), with_gateway(5, 0))
    return protocol.Snapshot(network(NID), members)


def delta_of(snap: protocol.Snapshot, step: Step) -> protocol.Delta | None:
    members = {m.host_id: m for m in snap.members}
    me = members.get(HostId(f"host_{step.n}"))
    seq = snap.network.seq + 1
    if me is None:
        if step.op != "serve":
            return None
        return protocol.Delta(NID, seq, upsert=(with_gateway(step.n, step.a),))
    if step.op == "remove":
        return None if step.n == 1 else protocol.Delta(NID, seq, remove=(me.host_id,))
    if step.op == "serve":
        gw = Gateway(egress=served(step.a)) if step.a else None
        return protocol.Delta(NID, seq, upsert=(replace(me, role=replace(me.role, gateway=gw)),))
    if step.op == "relay":
        relay = None if me.role.relayed_by == f"host_{step.b}" else HostId(f"host_{step.b}")
        return protocol.Delta(NID, seq, upsert=(replace(me, role=replace(me.role, relayed_by=relay)),))
    prefix, target = SHARED[step.a % len(SHARED)], HostId(f"host_{step.b}")
    field = "placed" if step.op == "place" else "pinned"
    pairs = dict(getattr(me.role, field))
    if pairs.get(prefix) == target:
        del pairs[prefix]  # placing twice takes it back: scripts also unpin
    else:
        pairs[prefix] = target
    role = replace(me.role, **{field: tuple(sorted(pairs.items()))})
    return protocol.Delta(NID, seq, upsert=(replace(me, role=role),))


def records_after(snap: protocol.Snapshot, delta: protocol.Delta) -> NetworkRecords:
    members = {m.host_id: m for m in snap.members}
    for h in delta.remove:
        members.pop(HostId(h), None)
    members.update((m.host_id, m) for m in delta.upsert)
    return NetworkRecords(snap.network, members)


def run(script: list[Step], t: Tracker | None = None) -> Iterator[tuple[Tracker, Step]]:
    """host_1's tracker (``t``, or a new one) after each accepted step of ``script``: a change the
    service accepts (:func:`plan.check`) as a delta, or a ``down`` step, which toggles a gateway
    in host_1's probes' view."""
    t = t or Tracker("host_1", [start()])
    for step in script:
        if step.op == "down":
            t.set_down(t.down ^ {HostId(f"host_{step.b}")})
            yield t, step
            continue
        snap = t.snapshots[0]
        delta = delta_of(snap, step)
        if delta is None:
            continue
        try:
            check(records_after(snap, delta))
        except (ConflictError, InvalidInputError):
            continue
        assert t.on_delta(delta) is Outcome.APPLIED
        yield t, step


def follow(applied: Applied, step: object) -> tuple[bool, dict[str, PeerConfig | None],
                                                     dict[str, PeerConfig]]:
    """After ``step`` at the applied tracker's host (host_1): its device equals a fresh plan's, and
    what it applied equals it; (whether it rebuilt the whole device, the touched peers' configs, the
    peers before). A probe's verdict (``down``) never rebuilds the whole device."""
    t = applied.t
    snap = t.snapshots[0]
    fresh = NetworkRecords.of(snap.network, snap.members, down=t.down)  # nothing cached from before
    assert t.device(51820) == merge_views([plan.network_plan(fresh)["host_1"]], 51820), f"after {step}"
    before = dict(applied.peers)
    full, touched = applied.check(step)
    down = getattr(step, "op", None) == "down"
    assert not (full and down), "a probe's verdict never rebuilds the whole device"
    return full, touched, before


def assert_ha_invariants(records: NetworkRecords) -> None:
    p = plan.network_plan(records)
    for hid in p:
        view, role = p[hid], records.members[hid].role
        own = records.gateway(hid)
        claimed = [a for x in view.peers for a in x.allowed_ips]
        assert len(claimed) == len(set(claimed)), f"(b) {hid}: {sorted(claimed)}"
        mine = records.relay_of(hid)

        def via(g: HostId, hid: HostId = hid, mine: HostId | None = mine) -> HostId:
            """The peer ``hid`` reaches gateway ``g`` through: its own relay, g's relay, or g."""
            theirs = records.relay_of(g)
            return mine or (theirs if theirs is not None and theirs != hid else g)

        for prefix in SHARED:
            carriers = [x.host_id for x in view.peers if prefix in x.allowed_ips]
            servers = [g for g in sorted(records.members) if g != hid and prefix in
                       (records.gateway(g).egress if records.gateway(g) else ())]
            if own is not None and prefix in own.egress:
                assert carriers == [] and prefix not in view.routes, f"(c) {hid} serves {prefix}"
                continue
            if not servers:
                assert carriers == []
                continue
            assert len(carriers) == 1 and carriers[0] in {via(g) for g in servers}, \
                f"(a) {hid}: {prefix} → {carriers}"
            assert lookup(view, prefix.split("/")[0]) == {carriers[0]}
            if mine is not None:
                continue  # a relayed host sends everything to its relay, which chooses
            live = [g for g in servers if g not in records.down]
            pin = role.pin(prefix)
            if pin in servers:
                assert carriers == [via(pin)], f"(a) {hid} pinned {prefix} to {pin}, sends it to {carriers}"
            elif live:
                assert carriers[0] in {via(g) for g in live}, f"(a) {hid} sends {prefix} to dead {carriers}"
                placed = role.placement(prefix)
                if placed in live:
                    assert carriers == [via(placed)], f"(a) {hid} placed on {placed} for {prefix}: {carriers}"


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, min_size=1, max_size=30))
def test_every_host_sends_a_shared_range_to_exactly_one_live_ranked_gateway(script: list[Step]) -> None:
    for t, _ in run(script):
        snap = t.snapshots[0]
        assert_ha_invariants(NetworkRecords.of(snap.network, snap.members))  # the control plane's view
        assert_ha_invariants(NetworkRecords.of(snap.network, snap.members, down=t.down))  # host_1's


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, min_size=1, max_size=30))
def test_a_move_is_the_range_gateways_entries_only_and_the_incremental_path_equals_the_full_device(
        script: list[Step]) -> None:
    t = Tracker("host_1", [start()])
    applied = Applied(t)
    for _, step in run(script, t):
        snap = t.snapshots[0]
        full, touched, before = follow(applied, step)
        if step.op == "down":
            records = NetworkRecords.of(snap.network, snap.members)
            gateways = {m.host_id for m in snap.members if m.role.gateway is not None}
            carry = {m.public_key for m in snap.members
                     if m.host_id in gateways or any(records.relay_of(g) == m.host_id for g in gateways)}
            moved = {k for k, x in touched.items() if x != before.get(k)}
            assert moved <= carry, "(d) a move changed the entry of a peer that is no gateway nor its relay"


def test_hosts_without_a_placement_spread_over_a_ranges_gateways() -> None:
    gateways = [with_gateway(n, 1) for n in (1, 2, 3)]
    users = [replace(member(NID, 5), host_id=HostId(f"host_{n}"), public_key=f"key{n}")
             for n in range(10, 310)]  # only their ids matter here
    records = NetworkRecords.of(network(NID), [*gateways, *users])
    first = Counter(plan.active_gateway(records, u.host_id, SHARED[0]) for u in users)
    assert set(first) == {"host_1", "host_2", "host_3"}
    assert min(first.values()) >= 70, first  # 100 each on average; rendezvous hashing, not a coin per call
    again = NetworkRecords.of(network(NID), [*reversed(users), *gateways])
    assert all(plan.candidates(again, u.host_id, SHARED[0]) == plan.candidates(records, u.host_id, SHARED[0])
               for u in users), "the ranking depends on the records, not on their order"


def test_a_dead_gateways_hosts_move_to_their_next_candidate_and_back_when_it_recovers() -> None:
    records = NetworkRecords.of(network(NID), [with_gateway(2, 1), with_gateway(3, 1), with_gateway(4, 1),
                                               member(NID, 1)])
    ranked = plan.candidates(records, HostId("host_1"), SHARED[0])
    assert sorted(ranked) == ["host_2", "host_3", "host_4"]
    assert plan.active_gateway(records, HostId("host_1"), SHARED[0]) == ranked[0]
    dead = replace(records, down=frozenset({ranked[0]}))
    assert plan.active_gateway(dead, HostId("host_1"), SHARED[0]) == ranked[1]
    all_dead = replace(records, down=frozenset(ranked))
    assert plan.active_gateway(all_dead, HostId("host_1"), SHARED[0]) == ranked[0]  # nowhere better to go
