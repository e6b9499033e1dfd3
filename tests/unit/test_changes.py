"""The outbox's records and the delta they become (pure), and the clock that orders them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib import clock
from chalicelib.domain.changes import ChangeId, PendingChange, delta, new_changes, touched_hosts
from chalicelib.domain.ids import HostId, NetworkId
from chalicelib.domain.models import Member, Network

NET = NetworkId("net_a")
NETWORK = Network(NET, "office", "100.64.0.0/24", "fd00:1::/64", mtu=1380, seq=7)


def _member(host_id: str) -> Member:
    return Member(NET, HostId(host_id), host_id, "k" * 43 + "=", "100.64.0.1", "fd00:1::1", 51820)


def _change(n: int, *host_ids: str, settings: bool = False) -> PendingChange:
    return PendingChange(ChangeId(n, f"{n:08x}"), NET, tuple(HostId(h) for h in host_ids), settings)


def test_a_delta_upserts_the_named_hosts_that_are_members_and_removes_the_others_once_each() -> None:
    batch = [_change(1, "host_b", "host_a"), _change(2, "host_c"), _change(3, "host_b")]
    members = {HostId("host_a"): _member("host_a"), HostId("host_b"): _member("host_b"),
               HostId("host_z"): _member("host_z")}

    d = delta(NETWORK, batch, members)

    assert (d.network_id, d.seq) == (NET, 7)
    assert d.upsert == (_member("host_b"), _member("host_a")), "in the order first named; host_z is not named"
    assert d.remove == ("host_c",)
    assert d.network is None, "no settings change in the batch"
    assert delta(NETWORK, [*batch, _change(4, settings=True)], members).network == NETWORK


_HOSTS = st.sampled_from("abcdef")


@given(st.lists(st.lists(_HOSTS, max_size=4), max_size=6), st.sets(_HOSTS))
def test_every_host_a_batch_names_is_in_its_delta_exactly_once(named: list[list[str]],
                                                                present: set[str]) -> None:
    batch = [_change(i, *(f"host_{h}" for h in hosts)) for i, hosts in enumerate(named)]
    members = {HostId(f"host_{h}"): _member(f"host_{h}") for h in present}

    d = delta(NETWORK, batch, members)

    sent = [m.host_id for m in d.upsert] + list(d.remove)
    assert sorted(sent) == sorted({f"host_{h}" for hosts in named for h in hosts})
    assert {m.host_id for m in d.upsert} == {h for h in touched_hosts(batch) if h in members}


def test_one_write_makes_one_change_per_network_all_with_its_id() -> None:
    stamp = ChangeId(5, "0000abcd")
    changes = new_changes([NET, NetworkId("net_b"), NET], stamp, host_ids=(HostId("host_a"),))
    assert [(c.network_id, c.id, c.host_ids) for c in changes] == [
        (NET, stamp, ("host_a",)), ("net_b", stamp, ("host_a",))]


def test_change_ids_order_by_creation_time_then_nonce_and_refuse_what_no_store_can_key() -> None:
    assert sorted([ChangeId(2, "00000000"), ChangeId(1, "ffffffff"), ChangeId(2, "0000000a")]) == [
        ChangeId(1, "ffffffff"), ChangeId(2, "00000000"), ChangeId(2, "0000000a")]
    for created_ns, nonce in ((-1, "00000000"), (True, "00000000"), (1, "0000000"), (1, "0000-000"),
                              (1, "ABCDEF01")):
        with pytest.raises(ValueError):
            ChangeId(created_ns, nonce)


def test_the_process_clock_never_repeats_nor_goes_back_when_the_wall_clock_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    wall = iter([2_000, 2_000, 1_000, 3_000])  # a repeat, then a step back (NTP)
    first = clock.process_ns()
    monkeypatch.setattr(clock.time, "time_ns", lambda: first + next(wall))
    got = [clock.process_ns() for _ in range(4)]
    assert got == [first + 2_000, first + 2_001, first + 2_002, first + 3_000]
    monkeypatch.undo()
    assert clock.SystemClock().now_ns() > got[-1]
