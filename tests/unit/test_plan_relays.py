"""Relays in the network plan (chalicelib.domain.plan), as properties over generated networks
that also have gateways, internet use and clients (the scripts of test_plan_gateways, plus
relay changes), and as examples.

Over every network :func:`plan.check` accepts, after every change:

(a) no two peers of one host share an allowed IP, in a network and across the host's networks;
(b) every host reaches every other member, its egress ranges and the clients it serves through
    exactly one peer (the longest prefix match): a relayed host through its relay, and a relayed
    host reaches everything through its relay, its only peer;
(c) a relay forwards the network's ranges and the egress ranges of the hosts it relays;
(d) the agent's incremental path (the peers a delta touched; the whole device when the tracker
    says so) equals the full device;
(e) :func:`plan.check` refuses chains, self-relays, relays that are no member, relayed
    remote-access or internet gateways and a full tunnel past the relay, naming the rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.converge import Outcome, Tracker
from chalicelib.domain import plan, protocol
from chalicelib.domain.errors import ConflictError, InvalidInputError
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.domain.models import Gateway, MemberRole
from chalicelib.domain.plan import DEFAULT_ROUTES, NetworkRecords, check
from tests.unit import test_plan_gateways as g
from tests.unit.test_plan_gateways import Step

# op "relay": host n is relayed by host a % 5 (0: by none); "relays": host a relays exactly the
# hosts of bit mask b (bit i: host i + 1), one delta for all of them, as PUT …/relays writes it.
relay_steps = st.builds(Step, nid=st.sampled_from(g.NETS), op=st.sampled_from(["relay", "relays"]),
                        n=st.sampled_from(list(g.HOSTS)), a=st.integers(0, 7), b=st.integers(0, 31),
                        c=st.integers(0, 7))
scripts = st.lists(st.one_of(g.steps, relay_steps, relay_steps), min_size=1, max_size=30)


def start() -> list[protocol.Snapshot]:
    """test_plan_gateways' start, with a relayed host in each network: in net_a host_4 (full
    tunnel) through its internet gateway host_2; in net_b host_1 itself, through host_3."""
    out = []
    for snap in g.start():
        relayed = (4, 2) if snap.network.id == "net_a" else (1, 3)
        members = tuple(replace(m, role=replace(m.role, relayed_by=HostId(f"host_{relayed[1]}")))
                        if m.host_id == f"host_{relayed[0]}" else m for m in snap.members)
        out.append(replace(snap, members=members))
    return out


def delta_of(snap: protocol.Snapshot, step: Step) -> protocol.Delta | None:
    nid, seq = snap.network.id, snap.network.seq + 1
    members = {m.host_id: m for m in snap.members}
    if step.op == "relay":
        me = members.get(HostId(f"host_{step.n}"))
        if me is None:
            return None
        relay = HostId(f"host_{step.a % 5}") if step.a % 5 else None
        return protocol.Delta(nid, seq, upsert=(replace(me, role=replace(me.role, relayed_by=relay)),))
    relay = HostId(f"host_{1 + step.a % 5}")
    want = {HostId(f"host_{i + 1}") for i in range(5) if step.b >> i & 1}
    upsert = []
    for hid, m in sorted(members.items()):
        if hid in want and m.role.relayed_by != relay:
            upsert.append(replace(m, role=replace(m.role, relayed_by=relay)))
        elif hid not in want and m.role.relayed_by == relay:
            upsert.append(replace(m, role=replace(m.role, relayed_by=None)))
    return protocol.Delta(nid, seq, upsert=tuple(upsert)) if upsert else None


def accepted(tracker: Tracker, step: Step) -> protocol.Delta | None:
    if step.op not in ("relay", "relays"):
        return g.accepted(tracker, step)
    return checked(tracker, step, delta_of)


def checked(tracker: Tracker, step: Step,
            make: Callable[[protocol.Snapshot, Step], protocol.Delta | None]) -> protocol.Delta | None:
    """The delta ``make`` makes of ``step`` on the tracker's snapshot of its network, when
    :func:`plan.check` accepts the network after it (else None)."""
    snap = next((s for s in tracker.snapshots if s.network.id == step.nid), None)
    delta = None if snap is None else make(snap, step)
    if snap is None or delta is None:
        return None
    try:
        check(g.after(snap, delta))
    except (ConflictError, InvalidInputError):
        return None
    return delta


def run(script: Iterable[Step]) -> Iterable[Tracker]:
    return g.run(script, start(), accepted, initial=True)


def via(records: NetworkRecords, viewer: HostId, owner: HostId) -> HostId:
    """The peer ``viewer`` must send what belongs to member ``owner`` to (through the automatic
    relay of the pair when ``viewer`` and that peer are a relayed pair: test_plan_autorelay)."""
    mine = records.relay_of(viewer)
    if mine is not None:
        return mine
    theirs = records.relay_of(owner)
    hop = theirs if theirs is not None and theirs != viewer else owner
    return records.paired(viewer).get(hop, hop)


def assert_relay_invariants(records: NetworkRecords) -> None:
    p = plan.network_plan(records)
    for hid in p:
        view = p[hid]
        claimed = [str(n) for peer in view.peers for n in g.nets(peer.allowed_ips)]
        assert len(claimed) == len(set(claimed)), f"{hid}: two peers share an allowed IP"
        relay = records.relay_of(hid)
        if relay is not None:
            assert [x.host_id for x in view.peers] == [relay], f"relayed {hid} peers with its relay only"
        for other, m in records.members.items():
            if other == hid or m.public_key == records.members[hid].public_key:
                continue
            want = {via(records, hid, other)}
            for addr in (m.ipv4, m.ipv6, *(g.inside(r) for r in (m.role.gateway.egress if m.role.gateway
                                                                  else ()))):
                got = g.lookup(view, addr)
                assert got == want, f"{hid} sends {addr} of {other} to {got}"
        for c in records.clients.values():
            if records.served(c) and c.gateway != hid:
                want = {via(records, hid, c.gateway)}
                for addr in (c.ipv4, c.ipv6, *(g.inside(x) for x in c.extra_addresses)):
                    assert g.lookup(view, addr) == want, f"{hid} sends {addr} of {c.id} elsewhere"
        relayed = records.relayed(hid)
        if relayed:
            behind = {r for t in relayed for r in (records.members[t].role.gateway.egress
                                                   if records.members[t].role.gateway else ())}
            assert {records.network.ipv4_cidr, records.network.ipv6_cidr} | behind <= set(view.forwards)
        defaults = [x.host_id for x in view.peers if set(DEFAULT_ROUTES) <= set(x.allowed_ips)]
        assert defaults == ([records.members[hid].role.internet_gateway] if view.full_tunnel else [])


@settings(max_examples=150, deadline=None)
@given(scripts)
def test_every_accepted_network_with_relays_keeps_its_invariants_at_every_host(script: list[Step]) -> None:
    for t in run(script):
        g.assert_everywhere(t, assert_relay_invariants)


@settings(max_examples=200, deadline=None)
@given(scripts)
def test_the_agents_incremental_path_equals_the_full_device_with_relays(script: list[Step]) -> None:
    t = Tracker("host_1", start())
    applied = g.Applied(t)
    for step in script:
        delta = accepted(t, step)
        if delta is None:
            continue
        assert t.on_delta(delta) is Outcome.APPLIED
        applied.check(step)


@pytest.mark.parametrize("viewer", ["host_1", "host_2", "host_3", "host_4"])
def test_the_incremental_path_follows_a_relay_from_every_seat(viewer: str) -> None:
    """The same property, from the relay's, the relayed host's and a bystander's seat: relay
    host_3 in net_a through host_4, move it, end it, remove the relay, bring it back."""
    t = Tracker(viewer, g.start())
    t.take_changes()
    peers = dict(t.device(51820).peers)
    snap = next(s for s in t.snapshots if s.network.id == "net_a")
    m3 = next(m for m in snap.members if m.host_id == "host_3")
    m3 = replace(m3, role=MemberRole())  # not a remote-access gateway any more: it may be relayed
    m4 = next(m for m in snap.members if m.host_id == "host_4")
    m4 = replace(m4, role=MemberRole(gateway=Gateway(egress=g.egress_pool("net_a", 4))))
    steps = [dict(upsert=(m3, m4), remove_clients=("cli_2",)),
             dict(upsert=(replace(m3, role=MemberRole(relayed_by=HostId("host_4"))),)),
             dict(upsert=(replace(m3, role=MemberRole(relayed_by=HostId("host_1"))),)),
             dict(upsert=(replace(m4, role=MemberRole(relayed_by=HostId("host_1"))),)),
             dict(remove=("host_1",) if viewer != "host_1" else ()),
             dict(upsert=(replace(m3, role=MemberRole(relayed_by=HostId("host_2"))),)),
             dict(remove=("host_2",) if viewer != "host_2" else ()),
             dict(upsert=(g.member("net_a", 2),)),
             dict(upsert=(replace(m3, role=MemberRole()),))]
    seq = snap.network.seq
    for kw in steps:
        seq += 1
        delta = protocol.Delta(NetworkId("net_a"), seq, **kw)  # type: ignore[arg-type]
        assert t.on_delta(delta) is Outcome.APPLIED
        changes = t.take_changes()
        full = t.device(51820)
        if changes.full:
            peers = dict(full.peers)
            continue
        peers = {k: p for k, p in {**peers, **{k: t.peer(k) for k in changes.keys}}.items() if p is not None}
        assert peers == dict(full.peers), f"at {viewer} after {kw}"


# --- examples ---------------------------------------------------------------------------------------


RELAYED_BY_2 = MemberRole(relayed_by=HostId("host_2"))


def three(relayed_role: MemberRole = RELAYED_BY_2, relay_role: MemberRole = g.NO_ROLE) -> NetworkRecords:
    return NetworkRecords.of(g.network("net_a"), [g.member("net_a", 1, role=relayed_role),
                                                   g.member("net_a", 2, role=relay_role),
                                                   g.member("net_a", 3)])


def test_a_relayed_host_peers_with_its_relay_only_and_the_others_reach_it_through_the_relay() -> None:
    p = plan.network_plan(three(MemberRole(relayed_by=HostId("host_2"),
                                           gateway=Gateway(egress=("10.9.0.0/16",)))))
    assert [(x.host_id, x.allowed_ips) for x in p["host_1"].peers] == [
        ("host_2", ("100.64.0.0/16", "fd00:1::/64"))]
    at_3 = {x.host_id: x.allowed_ips for x in p["host_3"].peers}
    assert at_3 == {"host_2": ("100.64.0.2/32", "fd00:1::2/128", "100.64.0.1/32", "fd00:1::1/128",
                               "10.9.0.0/16")}
    at_2 = {x.host_id: x.allowed_ips for x in p["host_2"].peers}
    assert at_2["host_1"] == ("100.64.0.1/32", "fd00:1::1/128", "10.9.0.0/16")
    assert p["host_2"].forwards == ("100.64.0.0/16", "fd00:1::/64", "10.9.0.0/16")
    assert p["host_3"].forwards == ()


def test_a_relayed_host_with_full_tunnel_through_its_relay_sends_everything_there() -> None:
    records = three(MemberRole(relayed_by=HostId("host_2"), internet_gateway=HostId("host_2"),
                               full_tunnel=True),
                    MemberRole(gateway=Gateway(internet=True)))
    view = plan.network_plan(records)["host_1"]
    assert view.full_tunnel
    assert [x.allowed_ips for x in view.peers] == [("100.64.0.0/16", "fd00:1::/64", *DEFAULT_ROUTES)]


def test_a_relay_that_left_leaves_its_hosts_reached_directly() -> None:
    records = three()
    gone = NetworkRecords(records.network, {h: m for h, m in records.members.items() if h != "host_2"})
    assert {x.host_id for x in plan.network_plan(gone)["host_3"].peers} == {"host_1"}
    assert plan.dependents(gone, ["host_2"]) >= {"host_1", "host_2"}


@pytest.mark.parametrize(("relayed", "relay", "code", "words"), [
    (MemberRole(relayed_by=HostId("host_1")), MemberRole(), "relay_itself",
     "host host_1 cannot relay itself"),
    (MemberRole(relayed_by=HostId("host_9")), MemberRole(), "relay_not_a_member",
     "relay host_9 of host host_1 is not a member of network net_a"),
    (MemberRole(relayed_by=HostId("host_2")), MemberRole(relayed_by=HostId("host_3")), "relay_chain",
     "host host_2 cannot relay host_1: it is relayed itself (by host_3); no relay chains"),
    (MemberRole(relayed_by=HostId("host_2"), gateway=Gateway(remote_access=True)), MemberRole(),
     "relayed_gateway", "host host_1 is a gateway for remote-access clients of network net_a"),
    (MemberRole(relayed_by=HostId("host_2"), gateway=Gateway(internet=True)), MemberRole(),
     "relayed_gateway", "host host_1 is a gateway for internet traffic"),
    (MemberRole(relayed_by=HostId("host_2"), internet_gateway=HostId("host_3"), full_tunnel=True),
     MemberRole(), "relayed_full_tunnel", "host host_1 is relayed by host_2 but sends all its traffic"),
])
def test_check_refuses_what_relays_cannot_do_naming_the_rule(relayed: MemberRole, relay: MemberRole,
                                                             code: str, words: str) -> None:
    records = three(relayed, relay)
    if code == "relayed_full_tunnel":
        m3 = replace(records.members[HostId("host_3")], role=MemberRole(gateway=Gateway(internet=True)))
        records = NetworkRecords(records.network, {**records.members, m3.host_id: m3})
    with pytest.raises(ConflictError, match=re.escape(words)) as e:
        check(records)
    assert e.value.code == code


def test_check_accepts_a_relayed_egress_gateway_with_a_split_tunnel_elsewhere() -> None:
    relayed = MemberRole(relayed_by=HostId("host_2"), gateway=Gateway(egress=("10.9.0.0/16",)),
                         internet_gateway=HostId("host_3"))
    check(NetworkRecords.of(g.network("net_a"), [
        g.member("net_a", 1, role=relayed), g.member("net_a", 2),
        g.member("net_a", 3, role=MemberRole(gateway=Gateway(internet=True)))]))
