"""The agent's pure core: sequencing of broadcasts, the merged device config and the per-peer diff."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import keys
from agent.converge import Outcome, Tracker
from agent.state import AgentState, StateDir
from chalicelib.domain import plan, protocol
from chalicelib.domain.device import AllowedIpConflictError, PeerConfig, merge_views, peer_diff
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.domain.models import Member, Network


def net(nid: str = "net_a", seq: int = 1, **kw) -> Network:
    return Network(id=NetworkId(nid), name=nid, ipv4_cidr=kw.pop("v4", "100.64.0.0/16"),
                   ipv6_cidr=kw.pop("v6", "fd00:1::/64"), seq=seq, **kw)


def member(nid: str, n: int, key: str | None = None, endpoint: str | None = None) -> Member:
    """Host ``n`` in network ``nid``, with addresses in that network's ranges (as :func:`net` makes
    them: net_b's are 100.65.0.0/16 and fd00:2::/64; networks never overlap)."""
    v4, v6 = ("100.65.0", "fd00:2:") if nid == "net_b" else ("100.64.0", "fd00:1:")
    return Member(network_id=NetworkId(nid), host_id=HostId(f"host_{n}"), name=f"h{n}",
                  public_key=key or keys.wireguard_public_key(keys.new_wireguard_key()),
                  ipv4=f"{v4}.{n}", ipv6=f"{v6}:{n}", listen_port=51820,
                  endpoints=(endpoint or f"198.18.0.{n}:51820",))


@pytest.fixture
def three() -> tuple[Network, list[Member]]:
    return net(), [member("net_a", i) for i in (1, 2, 3)]


def test_a_delta_in_sequence_changes_the_peers(three):
    network, members = three
    t = Tracker("host_1", [protocol.Snapshot(network, tuple(members))])
    newcomer = member("net_a", 4)
    assert t.on_delta(protocol.Delta("net_a", 2, upsert=(newcomer,))) is Outcome.APPLIED
    assert {p.host_id for p in t.views()[0].peers} == {"host_2", "host_3", "host_4"}
    assert t.on_delta(protocol.Delta("net_a", 3, remove=("host_2",))) is Outcome.APPLIED
    assert {p.host_id for p in t.views()[0].peers} == {"host_3", "host_4"}
    assert t.seq("net_a") == 3


def test_a_replayed_delta_is_ignored_and_a_gap_asks_for_a_resync(three):
    network, members = three
    t = Tracker("host_1", [protocol.Snapshot(network, tuple(members))])
    assert t.on_delta(protocol.Delta("net_a", 1, remove=("host_2",))) is Outcome.DUPLICATE
    assert t.on_delta(protocol.Delta("net_a", 3, remove=("host_2",))) is Outcome.GAP
    assert {p.host_id for p in t.views()[0].peers} == {"host_2", "host_3"}  # nothing applied


def test_being_removed_or_an_unknown_network_asks_for_a_resync(three):
    network, members = three
    t = Tracker("host_1", [protocol.Snapshot(network, tuple(members))])
    assert t.on_delta(protocol.Delta("net_other", 5)) is Outcome.MEMBERSHIP
    assert t.on_delta(protocol.Delta("net_a", 2, remove=("host_1",))) is Outcome.MEMBERSHIP
    assert t.network_ids == ()


def test_settings_in_a_delta_change_keepalive_and_mtu(three):
    network, members = three
    t = Tracker("host_1", [protocol.Snapshot(network, tuple(members))])
    t.on_delta(protocol.Delta("net_a", 2, network=network.with_changes(keepalive=15, mtu=1380, seq=2)))
    dev = t.device(51820)
    assert dev.mtu == 1380 and {p.keepalive for p in dev.peers.values()} == {15}


def test_a_snapshot_without_this_host_is_not_tracked(three):
    network, members = three
    assert Tracker("host_9", [protocol.Snapshot(network, tuple(members))]).network_ids == ()


def test_a_peer_shared_by_two_networks_is_one_wireguard_peer_with_both_ranges():
    shared_key = keys.wireguard_public_key(keys.new_wireguard_key())
    a = protocol.Snapshot(net("net_a"), (member("net_a", 1), member("net_a", 2, shared_key)))
    b_net = net("net_b", v4="100.65.0.0/16", v6="fd00:2::/64")
    b_members = tuple(Member(network_id=NetworkId("net_b"), host_id=HostId(f"host_{n}"), name=f"h{n}",
                             public_key=k, ipv4=f"100.65.0.{n}", ipv6=f"fd00:2::{n}", listen_port=51820)
                      for n, k in ((1, a.members[0].public_key), (2, shared_key)))
    dev = Tracker("host_1", [a, protocol.Snapshot(b_net, b_members)]).device(51820)
    assert list(dev.peers) == [shared_key]
    assert dev.peers[shared_key].allowed_ips == ("100.64.0.2/32", "100.65.0.2/32",
                                                 "fd00:1::2/128", "fd00:2::2/128")
    assert dev.addresses == ("100.64.0.1/32", "100.65.0.1/32", "fd00:1::1/128", "fd00:2::1/128")
    assert dev.routes == ("100.64.0.0/16", "100.65.0.0/16", "fd00:1::/64", "fd00:2::/64")


def test_no_networks_is_a_device_without_peers():
    dev = merge_views([], 51820)
    assert dev.peers == {} and dev.addresses == () and dev.listen_port == 51820


def test_two_peers_claiming_one_allowed_ip_is_a_clear_error_not_a_silent_override():
    """WireGuard gives a prefix to the peer set last; the device model refuses such a plan."""
    a, b = member("net_a", 1), member("net_a", 2)
    intruder = Member(**{**member("net_a", 3).__dict__, "ipv4": b.ipv4})  # host 3 claims host 2's /32
    view = plan.network_plan(plan.NetworkRecords.of(net(), (a, b, intruder)))["host_1"]
    with pytest.raises(AllowedIpConflictError, match=r"both claim 100\.64\.0\.2/32") as e:
        merge_views([view], 51820)
    assert e.value.code == "allowed_ip_conflict" and e.value.status == 409


# ------------------------------------------------------------------ per-peer diff
P = PeerConfig


def test_diff_touches_only_the_peers_that_changed():
    current = {"a": P("a", "198.18.0.1:1", ("100.64.0.1/32",)),
               "b": P("b", "198.18.0.2:1", ("100.64.0.2/32",))}
    desired = {"a": current["a"], "b": P("b", "198.18.0.2:1", ("100.64.0.2/32",), keepalive=25),
               "c": P("c", None, ("100.64.0.3/32",))}
    d = peer_diff(current, desired)
    assert [p.public_key for p in d.upsert] == ["b", "c"] and d.remove == ()
    assert peer_diff(current, {"a": current["a"]}).remove == ("b",)
    assert not peer_diff(desired, desired)


def test_a_roamed_endpoint_is_kept_unless_the_control_plane_moved_the_peer():
    applied = {"a": P("a", "198.18.0.1:51820", ("100.64.0.1/32",))}
    roamed = {"a": P("a", "198.18.5.5:40000", ("100.64.0.1/32",))}  # WireGuard learned a NAT mapping
    assert not peer_diff(roamed, applied, applied)
    moved = {"a": P("a", "198.18.0.9:51820", ("100.64.0.1/32",))}
    assert peer_diff(roamed, moved, applied).upsert == (moved["a"],)


def test_allowed_ips_are_canonical_so_equal_sets_compare_equal():
    assert P("a", allowed_ips=("fd00::1/128", "100.64.0.1/32")) == P("a", allowed_ips=("100.64.0.1/32",
                                                                                        "fd00:0::1/128"))


# ------------------------------------------------------------------------ state
def test_state_files_are_private_and_round_trip(tmp_path, three):
    sd = StateDir(tmp_path / "state")
    sd.create()
    st = AgentState(server="http://198.18.0.1:8787", host_id="host_1", name="h1", host_token="skm_ht_x_y",
                    interface="sm0", backend="uapi", listen_port=51820, mqtt_endpoint="198.18.0.1",
                    mqtt_port=8883, client_id="host_1", endpoints=("198.18.0.1:51820",))
    sd.save(st)
    sd.save_secrets(wg_key=keys.new_wireguard_key(), tls_key=keys.new_tls_key())
    network, members = three
    sd.save_cache([protocol.Snapshot(network, tuple(members))])
    assert sd.load() == st
    assert sd.load_cache() == [protocol.Snapshot(network, tuple(members))]
    assert stat.S_IMODE(sd.path.stat().st_mode) == 0o700
    for f in sd.path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert "skm_ht_x_y" in json.loads((sd.path / "state.json").read_text())["host_token"]


def test_a_corrupt_cache_reads_as_empty_rather_than_crashing_the_boot(tmp_path):
    sd = StateDir(tmp_path)
    (tmp_path / "cache.json").write_text('{"networks": {"net_a": {"v": 1, "type": "snapsh')
    assert sd.load_cache() == []


@pytest.mark.skipif(shutil.which("wg") is None, reason="wireguard-tools (wg) is not installed")
def test_keys_are_what_wg_derives():
    priv = keys.new_wireguard_key()
    out = subprocess.run(["wg", "pubkey"], input=priv + "\n", capture_output=True, text=True, timeout=10)
    assert keys.wireguard_public_key(priv) == out.stdout.strip()
    assert "BEGIN CERTIFICATE REQUEST" in keys.csr_pem(keys.new_tls_key(), "h1")


# ------------------------------------------------- incremental = full recomputation
KEYS = [keys.wireguard_public_key(keys.new_wireguard_key()) for _ in range(6)]


@st.composite
def delta_scripts(draw: st.DrawFn) -> list[tuple[str, str, int, int, int]]:
    """(network, op, host number 2..6, key index, endpoint number) steps; host 1 is us."""
    return draw(st.lists(st.tuples(st.sampled_from(["net_a", "net_b"]),
                                   st.sampled_from(["upsert", "remove", "settings"]),
                                   st.integers(2, 6), st.integers(0, 5), st.integers(1, 3)),
                         max_size=25))


def _delta(t: Tracker, step: tuple[str, str, int, int, int]) -> protocol.Delta:
    net_id, op, n, k, ep = step
    seq = t.seq(net_id) + 1
    if op == "upsert":
        return protocol.Delta(net_id, seq, upsert=(member(net_id, n, KEYS[k], f"198.18.{ep}.{n}:51820"),))
    if op == "remove":
        return protocol.Delta(net_id, seq, remove=(f"host_{n}",))
    return protocol.Delta(net_id, seq, network=net(net_id, seq).with_changes(keepalive=ep * 10))


@settings(max_examples=150, deadline=None)
@given(delta_scripts())
def test_the_peers_a_delta_touched_are_what_a_full_recomputation_gives(script):
    """Shared keys across networks, key rotation, removals and settings: one peer at a time
    (what the agent sends after a delta) always equals the full device config."""
    me_a, me_b = member("net_a", 1), member("net_b", 1)
    me_b = Member(**{**me_b.__dict__, "public_key": me_a.public_key})
    t = Tracker("host_1", [protocol.Snapshot(net("net_a"), (me_a,)),
                           protocol.Snapshot(net("net_b", v4="100.65.0.0/16", v6="fd00:2::/64"), (me_b,))])
    t.take_changes()
    applied = dict(t.device(51820).peers)
    for step in script:
        assert t.on_delta(_delta(t, step)) is Outcome.APPLIED
        changes = t.take_changes()
        assert len(changes.keys) <= 2  # O(change): the one host named, its old and its new key
        full = t.device(51820).peers
        if changes.full:
            applied = dict(full)
            continue
        for key in changes.keys:
            want = t.peer(key)
            if want is None:
                applied.pop(key, None)
            else:
                applied[key] = want
        assert applied == dict(full)


@settings(max_examples=100, deadline=None)
@given(delta_scripts(), st.integers(0, 25))
def test_a_catch_up_with_the_deltas_missed_equals_what_the_live_agent_has(script, cut):
    """An agent away from ``cut`` on, caught up from the logged deltas, holds what an agent that
    heard every broadcast holds, and the peers it touches are what a full recomputation gives."""
    me_a, me_b = member("net_a", 1), member("net_b", 1)
    start = [protocol.Snapshot(net("net_a"), (me_a,)),
             protocol.Snapshot(net("net_b", v4="100.65.0.0/16", v6="fd00:2::/64"), (me_b,))]
    live, away = Tracker("host_1", start), Tracker("host_1", start)
    away.take_changes()
    missed: dict[str, list[protocol.Delta]] = {"net_a": [], "net_b": []}
    for i, step in enumerate(script):
        delta = _delta(live, step)
        assert live.on_delta(delta) is Outcome.APPLIED
        if i < cut:
            assert away.on_delta(delta) is Outcome.APPLIED
        else:
            missed[delta.network_id].append(delta)
    applied = dict(away.device(51820).peers)
    away.take_changes()
    assert away.catch_up([], [protocol.CatchUp(n, live.seq(n), tuple(d)) for n, d in missed.items()])
    assert away.snapshots == live.snapshots
    changes, full = away.take_changes(), away.device(51820).peers
    if not changes.full:
        for key in changes.keys:
            want = away.peer(key)
            applied.pop(key, None) if want is None else applied.__setitem__(key, want)
        assert applied == dict(full)


@settings(max_examples=100, deadline=None)
@given(delta_scripts())
def test_in_every_network_plan_each_host_sees_each_other_member_once_and_no_allowed_ip_twice(script):
    """The plan's invariants for every host of the networks (not just the agent's own), after every
    step of a script with shared and rotated keys: each host peers with each other member exactly
    once (never itself or its own key), and no two peers of one device share an allowed IP."""
    me_a, me_b = member("net_a", 1), member("net_b", 1)
    me_b = Member(**{**me_b.__dict__, "public_key": me_a.public_key})
    t = Tracker("host_1", [protocol.Snapshot(net("net_a"), (me_a,)),
                           protocol.Snapshot(net("net_b", v4="100.65.0.0/16", v6="fd00:2::/64"), (me_b,))])
    for step in script:
        assert t.on_delta(_delta(t, step)) is Outcome.APPLIED
        plans = [plan.network_plan(plan.NetworkRecords.of(s.network, s.members)) for s in t.snapshots]
        hosts = {h for p in plans for h in p}
        for host in sorted(hosts):
            views = [p[host] for p in plans if host in p]
            for p, view in zip([p for p in plans if host in p], views, strict=True):
                me = p.records.members[host]
                others = sorted(m.host_id for m in p.records.members.values()
                                if m.host_id != host and m.public_key != me.public_key)
                assert [peer.host_id for peer in view.peers] == others  # each exactly once, in order
            device = merge_views(views, 51820)  # raises AllowedIpConflictError on a shared IP
            claimed = [ip for peer in device.peers.values() for ip in peer.allowed_ips]
            assert len(claimed) == len(set(claimed))


def test_a_catch_up_that_does_not_reach_its_seq_or_names_an_unknown_network_is_refused(three):
    network, members = three
    t = Tracker("host_1", [protocol.Snapshot(network, tuple(members))])
    assert not t.catch_up([], [protocol.CatchUp("net_a", 3, (protocol.Delta("net_a", 2),))])  # 3 missing
    t = Tracker("host_1", [protocol.Snapshot(network, tuple(members))])
    assert not t.catch_up([], [protocol.CatchUp("net_a", 1), protocol.CatchUp("net_z", 4)])
    t = Tracker("host_1", [protocol.Snapshot(network, tuple(members))])
    assert not t.catch_up([], [protocol.CatchUp("net_a", 3, (protocol.Delta("net_a", 3),))])  # a gap


def test_a_catch_up_leaves_the_networks_the_answer_does_not_name(three):
    network, members = three
    other = protocol.Snapshot(net("net_b", v4="100.65.0.0/16", v6="fd00:2::/64"), (member("net_b", 1),))
    t = Tracker("host_1", [protocol.Snapshot(network, tuple(members)), other])
    assert t.catch_up([], [protocol.CatchUp("net_b", 1)])
    assert t.network_ids == ("net_b",) and t.take_changes().full
