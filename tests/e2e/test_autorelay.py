"""Automatic relays end to end (issue 10, scenario 3): a host whose direct paths to two peers are
blocked reaches them through an auto-relay gateway, both ways (within 15 s of joining:
``bench/autorelay.py`` measures it); when the
block is lifted, the pairs go direct again. Real agents (wireguard-go), the local control plane
(its failover function runs on the reports), nftables in the joining host's namespace.

The lab is :mod:`skymesh.lab.autorelay` (g1, g2 auto-relays, g3 a gateway with auto_relay off,
a and b plain hosts, h joins blocked from a and b). The steps build on each other, in order.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.underlay import DirectSettings
from skymesh.lab import leftovers, wait_until
from skymesh.lab.autorelay import PEERS, RELAYS, AutoRelayLab, autorelay_lab

from .conftest import require_control_plane_lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

# The goal (issue 10: every peer within 15 s of joining; Netmaker: at least 3 minutes) is measured
# by bench/autorelay.py over several joins (BENCHMARKS.md: p50 6.4 s). Here a bound with room for
# a loaded machine: without automatic relays h never reaches them (a timed test would be flaky,
# not more telling).
REACH_BOUND = 30.0
# the agents' hysteresis (answers over DirectSettings.hold) plus a margin: two reports, the
# failover function, one broadcast, a handshake, a ping
DIRECT_AGAIN = DirectSettings().hold + 2 * DirectSettings().interval + 25.0
SHOWN = 10.0  # for `skymesh-agent status` to show what the agent applied (it saves its cache after 1 s)


@pytest.fixture(scope="module")
def world() -> Iterator[AutoRelayLab]:
    require_control_plane_lab()
    with autorelay_lab() as w:
        prefix = w.lab.prefix
        yield w
    assert leftovers(prefix) == [], f"the lab left things behind: {leftovers(prefix)}"


def test_a_host_blocked_from_two_peers_reaches_them_through_an_auto_relay(world) -> None:
    joined = world.join_blocked("h", timeout=60.0)
    each = ", ".join(f"{p}: {t - joined.joined_at:.1f} s" for p, t in sorted(joined.answered_at.items()))
    print(f"\nh reached {', '.join(PEERS)} {joined.reach:.1f} s after it joined ({each})")
    assert joined.reach <= REACH_BOUND, f"h reached its blocked peers only after {joined.reach:.1f} s"
    # through an auto-relay, not g3 (auto_relay off), and both ends agree on it (`status` reads the
    # state the agent saves a moment after a change)
    pairs = world.shown_pairs("h", SHOWN)
    assert set(pairs.values()) <= set(RELAYS), f"{pairs}\n{world.details()}"
    for peer in PEERS:
        wait_until(lambda p=peer: world.pairs(p).get("h") == pairs[p], SHOWN,
                   f"{peer} to show its pair with h through {pairs[peer]}", interval=0.3,
                   details=world.details)
        assert peer not in world.direct_peers("h")
    # both ways, IPv4 and IPv6
    for src, dst in [("h", p) for p in PEERS] + [(p, "h") for p in PEERS]:
        for address in world.addresses[dst]:
            assert world.agents[src].node.ping(address, count=2, wait=1), \
                f"{src} cannot ping {dst} at {address}\n{world.details()}"
    world.done.add("relayed")


def test_when_the_block_is_lifted_the_pairs_go_direct_again(world) -> None:
    if "relayed" not in world.done:
        pytest.skip("needs the relayed step of this module, which did not pass")
    took = world.direct_again("h", timeout=DIRECT_AGAIN)
    print(f"\nh's pairs with {', '.join(PEERS)} direct again {took:.1f} s after the block was lifted")
    for src, dst in [("h", p) for p in PEERS] + [(p, "h") for p in PEERS]:
        for address in world.addresses[dst]:
            assert world.agents[src].node.ping(address, count=2, wait=1), \
                f"{src} cannot ping {dst} at {address}\n{world.details()}"
