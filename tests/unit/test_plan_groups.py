"""HA gateway groups in the network plan (issue 11: chalicelib.domain.plan).

Over generated networks (a group of remote-access gateways in some priority order, its clients,
an active member recorded or not, members a host found dead), after every change the service
accepts (:func:`plan.check`):

(a) at every host, each served group client's addresses are carried by exactly one peer: the
    recorded active member unless the host found it dead or is it, else the first member by
    priority the host has not found dead; never the host itself, never a dead member while a
    live one is left;
(b) no two peers of a host share an allowed IP, and no host has a group client as a peer of its
    mesh interface (the members' group interface has them);
(c) the agent's incremental path (a delta, or its probes' ``set_down``) equals the full device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.converge import Outcome, Tracker
from chalicelib.domain import plan, protocol
from chalicelib.domain.errors import ConflictError, InvalidInputError
from chalicelib.domain.ids import ClientId, GroupId, HostId, NetworkId
from chalicelib.domain.models import Client, Gateway, GatewayGroup, Member, MemberRole
from chalicelib.domain.plan import NetworkRecords, check

from .test_plan_gateways import CLIENT_KEYS, Applied, member, network

NID = "net_a"
GID = GroupId("grp_edge")
HOSTS = range(1, 6)  # host_1 is the agent under test in (c); host_2..host_5 may be group members
GROUP_KEY = "G" * 43 + "="
REMOTE = MemberRole(gateway=Gateway(remote_access=True))


def gmember(n: int) -> Member:
    return member(NID, n, role=REMOTE if n > 1 else MemberRole())


def gclient(c: int, *, extras: bool = False, gateway: str = GID) -> Client:
    return Client(ClientId(f"cli_{c}"), NetworkId(NID), f"c{c}", CLIENT_KEYS[(NID, c, 0)], f"100.64.1.{c}",
                  f"fd00:1::1:{c}", HostId(gateway), extra_addresses=(f"192.168.{c}.0/24",) if extras else ())


def group(members: tuple[int, ...], active: int | None = None, epoch: int = 0, **kw: object) -> GatewayGroup:
    return GatewayGroup(GID, NetworkId(NID), "edge", tuple(HostId(f"host_{n}") for n in members),
                        "198.18.9.1:51900", public_key=GROUP_KEY, key_version=1,
                        active=None if active is None else HostId(f"host_{active}"), epoch=epoch,
                        **kw)  # type: ignore[arg-type]


def start() -> protocol.Snapshot:
    return protocol.Snapshot(network(NID), tuple(gmember(n) for n in HOSTS),
                             (gclient(1), gclient(2, extras=True)), (group((2, 3, 4), active=3, epoch=1),))


@dataclass(frozen=True)
class Step:
    op: str  # active (a), members (a: order seed), down (a), client (a: toggle), leave (a), join (a)
    a: int


steps = st.builds(Step, op=st.sampled_from(["active", "active", "members", "down", "down", "client",
                                            "leave", "join"]),
                  a=st.integers(0, 40))


def delta_of(snap: protocol.Snapshot, step: Step) -> protocol.Delta | None:
    seq = snap.network.seq + 1
    members = {m.host_id: m for m in snap.members}
    g = snap.groups[0]
    host = HostId(f"host_{2 + step.a % 4}")
    if step.op == "active":
        active = None if step.a % 5 == 0 else host
        return protocol.Delta(NID, seq, groups=(replace(g, active=active, epoch=g.epoch + 1),))
    if step.op == "members":
        pool = [HostId(f"host_{n}") for n in (2, 3, 4, 5)]
        order = tuple(pool[(step.a + i * (1 + step.a % 3)) % 4] for i in range(1 + step.a % 4))
        return protocol.Delta(NID, seq, groups=(replace(g, members=tuple(dict.fromkeys(order))),))
    if step.op == "client":
        cid = ClientId(f"cli_{1 + step.a % 4}")
        if any(c.id == cid for c in snap.clients):
            return protocol.Delta(NID, seq, remove_clients=(cid,))
        return protocol.Delta(NID, seq, clients=(gclient(1 + step.a % 4, extras=step.a % 2 == 0),))
    if step.op == "leave":
        return protocol.Delta(NID, seq, remove=(host,)) if host in members else None
    if step.op == "join":
        return None if host in members else protocol.Delta(NID, seq, upsert=(gmember(int(host[5:])),))
    return None


def records_after(snap: protocol.Snapshot, delta: protocol.Delta) -> NetworkRecords:
    members = {m.host_id: m for m in snap.members}
    for h in delta.remove:
        members.pop(HostId(h), None)
    members.update((m.host_id, m) for m in delta.upsert)
    clients = {c.id: c for c in snap.clients if c.id not in delta.remove_clients}
    clients.update((c.id, c) for c in delta.clients)
    groups = {g.id: g for g in snap.groups}
    groups.update((g.id, g) for g in delta.groups)
    return NetworkRecords(snap.network, members, clients, gateway_groups=groups)


def records_of(t: Tracker, down: bool = True) -> NetworkRecords:
    snap = t.snapshots[0]
    return NetworkRecords.of(snap.network, snap.members, snap.clients, snap.groups,
                             **({"down": t.down} if down else {}))


def assert_group_invariants(records: NetworkRecords) -> None:
    p = plan.network_plan(records)
    g = records.gateway_groups[GID]
    serving = [h for h in g.members if h in records.members]
    for hid in p:
        view = p[hid]
        claimed = [a for x in view.peers for a in x.allowed_ips]
        assert len(claimed) == len(set(claimed)), f"(b) {hid}: {sorted(claimed)}"
        assert not {x.host_id for x in view.peers} & set(records.clients), f"(b) {hid} peers with a client"
        order = [h for h in serving if h != hid]
        for c in records.clients.values():
            carriers = [x.host_id for x in view.peers if f"{c.ipv4}/32" in x.allowed_ips]
            if not order:
                assert carriers == [], f"(a) {hid}: nobody serves {c.id}, yet {carriers}"
                continue
            live = [h for h in order if h not in records.down]
            if g.active in live:
                want = g.active
            else:
                want = live[0] if live else (g.active if g.active in order else order[0])
            assert carriers == [want], f"(a) {hid}: {c.id} carried by {carriers}, expected {want} ({g})"
            entry = next(x for x in view.peers if x.host_id == want)
            assert all(a in entry.allowed_ips for a in c.allowed_ips)


def run(script: list[Step]) -> tuple[Tracker, Applied, list[Step]]:
    t = Tracker("host_1", [start()])
    return t, Applied(t), script


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, min_size=1, max_size=30))
def test_every_host_sends_a_groups_clients_to_one_live_member_and_the_incremental_path_agrees(
        script: list[Step]) -> None:
    t, applied, _ = run(script)
    for step in script:
        if step.op == "down":
            t.set_down(t.down ^ {HostId(f"host_{2 + step.a % 4}")})
        else:
            snap = t.snapshots[0]
            delta = delta_of(snap, step)
            if delta is None:
                continue
            try:
                check(records_after(snap, delta))
            except (ConflictError, InvalidInputError):
                continue
            assert t.on_delta(delta) is Outcome.APPLIED
        full, _ = applied.check(step)
        assert not (full and step.op == "down"), "a probe's verdict never rebuilds the whole device"
        assert_group_invariants(records_of(t, down=False))  # the control plane's view
        assert_group_invariants(records_of(t))  # host_1's, with what its probes found dead


def test_a_member_never_carries_its_own_groups_clients_and_a_standby_sends_them_to_the_active_one() -> None:
    snap = start()
    records = NetworkRecords.of(snap.network, snap.members, snap.clients, snap.groups)
    assert plan.group_carrier(records, HostId("host_1"), GID) == "host_3"
    assert plan.group_carrier(records, HostId("host_2"), GID) == "host_3"  # a standby member
    assert plan.group_carrier(records, HostId("host_3"), GID) == "host_2"  # the active one: next by priority
    dead = replace(records, down=frozenset({HostId("host_3")}))
    assert plan.group_carrier(dead, HostId("host_1"), GID) == "host_2"  # priority, not a ranking
    assert plan.group_carrier(replace(records, down=frozenset({HostId("host_3"), HostId("host_2")})),
                              HostId("host_1"), GID) == "host_4"


def test_a_group_clients_file_has_the_floating_endpoint_and_the_groups_key() -> None:
    snap = start()
    records = NetworkRecords.of(snap.network, snap.members, snap.clients, snap.groups)
    view = plan.client_view(records, "cli_1")
    assert view is not None
    assert (view.endpoint, view.public_key, view.gateway) == ("198.18.9.1:51900", GROUP_KEY, GID)
    keyless = replace(records, gateway_groups={GID: replace(snap.groups[0], public_key=None, key_version=0)})
    with pytest.raises(ConflictError) as e:
        plan.client_view(keyless, "cli_1")
    assert e.value.code == "group_key_missing"


FLOAT_ON_MESH, FLOAT_ON_ECHO = "198.18.9.1:51820", "198.18.9.1:51821"  # members' port and port + 1


@pytest.mark.parametrize(("change", "code"), [
    (lambda r: {"gateway_groups": {GID: replace(r.gateway_groups[GID], floating_endpoint=FLOAT_ON_MESH)}},
     "floating_port_in_use"),
    (lambda r: {"gateway_groups": {GID: replace(r.gateway_groups[GID], floating_endpoint=FLOAT_ON_ECHO)}},
     "floating_port_in_use"),
    (lambda r: {"members": {**r.members, HostId("host_3"): member(NID, 3, role=MemberRole(
        gateway=Gateway(remote_access=True, egress=("10.9.0.0/16",))))}}, "group_members_differ"),
    (lambda r: {"clients": {**r.clients, ClientId("cli_3"): gclient(3, gateway="grp_gone")}}, "group_gone"),
    (lambda r: {"clients": {**r.clients, ClientId("cli_3"): replace(gclient(3), full_tunnel=True)}},
     "not_an_internet_gateway"),
    (lambda r: {"gateway_groups": {GID: replace(r.gateway_groups[GID], members=tuple(
        HostId(f"host_{n}") for n in (1, 2, 3, 4, 5)))}}, "invalid_group"),
])
def test_check_refuses_groups_the_plan_cannot_serve(change, code) -> None:  # type: ignore[no-untyped-def]
    snap = start()
    records = NetworkRecords.of(snap.network, snap.members, snap.clients, snap.groups)
    check(records)
    with pytest.raises((ConflictError, InvalidInputError)) as e:
        check(replace(records, **change(records)))
    assert e.value.code == code


def test_a_member_that_gave_up_remote_access_serves_nothing_and_blocks_no_later_change() -> None:
    snap = start()
    records = NetworkRecords.of(snap.network, snap.members, snap.clients, snap.groups)
    forced = replace(records, members={**records.members, HostId("host_3"): member(NID, 3)})
    check(forced)  # as after DELETE …/gateways/host_3?force=true
    assert plan.group_carrier(forced, HostId("host_1"), GID) == "host_2"
    assert HostId("host_3") not in plan.group_probe_targets(forced, HostId("host_1"))


def test_every_host_probes_the_group_members_as_gateways_it_routes_through() -> None:
    t = Tracker("host_1", [start()])
    routed = {m.host_id for m, through in t.gateways() if through}
    assert routed == {"host_2", "host_3", "host_4"}
    member_view = Tracker("host_2", [start()])
    assert {m.host_id for m, through in member_view.gateways() if through} == {"host_3", "host_4"}


def test_an_agent_that_restarts_plans_with_the_groups_it_had(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agent.state import StateDir

    sd = StateDir(tmp_path / "state")
    sd.create()
    t = Tracker("host_1", [start()])
    sd.save_cache(t.snapshots)
    again = Tracker("host_1", sd.load_cache())
    assert again.snapshots == t.snapshots and again.snapshots[0].groups
    assert again.device(51820) == t.device(51820)
