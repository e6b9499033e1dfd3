"""Automatic relays: how soon a host whose direct paths are blocked reaches its peers, and how soon
its pairs go direct again once the block is lifted, over several joins.

The lab of :mod:`skymesh.lab.autorelay`: g1, g2 auto-relay gateways, g3 a gateway with auto_relay
off, plain hosts a and b. Each run, a new host joins with nftables in its namespace dropping
everything from and to a's and b's underlay addresses, and pings both from the join on: *reach*
is the time from the join until both answer (through the relay the control plane chose on its
report). Then the block is lifted: *direct again* is the time until a and b are direct peers on
its device again (the agents' underlay echo held for its hysteresis, both reported, the control
plane ended the pairs) and answer. The host then leaves, and the next run starts.

    sudo python bench/autorelay.py [--runs 5]

A run that does not reach its peers within ``--timeout`` s counts as that long and is named in
``failed`` (likewise for direct again).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ms, percentile, summary  # noqa: E402
from skymesh.lab.autorelay import autorelay_lab  # noqa: E402
from skymesh.lab.errors import LabError  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=90.0, help="each wait is bounded by this (s)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/autorelay.py needs root (network namespaces, wireguard-go)", file=sys.stderr)
        return 2
    reach, again, failed, through = [], [], [], []
    with autorelay_lab() as w:
        for i in range(1, args.runs + 1):
            name = f"h{i}"
            try:
                joined = w.join_blocked(name, args.timeout)
                reach.append(joined.reach)
                vias = w.shown_pairs(name)
            except LabError as e:
                failed.append(f"{name} reach: {str(e).splitlines()[0]}")
                reach.append(args.timeout)
                vias = {}
            try:
                again.append(w.direct_again(name, args.timeout))
            except LabError as e:
                failed.append(f"{name} direct again: {str(e).splitlines()[0]}")
                again.append(args.timeout)
            through.append(",".join(f"{p}->{v}" for p, v in sorted(vias.items())))
            print(f"run {i}/{args.runs}: reach {reach[-1]:.1f} s via {vias}, direct again {again[-1]:.1f} s",
                  file=sys.stderr, flush=True)
            w.agents[name].leave()
    summary("autorelay", runs=len(reach), reach_p50_ms=ms(percentile(reach, 50)),
            reach_p99_ms=ms(percentile(reach, 99)), reach_max_ms=ms(max(reach)),
            direct_again_p50_ms=ms(percentile(again, 50)), direct_again_p99_ms=ms(percentile(again, 99)),
            direct_again_max_ms=ms(max(again)), vias=through, failed=failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
