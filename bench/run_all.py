"""Run every benchmark with the arguments BENCHMARKS.md reports; print each one's JSON summary.

    python bench/run_all.py [--quick]

``--quick`` uses small sizes (a smoke run, not figures to report). ``apply`` needs
root (network namespaces, wireguard-go) and is skipped, with the reason, without it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BENCHES: list[tuple[str, list[str], list[str]]] = [  # name, full args, quick args
    ("cold_import", ["--runs", "10"], ["--runs", "3"]),
    ("config_handler", ["--hosts", "1000", "--requests", "200"], ["--hosts", "50", "--requests", "20"]),
    ("registration", ["--hosts", "500", "--concurrency", "16"], ["--hosts", "20", "--concurrency", "4"]),
    ("propagation", ["--agents", "1000", "--changes", "5", "--workers", "4"],
     ["--agents", "20", "--changes", "2"]),
    ("reconnect", ["--agents", "100", "--outage", "30"],
     ["--agents", "20", "--outage", "10", "--settle", "1"]),
    ("apply", ["--peers", "1000", "--reps", "30"], ["--peers", "100", "--reps", "3"]),
    ("plan", ["--hosts", "1000", "--gateways", "10", "--clients", "500", "--repeat", "3"],
     ["--hosts", "100", "--clients", "50", "--repeat", "1"]),
    ("placement", ["--hosts", "10000", "--gateways", "10", "--groups", "1", "10", "--repeat", "5"],
     ["--hosts", "1000", "--groups", "1", "10", "--repeat", "1"]),
    ("report_bytes", [], []),
    ("latency_matrix", [], ["--hosts", "100", "--requests", "5"]),
    ("failover", ["--kills", "10"], ["--kills", "2"]),
    ("autorelay", ["--runs", "5"], ["--runs", "1"]),
    ("election_takeover", ["--kills", "50"], ["--kills", "3"]),
    ("floating_dataplane", ["--switches", "30"], ["--switches", "3"]),
    ("floating_failover", ["--kills", "10"], ["--kills", "2"]),
]
ROOT_ONLY = {"apply", "failover", "autorelay", "floating_dataplane",  # network namespaces and wireguard-go
             "floating_failover"}


def _summary(line: str) -> bool:
    """Whether ``line`` is a bench's JSON summary (``bench.common.summary``)."""
    try:
        return "bench" in json.loads(line)
    except (ValueError, TypeError):
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    failed = []
    for name, full, quick in BENCHES:
        if name in ROOT_ONLY and (os.geteuid() != 0 or not shutil.which("wireguard-go")):
            print(f'{{"bench": "{name}", "skipped": "needs root and wireguard-go"}}')
            continue
        out = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"),
                              *(quick if args.quick else full)],
                             cwd=ROOT, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if _summary(line)]
        if out.returncode != 0 or not lines:
            failed.append(name)
            print(f"{name} failed (exit {out.returncode}):\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        print("\n".join(lines), flush=True)  # one summary line per mode (failover: two)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
