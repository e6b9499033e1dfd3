"""One scheduled placement pass (chalicelib.domain.placement) over a large network: CPU time and memory.

N hosts (default 10,000) and G gateways (default 10) on a plane: a host's RTT to a gateway
grows with their distance (2 ms + up to ~150 ms), plus jitter. The observations are what
a minute of reports looks like: 2 % of the hosts never reported (no samples), 5 % of the
samples are older than ``stale_after``, 1 % say down, 1 % carry 5–80 % loss, and one gateway
went silent. The current placement is the previous pass's output on the same hosts without
the jitter, when another gateway was silent (back for 2 minutes now: not settled, so it takes
no latency moves yet), and 1 % new hosts that have none yet. Timed: one
:func:`placement.place_all` over it, for one group (every gateway serves it, every host uses
it) and for 10 groups (each served by 3–10 of the gateways, every host uses all 10: the worst
case, 10 × N placements). Also timed: the cold pass (nobody placed yet).

CPU time is ``time.process_time`` (median of ``--repeat`` runs), memory the peak of what the
pass allocates (tracemalloc, a separate run), moves those of the timed pass. Pure and
in-process: no store, no broker.

    python bench/placement.py [--hosts 10000] [--gateways 10] [--groups 1 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ms, summary  # noqa: E402
from chalicelib.domain.ids import HostId  # noqa: E402
from chalicelib.domain.placement import Group, Observations, Policy, Sample, place_all  # noqa: E402

NOW = 1_000_000
POLICY = Policy()


def world(hosts: int, gateways: int, groups: int, seed: int = 1) -> tuple[
        list[Group], dict[str, dict[HostId, HostId]], Observations, dict[str, dict[HostId, HostId]]]:
    """(groups, the current placement, this minute's observations, an empty placement)."""
    rng = random.Random(seed)
    gws = [HostId(f"host_gw{i:08d}") for i in range(gateways)]
    users = [HostId(f"host_{i:012x}") for i in range(hosts)]
    where = {h: (rng.random(), rng.random()) for h in (*gws, *users)}

    def rtt(u: HostId, g: HostId) -> float:
        return 2 + 150 * math.dist(where[u], where[g])

    if groups == 1:
        group_list = [Group("internet", tuple(gws), tuple(users))]
    else:
        sizes = [min(gateways, 3 + i % max(1, gateways - 2)) for i in range(groups)]  # 3..10 gateways
        group_list = [Group(f"10.{i}.0.0/16", tuple(gws[(i + j) % gateways] for j in range(n)), tuple(users))
                      for i, n in enumerate(sizes)]
    silent, reported = gws[0], dict.fromkeys(gws, NOW - 30)
    silent_earlier = gws[1]

    samples: dict[HostId, dict[HostId, Sample]] = {}
    steady: dict[HostId, dict[HostId, Sample]] = {}
    for u in users:
        if rng.random() < 0.02:
            continue  # never reported
        mine, calm = samples[u], steady[u] = {}, {}
        for g in gws:
            calm[g] = Sample(rtt(u, g), 0.0, True, NOW - 60)
            x = rng.random()
            if x < 0.05:
                mine[g] = Sample(rtt(u, g), 0.0, True, NOW - POLICY.stale_after - 100)
            elif x < 0.06:
                mine[g] = Sample(None, 100.0, False, NOW - 5)
            elif x < 0.07:
                mine[g] = Sample(rtt(u, g) * 1.3, rng.uniform(5, 80), True, NOW - 5)
            else:
                mine[g] = Sample(rtt(u, g) + rng.gauss(0, 2), 0.0, True, NOW - rng.randrange(0, 300))
    # gws[1], silent in the previous pass, reports again since 2 minutes: not settled yet.
    obs = Observations(samples, {**reported, silent: NOW - POLICY.silent_after - 60},
                       up_since={silent_earlier: NOW - 120})

    # The previous pass: no jitter, another gateway was silent then (now back), 1 % not there yet.
    before = Observations(steady, {**reported, silent_earlier: NOW - POLICY.silent_after - 60})
    known = [Group(g.id, g.candidates, tuple(u for i, u in enumerate(g.users) if i % 100))
             for g in group_list]
    previous = place_all(known, {}, before, NOW, POLICY)
    current = {d.group: dict(d.placement) for d in previous}
    return group_list, current, obs, {g.id: {} for g in group_list}


def cpu(fn: Callable[[], object], repeat: int) -> float:
    """Median process CPU time of ``fn`` over ``repeat`` runs, in seconds."""
    out = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        fn()
        out.append(time.process_time() - t0)
    return statistics.median(out)


def peak_kib(fn: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    return round(peak / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--gateways", type=int, default=10)
    ap.add_argument("--groups", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    for groups in args.groups:
        t = time.perf_counter()
        group_list, current, obs, empty = world(args.hosts, args.gateways, groups)
        print(f"built {groups} group(s) in {time.perf_counter() - t:.1f}s", file=sys.stderr)

        scheduled = functools.partial(place_all, group_list, current, obs, NOW, POLICY)
        cold = functools.partial(place_all, group_list, empty, obs, NOW, POLICY)
        decisions = scheduled()
        reasons = Counter(m.reason for d in decisions for m in d.moves)
        summary("placement", hosts=args.hosts, gateways=args.gateways, groups=groups,
                placements=sum(len(d.placement) for d in decisions),
                cpu_ms=ms(cpu(scheduled, args.repeat)), peak_kib=peak_kib(scheduled),
                moves=sum(reasons.values()), moves_by_reason=dict(sorted(reasons.items())),
                stranded=sum(len(d.stranded) for d in decisions),
                cold_cpu_ms=ms(cpu(cold, args.repeat)), cold_peak_kib=peak_kib(cold), repeat=args.repeat)


if __name__ == "__main__":
    main()
