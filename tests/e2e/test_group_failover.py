"""A gateway group end to end with real agents (issue 11): three members share a floating address
and the group's key, a phone with the real ``wg-quick`` and the file the API made streams to a
mesh host and to a LAN behind the members; the active member's machine dies (links down, its
agent and wireguard-go killed) and the phone's traffic comes back through another member without
the phone being touched, also with the control plane stopped during the kill; the control plane
records the new active member.

The lab is :mod:`skymesh.lab.groups` (``bench/floating_failover.py`` measures the gaps over many
kills; here: that traffic comes back within generous bounds, and through whom). The steps build
on each other on one lab, in order (run the whole module).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skymesh.lab import leftovers, wait_until
from skymesh.lab.groups import FLOATING, PORT, GroupLab, group_lab

from .conftest import require_control_plane_lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

BACK = 30.0  # seconds within which the streams must come back after a kill (the phone alone: never)
RECORD = 60.0  # seconds for the control plane to record the new active member (a report, or a claim)


@pytest.fixture(scope="module")
def gl() -> Iterator[GroupLab]:
    require_control_plane_lab()
    with group_lab(3) as gl:
        prefix = gl.lab.prefix
        yield gl
    assert leftovers(prefix) == [], f"the lab left things behind: {leftovers(prefix)}"


def _recorded(gl: GroupLab, name: str) -> None:
    wait_until(lambda: gl.recorded() == name, RECORD, f"the control plane to record {name} as active",
               interval=0.5, details=gl.details)


def _kill_and_see_it_back(gl: GroupLab) -> tuple[str, str]:
    """Kill the active member; both streams come back through another live member that now alone
    holds the floating address; the phone still sends to the floating address with its file."""
    was, now, gaps = gl.failover(BACK)
    assert now is not None and now != was and now not in gl.dead, \
        f"{was} died; the floating address is on {gl.holders()}\n{gl.details()}"
    assert gl.phone_endpoint() == f"{FLOATING}:{PORT}", gl.details()
    assert gl.config_intact(), "the phone's wg-quick file changed"
    return was, now


def test_the_phone_reaches_the_mesh_and_the_lan_through_the_one_active_member(gl: GroupLab) -> None:
    # which member wins the first election depends on who opened the key first; later ones go by priority
    holders = gl.holders()
    assert len(holders) == 1, gl.details()
    assert gl.phone_endpoint() == f"{FLOATING}:{PORT}", gl.details()
    _recorded(gl, holders[0])


def test_killing_the_active_member_moves_the_phone_to_another_without_touching_it(gl: GroupLab) -> None:
    was, now = _kill_and_see_it_back(gl)
    first = next(n for n in gl.members if n != was)
    assert now == first, f"{was} died: the next member by priority is {first}, not {now}\n{gl.details()}"
    _recorded(gl, now)
    gl.revive(was)  # it comes back as a standby: the address stays where it went
    assert gl.holders() == [now], gl.details()


def test_with_the_control_plane_stopped_the_members_fail_over_by_themselves(gl: GroupLab) -> None:
    gl.cp.stop()
    try:
        was, now = _kill_and_see_it_back(gl)
    finally:
        gl.cp.start()
    _recorded(gl, now)  # back up, the control plane learns who is active from the members
    gl.revive(was)
    assert gl.holders() == [now], gl.details()
