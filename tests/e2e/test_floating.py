"""A gateway group's data plane end to end (issue 11): two members with the same group key and
a floating address, a phone with the real ``wg-quick`` and a file it never changes, a steady
stream through the active member; the other member takes over and the stream comes back within
a second, from the same floating address, and the old member keeps nothing it added.

The lab is :mod:`skymesh.lab.floating` (``bench/floating_dataplane.py`` measures the gaps over
many switches). No election here: the test says who is active. The steps build on each other
on one lab, in order (run the whole module).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.floating import GroupDataPlane, snat_ruleset, snat_table
from chalicelib import wgkeys
from skymesh.lab import leftovers, wait_until
from skymesh.lab.floating import FLOATING, HOW, PORT, FloatingLab, floating_lab
from skymesh.lab.iproute import ip

from .conftest import require_lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

GAP = 1.0  # seconds the stream may be silent around a switch (WireGuard on its own: ~15 s)
RESTART = 3.0  # seconds for a killed wireguard-go to be back and talking (it starts in ~0.5 s)
SETTLE = 5.0  # seconds for a recovered member's links and routes to be back (link up, DAD)


@pytest.fixture(scope="module")
def fl() -> Iterator[FloatingLab]:
    require_lab(control_plane=False)
    with floating_lab() as fl:
        prefix = fl.lab.prefix
        yield fl
    assert leftovers(prefix) == [], f"the lab left things behind: {leftovers(prefix)}"


@pytest.fixture(scope="module")
def fl_nat() -> Iterator[FloatingLab]:
    require_lab(control_plane=False)
    with floating_lab(behind_nat=True) as fl:
        prefix = fl.lab.prefix
        yield fl
    assert leftovers(prefix) == [], f"the lab left things behind: {leftovers(prefix)}"


def _handshakes(fl: FloatingLab) -> int:
    out = fl.phone.run(["wg", "show", fl.wgq.ifname, "latest-handshakes"], timeout=10, check=True).stdout
    return int(out.split("\t")[1]) if "\t" in out else 0


def _keeps_nothing(fl: FloatingLab, name: str) -> None:
    """Member ``name`` is exactly as it was as a standby before it was ever active."""
    wait_until(lambda: fl.footprint(name) == fl.standby[name], SETTLE,
               f"{name} to keep nothing of its time as the active member", interval=0.2,
               details=lambda: f"before: {fl.standby[name]}\nnow: {fl.footprint(name)}\n{fl.details()}")


def test_the_phone_reaches_the_group_at_the_floating_address(fl: FloatingLab) -> None:
    assert fl.phone_endpoint() == f"{FLOATING}:{PORT}", fl.details()
    seen = fl.call("a", fl.planes["a"].client_endpoints)
    assert [ep.rpartition(":")[0] for ep in seen.values()] == [fl.phone.ip], seen
    assert fl.call("b", fl.planes["b"].client_endpoints) == {}, "the standby must not talk to the phone"


@pytest.mark.parametrize("how", HOW)
def test_the_other_member_takes_over_and_the_stream_is_back_within_a_second(fl: FloatingLab,
                                                                            how: str) -> None:
    config = Path(fl.wgq.path).read_text()
    for _ in range(2):  # both ways: a -> b, b -> a
        start = int(time.time())
        was, now, gap = fl.switch(how)
        assert gap.seconds <= GAP, f"{how} on {was}: silent {gap.seconds:.2f} s\n{fl.details()}"
        # the new member's handshake reached the phone from the floating address: the phone did not
        # roam to the member's own address (it would be stuck there at the next switch)
        assert fl.phone_endpoint() == f"{FLOATING}:{PORT}", fl.details()
        assert _handshakes(fl) >= start, fl.details()
        _keeps_nothing(fl, was)
        assert fl.call(was, fl.planes[was].client_endpoints) == {}, f"{was} still talks to the phone"
    assert Path(fl.wgq.path).read_text() == config


@pytest.mark.parametrize("how", HOW)
def test_behind_a_nat_the_new_members_handshake_gets_through_from_the_floating_address(
        fl_nat: FloatingLab, how: str) -> None:
    # the phone's NAT has a mapping for the floating address only: a handshake from a member's own
    # address would be dropped there, and the phone would retry by itself only after 15 s
    for _ in range(2):
        was, now, gap = fl_nat.switch(how)
        assert gap.seconds <= GAP, f"{how} on {was}: silent {gap.seconds:.2f} s\n{fl_nat.details()}"
        seen = fl_nat.call(now, fl_nat.planes[now].client_endpoints)
        assert [ep.rpartition(":")[0] for ep in seen.values()] == [fl_nat.lab.nodes["r"].ip], seen


def test_the_active_members_wireguard_go_restarted_by_ensure_talks_to_the_phone_again(
        fl: FloatingLab) -> None:
    name = fl.active
    assert name is not None and fl.stream is not None
    fl.stop(name, "kill")
    at = time.monotonic()
    fl.ensure(name)  # what the agent's next pass does: the device again, and (still active) handshakes
    fl.dead.discard(name)
    gap = fl.stream.silence_around(at, 30.0)
    assert gap is not None and gap.seconds <= RESTART, f"silent {gap and gap.seconds} s\n{fl.details()}"
    assert fl.phone_endpoint() == f"{FLOATING}:{PORT}", fl.details()


def test_a_client_added_or_removed_is_routed_only_at_the_active_member(fl: FloatingLab) -> None:
    active = fl.active
    assert active is not None
    standby = next(n for n in fl.members if n != active)
    extra = {**fl.clients, wgkeys.new_key_pair().public_key: ["100.64.0.10/32", "fd00::10/128"]}

    def routed(name: str) -> set[str]:
        out = {fam: fl.members[name].run(["ip", fam, "route", "show", "dev", fl.planes[name].ifname],
                                          timeout=10, check=True).stdout for fam in ("-4", "-6")}
        return {r.split()[0] for text in out.values() for r in text.splitlines()}

    for name in fl.members:
        fl.call(name, fl.planes[name].ensure, fl.group_key, extra, PORT, FLOATING)
    assert {"100.64.0.9", "100.64.0.10", "fd00::10"} <= routed(active), routed(active)
    assert not {"100.64.0.9", "100.64.0.10", "fd00::10"} & routed(standby), routed(standby)
    for name in fl.members:
        fl.ensure(name)
    assert "100.64.0.10" not in routed(active) and "fd00::10" not in routed(active)
    assert "100.64.0.9" in routed(active)
    peers = fl.members[active].run(["wg", "show", fl.planes[active].ifname, "peers"], timeout=10).stdout
    assert peers.split() == list(fl.clients), peers


def test_the_ipv6_rewrite_is_accepted_by_nftables(fl: FloatingLab) -> None:
    doc = snat_ruleset(fl.lab.ifname("g9"), PORT, "fd00::200")
    res = fl.members["a"].run(["nft", "-c", "-j", "-f", "-"], input=json.dumps(doc), timeout=10)
    assert res.returncode == 0, res.stderr


def test_an_address_the_uplink_had_before_is_not_ours_to_remove(fl: FloatingLab) -> None:
    node, other = fl.members["b"], "198.18.0.201"
    ip("addr", "add", f"{other}/32", "dev", "eth0", ns=node.netns)
    plane = GroupDataPlane(fl.lab.ifname("g9"))
    try:
        fl.call("b", plane.ensure, wgkeys.new_key_pair().private_key, {}, PORT + 1, other)
        fl.call("b", plane.activate)
        assert snat_table(plane.ifname) in node.run(["nft", "list", "tables"], timeout=10).stdout
        fl.call("b", plane.deactivate)
        assert f"{other}/32" in node.run(["ip", "-4", "addr", "show", "dev", "eth0"], timeout=10).stdout
        assert snat_table(plane.ifname) not in node.run(["nft", "list", "tables"], timeout=10).stdout
    finally:
        fl.call("b", plane.close)
        ip("addr", "del", f"{other}/32", "dev", "eth0", ns=node.netns)


def test_a_restarted_member_that_is_standby_removes_what_its_crashed_run_left(fl: FloatingLab) -> None:
    name = fl.active
    assert name is not None
    reborn = GroupDataPlane(fl.planes[name].ifname)  # the old object is gone without cleaning up
    fl.planes[name], fl.active = reborn, None
    fl.call(name, reborn.ensure, fl.group_key, fl.clients, PORT, FLOATING)
    _keeps_nothing(fl, name)
    assert fl.call(name, reborn.client_endpoints) == {}, f"{name} still talks to the phone"


def test_close_removes_everything_the_planes_made(fl: FloatingLab) -> None:
    for name, plane in fl.planes.items():
        fl.call(name, plane.close)
    for name in fl.members:
        assert fl.footprint(name) == fl.pristine[name], name
        assert not Path(f"/var/run/wireguard/{fl.planes[name].ifname}.sock").exists()
