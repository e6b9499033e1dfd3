"""Floating data plane: the gap in a phone's stream while a gateway group's active member changes.

The lab of :mod:`skymesh.lab.floating`: two members share the group key and the floating address;
a phone brought up with the real ``wg-quick`` sends a datagram every 10 ms through the active one
to an echo on it. Each switch stops the active member (deactivated, its underlay link down, or
its wireguard-go killed: ``--how``, in turn by default) and activates the other at once: what
the election's ``on_active`` does, without the election's detection time. The gap is the silence
in the echoes around it: the address move, the announcement, the new member's handshake to the
phone's last endpoint and the first echo back.

    sudo .venv/bin/python bench/floating_dataplane.py [--switches 12] [--how deactivate,link,kill]
                                                      [--behind-nat]

``--behind-nat``: the phone sits behind a router that masquerades it, whose mapping is for the
floating address only (the case the source rewrite exists for).

A switch whose stream does not come back within ``--timeout`` s counts as a gap of that length
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
from skymesh.lab.floating import HOW, floating_lab  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--switches", type=int, default=12)
    ap.add_argument("--how", default=",".join(HOW), help=f"comma-separated, in turn: {', '.join(HOW)}")
    ap.add_argument("--behind-nat", action="store_true",
                    help="the phone behind a router that masquerades it (as on a home or mobile network)")
    ap.add_argument("--timeout", type=float, default=30.0, help="a switch's stream must be back within this")
    args = ap.parse_args()
    hows = [h for h in args.how.split(",") if h]
    if not hows or set(hows) - set(HOW):
        ap.error(f"--how takes {', '.join(HOW)}")
    if os.geteuid() != 0:
        print("bench/floating_dataplane.py needs root (network namespaces, wireguard-go)", file=sys.stderr)
        return 2
    gaps: list[float] = []
    by_how: dict[str, list[float]] = {h: [] for h in hows}
    failed: list[str] = []
    with floating_lab(behind_nat=args.behind_nat) as fl:
        for i in range(args.switches):
            how = hows[i % len(hows)]
            try:
                was, now, gap = fl.switch(how, args.timeout)
                seconds = gap.seconds
            except LabTimeout as e:
                failed.append(f"switch {i + 1} ({how}): {str(e).splitlines()[0]}")
                if len(failed) == 1:
                    print(e, file=sys.stderr)
                was, now, seconds = "?", "?", args.timeout
            gaps.append(seconds)
            by_how[how].append(seconds)
            print(f"switch {i + 1}/{args.switches} ({how}): {was} -> {now}: gap {seconds * 1000:.0f} ms",
                  file=sys.stderr, flush=True)
    summary("floating_dataplane", phone="behind nat" if args.behind_nat else "on the bridge",
            switches=len(gaps), gap_p50_ms=ms(percentile(gaps, 50)),
            gap_p99_ms=ms(percentile(gaps, 99)), gap_max_ms=ms(max(gaps)),
            by_how={h: {"n": len(v), "p50_ms": ms(percentile(v, 50)), "max_ms": ms(max(v))}
                    for h, v in by_how.items() if v},
            failed=failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
