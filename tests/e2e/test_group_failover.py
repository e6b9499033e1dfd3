"""A gateway group end to end with real agents (issue 11): three members share a floating address
and the group's key, a phone with the real ``wg-quick`` and the file the API made streams to a
mesh host and to a LAN behind the members; the active member's machine dies (links down, its
agent and wireguard-go killed) and the phone's traffic comes back through another member without
the phone being touched, also with the control plane stopped during the kill; the control plane
records the new active member.

The lab is :mod:`skymesh.lab.groups` (``bench/floating_failover.py`` measures the gaps over many
kills; here: that traffic comes back within generous bounds, and through whom). The steps build
on each other on one lab, in order (run the whole module). Three steps pin defects this lab found
in the first wiring: a returning member took the address back (its claim at a higher epoch made the
healthy active member drop its lease); the LAN flow a new active member forwarded before its ruleset
masqueraded the group interface stayed broken (conntrack); and the control plane, back up, not
recording the member that took over meanwhile: still intermittent, an xfail that says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from skymesh.lab import LabTimeout, leftovers, wait_until
from skymesh.lab.groups import FLOATING, PORT, GroupLab, group_lab
from skymesh.lab.services import PacketStream

from .conftest import require_control_plane_lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

BACK = 30.0  # seconds within which the streams must come back after a kill (the phone alone: never)
RECORD = 60.0  # seconds for the control plane to record the new active member (a report, or a claim)
STAYS = 20.0  # seconds a member that came back is watched: it must not take the address back


@pytest.fixture(scope="module")
def gl() -> Iterator[GroupLab]:
    require_control_plane_lab()
    with group_lab(3, streams=("mesh",)) as gl:  # the LAN's stream starts in its own step
        prefix = gl.lab.prefix
        yield gl
    assert leftovers(prefix) == [], f"the lab left things behind: {leftovers(prefix)}"


def _recorded(gl: GroupLab, name: str) -> None:
    wait_until(lambda: gl.recorded() == name, RECORD, f"the control plane to record {name} as active",
               interval=0.5, details=gl.details)


def _kill_and_see_it_back(gl: GroupLab) -> tuple[str, str]:
    """Kill the active member; the streams come back through the next live member by priority, which
    now alone holds the floating address; the phone still sends to the floating address, its file
    untouched."""
    was, now, gaps = gl.failover(BACK)
    first = next(n for n in gl.members if n != was)
    assert now == first, f"{was} died: the next member by priority is {first}, not {now}\n{gl.details()}"
    assert gl.phone_endpoint() == f"{FLOATING}:{PORT}", gl.details()
    assert gl.config_intact(), "the phone's wg-quick file changed"
    return was, now


def test_the_phone_reaches_the_mesh_through_the_one_active_member(gl: GroupLab) -> None:
    # which member wins the first election depends on who opened the key first; later ones go by priority
    holders = gl.holders()
    assert len(holders) == 1, gl.details()
    assert gl.phone_endpoint() == f"{FLOATING}:{PORT}", gl.details()
    _recorded(gl, holders[0])


def test_killing_the_active_member_moves_the_phone_to_another_without_touching_it(gl: GroupLab) -> None:
    was, now = _kill_and_see_it_back(gl)
    _recorded(gl, now)
    gl.revive(was)  # the next step watches it stay a standby


def test_a_member_that_comes_back_stays_standby(gl: GroupLab) -> None:
    holders = gl.holders()
    assert len(holders) == 1, gl.details()
    deadline = time.monotonic() + STAYS
    while time.monotonic() < deadline:  # an observation window: nothing should happen in it
        assert gl.holders() == holders, f"the floating address moved from {holders} to {gl.holders()}\n" \
            + gl.details()
        time.sleep(0.5)


def test_with_the_control_plane_stopped_the_members_fail_over_by_themselves(gl: GroupLab) -> None:
    gl.cp.stop()
    try:
        _kill_and_see_it_back(gl)
    finally:
        gl.cp.start()  # the killed member stays down: its return would move the address (see above)


@pytest.mark.xfail(strict=False, raises=LabTimeout,
                   reason="intermittent, cause not found yet: the control plane, back up, sometimes does "
                   "not record within 60 s the member that took over while it was down (1 of 2 runs after "
                   "the flap and vote-recording fixes; the next steps' settling records it)")
def test_the_control_plane_back_up_records_the_member_that_took_over_meanwhile(gl: GroupLab) -> None:
    active = wait_until(gl.active, BACK, "one live member to hold the floating address", details=gl.details)
    assert active is not None  # wait_until returns a truthy value
    _recorded(gl, active)


def _settled(gl: GroupLab) -> None:
    """The dead members are back, and the control plane records the one member holding the address."""
    for name in sorted(gl.dead):
        gl.revive(name)
    wait_until(lambda: (active := gl.active()) is not None and gl.recorded() == active, RECORD,
               "the control plane to record the one member that holds the floating address",
               interval=0.5, details=gl.details)


def test_the_phone_reaches_the_lan_behind_the_members(gl: GroupLab) -> None:
    _settled(gl)
    stream = PacketStream(gl.phone, gl.lan.ip)
    gl.streams["lan"] = stream
    assert stream.flowing(BACK), gl.details()


def test_after_a_kill_the_lan_behind_the_members_answers_again(gl: GroupLab) -> None:
    assert "lan" in gl.streams, "needs the LAN's stream of the step before"
    was, now = _kill_and_see_it_back(gl)
    gl.revive(was)
