"""Election takeover: how long after the active member of a gateway group crashes another member is
active, on real UDP sockets on loopback in real time (issue 11, the election runtime alone).

N members (default 3) run :class:`agent.election_loop.ElectionLoop` in this process, each on
127.0.0.1 and a port of its own, with the protocol's default timing (heartbeat 0.5 s, lease 1.5 s,
stagger 0.25 s). The prober is stood in for (:class:`skymesh.lab.election.Probes`): a crashed member
is seen down ``--detect`` seconds after it stopped (default 2.0: the real prober's 3 misses at
0.5 s, each counted 1 s after its echo). A kill stops the active member's loop without its hooks (it
falls silent); the takeover is the time from the kill to another member's ``on_active``. The dead
member is restarted (a new incarnation) and the next kill waits until it votes again. What this does
not include: the data plane's address move and handshakes (the e2e's ``floating_failover``).

    python bench/election_takeover.py [--kills 50] [--members 3] [--detect 2.0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ms, percentile, summary  # noqa: E402
from skymesh.lab.election import LoopbackGroup, overlaps  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--detect", type=float, default=2.0)
    args = parser.parse_args()
    with LoopbackGroup(args.members, detect=args.detect) as group:
        group.start_all()
        times = group.takeovers(args.kills)
        both = overlaps(group.timeline)
    summary("election_takeover", kills=len(times), members=args.members, detect_s=args.detect,
            takeover_p50_ms=ms(percentile(times, 50)), takeover_p99_ms=ms(percentile(times, 99)),
            takeover_max_ms=ms(max(times)), takeover_min_ms=ms(min(times)), two_active=len(both))


if __name__ == "__main__":
    main()
