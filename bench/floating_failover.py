"""Floating failover: the gap in a phone's streams while a gateway group's active member dies.

The lab of :mod:`skymesh.lab.groups`: three members (real agents, wireguard-go) share the group's
key and the floating address; a phone brought up with the real ``wg-quick`` and the file the API
made (never touched) sends a datagram every 10 ms to an echo on a mesh host and to one on a LAN
behind the members. Each kill is the active member's machine dying (its links down, its agent and
wireguard-go killed); the gap is the silence in each stream around it, until another member took
over on its own (election, floating address, handshake to the phone) and the mesh host routes the
phone through it. A kill's gap is the longer of the two streams'. The killed member then boots
(its agent first, links down, then the links) and the next kill waits until it is back as a standby.

Two modes, one JSON line each: ``control plane up``, then ``control plane down`` (the stack stopped
first: the members and the mesh host alone).

    sudo .venv/bin/python bench/floating_failover.py [--kills 10] [--members 3]

A kill whose streams do not come back within ``--timeout`` s counts as a gap of that length and
is named in ``failed``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ms, percentile, summary  # noqa: E402
from skymesh.lab.errors import LabTimeout  # noqa: E402
from skymesh.lab.groups import STREAMS, GroupLab, group_lab  # noqa: E402


def kills(gl: GroupLab, n: int, timeout: float, explain: float) -> tuple[dict[str, list[float]], list[str],
                                                                         list[str]]:
    """``n`` kills of the active member: each stream's gaps (s), the moves, and what failed. A kill
    with a gap over ``explain`` s prints the lab's details (logs, ``wg show``) to stderr."""
    gaps: dict[str, list[float]] = {what: [] for what in gl.streams}
    moves, failed = [], []
    for i in range(n):
        try:
            was, now, found = gl.failover(timeout)
        except LabTimeout as e:
            failed.append(f"kill {i + 1}: {str(e).splitlines()[0]}")
            if len(failed) == 1:
                print(e, file=sys.stderr)
            was, now, seconds = next(iter(gl.dead), "?"), None, dict.fromkeys(gl.streams, timeout)
        else:
            seconds = {what: gap.seconds for what, gap in found.items()}
            moves.append(f"{was}->{now}")
            if max(seconds.values()) > explain:
                print(f"kill {i + 1}: a gap over {explain:g} s; now:\n{gl.details()}", file=sys.stderr)
        for what in gl.streams:
            gaps[what].append(seconds[what])
        for name in sorted(gl.dead):
            gl.revive(name)
        print(f"kill {i + 1}/{n}: {was} -> {now}: gaps "
              + ", ".join(f"{w} {s * 1000:.0f} ms" for w, s in seconds.items()), file=sys.stderr, flush=True)
    return gaps, moves, failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=30.0, help="a kill's streams must come back within this")
    ap.add_argument("--modes", default="up,down", help="comma-separated: up (control plane running), down")
    ap.add_argument("--explain", type=float, default=5.0,
                    help="print the lab's details for a kill whose gap is longer than this (s)")
    ap.add_argument("--streams", default=",".join(STREAMS),
                    help=f"comma-separated, the phone's streams: {', '.join(STREAMS)}")
    args = ap.parse_args()
    streams = tuple(w for w in args.streams.split(",") if w)
    if not streams or set(streams) - set(STREAMS):
        ap.error(f"--streams takes {', '.join(STREAMS)}")
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"up", "down"}:
        ap.error("--modes takes up, down")
    if os.geteuid() != 0:
        print("bench/floating_failover.py needs root (network namespaces, wireguard-go)", file=sys.stderr)
        return 2
    with group_lab(args.members, streams=streams) as gl:
        for mode in modes:
            if mode == "down":
                gl.cp.stop()
            gaps, moves, failed = kills(gl, args.kills, args.timeout, args.explain)
            worst = [max(per) for per in zip(*gaps.values(), strict=True)]
            summary("floating_failover", mode=f"control plane {mode}", members=args.members,
                    streams=list(streams), kills=len(worst),
                    gap_p50_ms=ms(percentile(worst, 50)), gap_p99_ms=ms(percentile(worst, 99)),
                    gap_max_ms=ms(max(worst)),
                    by_stream={what: {"p50_ms": ms(percentile(v, 50)), "p99_ms": ms(percentile(v, 99))}
                               for what, v in gaps.items()},
                    moves=moves, failed=failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
