"""HA gateways end to end (issue 10, scenario 4): three gateways serve one LAN; a host streams
to it; the gateway it uses dies; its agent moves the LAN to another gateway by itself, also
while the control plane is down. The lab is :mod:`skymesh.lab.ha` (``bench/failover.py``
measures the gaps over many kills; here: that traffic comes back, and where it goes).

The steps build on each other on one lab, in order (run the whole module).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from skymesh.lab import leftovers
from skymesh.lab.ha import HaLab, ha_lab

from .conftest import require_control_plane_lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

BACK = 30.0  # seconds within which the stream must come back after a kill (WireGuard alone: never)


def lab_fixture(gateways: int, **options: Any) -> Any:
    """A module-scoped fixture ``ha``: :func:`ha_lab` with these gateways and options, checked at
    exit for leftovers (the e2e modules of HA gateways share it)."""
    @pytest.fixture(scope="module")
    def ha() -> Iterator[HaLab]:
        require_control_plane_lab()
        with ha_lab(gateways, **options) as ha:
            prefix = ha.lab.prefix
            yield ha
        assert leftovers(prefix) == [], f"the lab left things behind: {leftovers(prefix)}"
    return ha


ha = lab_fixture(3)


def test_the_host_sends_the_lan_through_exactly_one_gateway(ha: HaLab) -> None:
    active = ha.active()
    assert active in ha.gateways, ha.details()


def test_killing_the_active_gateway_moves_the_lan_to_a_live_one(ha: HaLab) -> None:
    was, now, gap = ha.failover(BACK)
    assert now is not None and now != was, f"{was} died; the LAN still goes to {now}\n{ha.details()}"
    ha.revive(was)  # the next step kills the active one again: one of the other two is live


def test_with_the_control_plane_down_the_agent_moves_the_lan_by_itself(ha: HaLab) -> None:
    ha.cp.stop()
    was, now, gap = ha.failover(BACK)
    assert now is not None and now != was, f"{was} died; the LAN still goes to {now}\n{ha.details()}"
    ha.revive(was)
