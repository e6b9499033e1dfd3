"""Cold `import app` time: what a Lambda cold start pays before the first request.

Each sample is a fresh interpreter (`python -c`), timing only the import.

    python bench/cold_import.py [--runs 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, stats_ms, summary  # noqa: E402

PROBE = ("import time; t = time.perf_counter(); import app; "
         "print(time.perf_counter() - t)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    samples = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, check=True,
                             capture_output=True, text=True, timeout=60)
        samples.append(float(out.stdout.strip()))
    summary("cold_import", runs=args.runs, **stats_ms(samples))


if __name__ == "__main__":
    main()
