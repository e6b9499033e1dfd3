"""The prober on real ICMP sockets in a lab namespace (issue 10: probes), both kinds: the
unprivileged datagram socket where ``net.ipv4.ping_group_range`` allows it, else the raw socket,
while another program pings the same address (a raw socket sees its replies too; they must not
count). Targets: the namespace's own loopback addresses (they answer), one of them with only our
echoes dropped (nftables) while ``ping`` gets its answers, and an address routed to a blackhole
(nothing is sent, nothing answers). No traffic leaves the namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from agent.probe import Prober, ProbeSettings, Target
from chalicelib.domain.ids import HostId
from skymesh.lab.netns import Lab
from skymesh.lab.wait import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ping") is None or shutil.which("nft") is None,
    reason="needs root, ping and nft")]

LOOP4, LOOP6, HOLE = HostId("host_loop4"), HostId("host_loop6"), HostId("host_hole")
MUTED = HostId("host_muted")  # answers another program's pings, never ours
HOLE_ADDRESS, MUTED_ADDRESS = "100.64.99.1", "127.0.0.2"
# Our echoes are 36 bytes of IPv4 (20 + 8 + an 8-byte token), ping's 84: drop ours to MUTED only.
NFT = f"""table ip probetest {{
  chain out {{
    type filter hook output priority 0;
    ip daddr {MUTED_ADDRESS} icmp type echo-request ip length 36 drop;
  }}
}}"""


def probe_for_a_while() -> dict[str, Any]:
    """Run a prober (in the calling thread's namespace) until every target has a verdict."""
    prober = Prober(ProbeSettings(fast=0.2, timeout=0.2))
    prober.set_targets({LOOP4: Target("127.0.0.1"), LOOP6: Target("::1"), HOLE: Target(HOLE_ADDRESS),
                        MUTED: Target(MUTED_ADDRESS)})
    prober.start()
    try:
        wait_until(lambda: all(s.up is not None and s.sent >= 5 for s in prober.states().values()), 15.0,
                   "every target to have a verdict", interval=0.1)
        return {"states": prober.states(), "datagram": {f.name: s.datagram for f, s in prober._socks.items()}}
    finally:
        prober.stop()


@pytest.mark.parametrize("kind", ["raw", "datagram"])
def test_the_prober_counts_only_its_own_replies_on_either_kind_of_socket(kind: str) -> None:
    with Lab() as lab:
        node = lab.add_node("p")
        node.run(["ip", "route", "add", "blackhole", f"{HOLE_ADDRESS}/32"], timeout=10, check=True)
        groups = "0 2147483647" if kind == "datagram" else "1 0"  # "1 0": nobody (Debian's default)
        node.run(["sysctl", "-qw", f"net.ipv4.ping_group_range={groups}"], timeout=10, check=True)
        node.run(["nft", "-f", "-"], input=NFT, timeout=10, check=True)
        # another program pinging the muted address: its replies reach a raw socket of ours too,
        # with sequence numbers that our echoes in flight also have
        other = node.popen(["ping", "-q", "-i", "0.05", "-c", "400", MUTED_ADDRESS],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            got = node.call(probe_for_a_while, timeout=30.0)
        finally:
            other.kill()
            other.wait(10)
    assert set(got["datagram"].values()) == {kind == "datagram"}, got
    states = got["states"]
    for loop in (LOOP4, LOOP6):
        assert states[loop].up is True and states[loop].loss_pct == 0, states
        assert states[loop].rtt_ms is not None and 0 < states[loop].rtt_ms < 100, states
    for silent in (HOLE, MUTED):
        assert states[silent].up is False and states[silent].rtt_ms is None, states
        assert states[silent].loss_pct == 100, states
