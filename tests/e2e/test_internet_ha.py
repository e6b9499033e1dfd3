"""Internet access through HA gateways end to end (issue 10): two internet gateways; a host with
``internet_gateway: auto`` and a full tunnel streams to an address "on the internet" (a lab
namespace behind both gateways, in no egress range); the internet gateway it uses dies; its agent
moves the default routes to the other one by itself (also while the control plane is down),
without touching its full-tunnel routing. The lab is :mod:`skymesh.lab.ha` with ``internet=True``.

The steps build on each other on one lab, in order (run the whole module).
"""

from __future__ import annotations

import pytest

from skymesh.lab.ha import HaLab

from .test_ha import BACK, lab_fixture

pytestmark = [pytest.mark.root, pytest.mark.slow]

ha = lab_fixture(2, internet=True)


def _routing(ha: HaLab) -> tuple[str, int]:
    """The host's policy rules, and how often its agent set the full tunnel up (its log)."""
    rules = ha.host.node.run(["ip", "rule", "show"], timeout=10).stdout
    ups = sum(p.read_text(errors="replace").count("full tunnel on") for p in ha.host.dir.glob("run-*.log"))
    return rules, ups


def test_the_host_sends_the_internet_through_exactly_one_internet_gateway(ha: HaLab) -> None:
    v4 = ha.carriers()
    ha.carried = "::/0"
    try:
        v6 = ha.carriers()
    finally:
        ha.carried = "0.0.0.0/0"
    assert len(v4) == 1 and v6 == v4, f"0.0.0.0/0 at {v4}, ::/0 at {v6}\n{ha.details()}"


def test_killing_the_active_internet_gateway_moves_the_internet_to_the_other_one(ha: HaLab) -> None:
    before = _routing(ha)
    was, now, gap = ha.failover(BACK)
    print(f"internet failover: {was} -> {now}, gap {gap}")
    assert now is not None and now != was, f"{was} died; the internet still goes to {now}\n{ha.details()}"
    assert ha.carriers() == [now]
    assert _routing(ha) == before, "the full-tunnel routing was set up again on a switch"
    ha.revive(was)
    ha.until_live(was)


def test_with_the_control_plane_down_the_agent_moves_the_internet_by_itself(ha: HaLab) -> None:
    ha.cp.stop()
    was, now, gap = ha.failover(BACK)
    print(f"internet failover, control plane down: {was} -> {now}, gap {gap}")
    assert now is not None and now != was, f"{was} died; the internet still goes to {now}\n{ha.details()}"
    ha.revive(was)
