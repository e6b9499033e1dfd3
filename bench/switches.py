"""Switches under noise: how often the failover functions' placement moves a host for latency when
its RTTs only wobble (issue 10, scenario 5's figure).

N hosts (default 500) on G gateways (default 3, as the HA lab) are placed once, then placed again
R times (default 1,000: one placement *decision* per host per run, as one report of each host
reaching :func:`chalicelib.domain.placement.place_all`; at the schedule's one pass a minute, R runs
are R minutes of reports). Each host has a base RTT per gateway: its own level (1–50 ms) plus a
per-gateway offset in ``[0, spread)``. Between runs the RTTs change by one of these noises:

- ``band``: every sample is the base plus an independent uniform draw in ``±amplitude`` (a fresh
  draw each run: jitter, not drift);
- ``walk``: every RTT takes a uniform step in ``±amplitude`` per run (drift; clipped at 0.05 ms);
- ``scenario5``: scenario 5's jitter phase: the host's current gateway is its base plus a uniform
  draw in ``delay ± jitter`` (4 ± 3 ms), the others stay at the base (spread 0);

each with the policy's hysteresis (10 ms and two thirds) and, as the control, without it (a host
switches to any lower RTT: ``Policy(hysteresis_ms=0, hysteresis_ratio=1)``). Counted: the latency
switches (moves for ``better``) and all moves, per host per 1,000 decisions and per host-hour at
one decision a minute. Pure and in-process.

    python bench/switches.py [--hosts 500] [--gateways 3] [--runs 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import summary  # noqa: E402
from chalicelib.domain.ids import HostId  # noqa: E402
from chalicelib.domain.placement import Group, Observations, Policy, Sample, place_all  # noqa: E402

HYSTERESIS = Policy()
NONE = Policy(hysteresis_ms=0.0, hysteresis_ratio=1.0)
PER_HOUR = 60  # decisions a host-hour at the schedule's one pass a minute
START = 1_000_000

# (name, noise, amplitude ms, spread ms): the band noises stay inside the band (±5 ms: two draws
# differ by < 10 ms) or straddle it (±10 ms), with gateways equal or a few ms apart.
CASES = [
    ("band", 2.5, 0.0), ("band", 5.0, 0.0), ("band", 5.0, 5.0), ("band", 10.0, 0.0),
    ("walk", 0.5, 0.0), ("walk", 0.5, 10.0), ("walk", 2.0, 0.0),
    ("scenario5", 3.0, 0.0),
]


def simulate(noise: str, amplitude: float, spread: float, policy: Policy, hosts: int, gateways: int,
             runs: int, seed: int) -> Counter[str]:
    """Moves by reason over ``runs`` placements after the first (which places everyone)."""
    rng = random.Random(seed)
    gws = [HostId(f"host_gw{i:04d}") for i in range(gateways)]
    users = [HostId(f"host_{i:08x}") for i in range(hosts)]
    base = {u: {g: level + rng.uniform(0, spread) for g in gws}
            for u in users for level in [rng.uniform(1, 50)]}
    walk = {u: dict(rtts) for u, rtts in base.items()}
    group = Group("198.19.5.0/24", tuple(gws), tuple(users))
    current: dict[HostId, HostId] = {}

    def rtt(u: HostId, g: HostId) -> float:
        if noise == "band":
            return max(0.05, base[u][g] + rng.uniform(-amplitude, amplitude))
        if noise == "walk":
            walk[u][g] = max(0.05, walk[u][g] + rng.uniform(-amplitude, amplitude))
            return walk[u][g]
        # scenario5: the gateway the host is on is 4 ± 3 ms slower than its base, the others not
        return base[u][g] + (4.0 + rng.uniform(-amplitude, amplitude) if current.get(u) == g else 0.0)

    moves: Counter[str] = Counter()
    for run in range(runs + 1):
        now = START + 60 * run
        obs = Observations(samples={u: {g: Sample(rtt(u, g), at=now) for g in gws} for u in users},
                           reported_at=dict.fromkeys(gws, now))
        (decision,) = place_all([group], {group.id: current}, obs, now, policy)
        if run:
            moves.update(m.reason for m in decision.moves)
        current = dict(decision.placement)
    return moves


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--hosts", type=int, default=500)
    p.add_argument("--gateways", type=int, default=3)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    decisions = a.hosts * a.runs
    per_1000: Callable[[int], float] = lambda n: round(1000 * n / decisions, 3)  # noqa: E731
    rows = []
    for noise, amplitude, spread in CASES:
        row: dict[str, object] = {"noise": noise, "amplitude_ms": amplitude, "spread_ms": spread}
        for label, policy in (("hysteresis", HYSTERESIS), ("none", NONE)):
            moves = simulate(noise, amplitude, spread, policy, a.hosts, a.gateways, a.runs, a.seed)
            row[label] = {"switches_per_1000": per_1000(moves["better"]),
                          "switches_per_host_hour": round(PER_HOUR * moves["better"] / decisions, 4),
                          "moves_per_1000": per_1000(sum(moves.values())),
                          "by_reason": dict(sorted(moves.items()))}
        rows.append(row)
    summary("switches", hosts=a.hosts, gateways=a.gateways, runs=a.runs, seed=a.seed, decisions=decisions,
            cases=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
