"""Failover: the gap in a steady stream while the active HA gateway is killed, over many kills.

The lab of :mod:`skymesh.lab.ha`: N gateways serve one LAN; host ``h`` sends a datagram every
10 ms to an echo on it. Each kill takes the gateway ``h`` sends the LAN to now (read off its
``wg show``) off the underlay (link down: its tunnels die as if the machine did); the gap is
the silence in the echoes around it, until ``h``'s agent moved the LAN to another gateway by
itself (its probes; no round trip to the control plane). The killed gateway is brought back
and the next kill waits until ``h`` reaches it through the tunnel again.

Two modes, one JSON line each: ``control plane up`` (the agents also report and hear
broadcasts meanwhile), then ``control plane down`` (the stack is stopped first: the agents'
fast path alone).

    sudo python bench/failover.py [--gateways 3] [--kills 10] [--probe-interval 0.3] [--internet]

``--internet``: the gateways are internet gateways and ``h`` uses any of them
(``internet_gateway: auto``, full tunnel), streaming to an address "on the internet" behind them:
the kill moves its default routes (``0.0.0.0/0``, ``::/0``) instead of the LAN.

A kill whose stream does not come back within ``--timeout`` s counts as a gap of that length
and is named in ``failed``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ms, percentile, summary  # noqa: E402
from skymesh.lab.errors import LabTimeout  # noqa: E402
from skymesh.lab.ha import HaLab, ha_lab  # noqa: E402


def kills(ha: HaLab, n: int, timeout: float) -> tuple[list[float], list[str], list[str]]:
    """``n`` kills of the active gateway: the gaps (s), where traffic went, and what failed."""
    gaps, moves, failed = [], [], []
    for i in range(n):
        try:
            was, now, gap = ha.failover(timeout)
        except LabTimeout as e:
            failed.append(f"kill {i + 1}: {str(e).splitlines()[0]}")
            gaps.append(timeout)
            was, now = next(iter(ha.dead), "?"), None
        else:
            gaps.append(gap.seconds)
            moves.append(f"{was}->{now}")
        for name in sorted(ha.dead):
            ha.revive(name)
            ha.until_live(name)
        print(f"kill {i + 1}/{n}: {was} -> {now}: gap {gaps[-1] * 1000:.0f} ms", file=sys.stderr, flush=True)
    return gaps, moves, failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateways", type=int, default=3)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--probe-interval", type=float, default=None,
                    help="the agents' probe interval for the gateways they use (default: the agent's)")
    ap.add_argument("--timeout", type=float, default=30.0, help="a kill's stream must come back within this")
    ap.add_argument("--internet", action="store_true",
                    help="internet gateways and a full-tunnel host with internet_gateway auto (not a LAN)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/failover.py needs root (network namespaces, wireguard-go)", file=sys.stderr)
        return 2
    with ha_lab(args.gateways, probe_interval=args.probe_interval, internet=args.internet) as ha:
        for mode in ("control plane up", "control plane down"):
            if mode == "control plane down":
                ha.cp.stop()
            gaps, moves, failed = kills(ha, args.kills, args.timeout)
            summary("failover", mode=mode, group="internet" if args.internet else "lan",
                    gateways=args.gateways, kills=len(gaps),
                    probe_interval=args.probe_interval, gap_p50_ms=ms(percentile(gaps, 50)),
                    gap_p99_ms=ms(percentile(gaps, 99)), gap_max_ms=ms(max(gaps)), moves=moves, failed=failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
