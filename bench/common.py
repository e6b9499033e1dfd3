"""Shared bits of the benchmarks: percentiles, a DynamoDB Local to run against, the summary line."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(name: str, **fields: Any) -> None:
    """Print the JSON summary line every bench ends with."""
    print(json.dumps({"bench": name, **fields}, sort_keys=True))


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def stats_ms(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": ms(percentile(samples, 50)), "p99_ms": ms(percentile(samples, 99)),
            "mean_ms": ms(statistics.fmean(samples)), "max_ms": ms(max(samples))}


@contextlib.contextmanager
def dynamodb_local() -> Iterator[str]:
    """An in-memory DynamoDB Local on a free loopback port (or $SKYMESH_TEST_DYNAMODB_ENDPOINT)."""
    if os.environ.get("SKYMESH_TEST_DYNAMODB_ENDPOINT"):
        yield os.environ["SKYMESH_TEST_DYNAMODB_ENDPOINT"]
        return
    from skymesh.local.dynamodb import DynamoDBLocal, install
    from skymesh.local.proc import free_port

    with tempfile.TemporaryDirectory() as tmp:
        db = DynamoDBLocal(free_port(), in_memory=True, directory=install(),
                           log_path=Path(tmp) / "ddb.log")
        db.start()
        try:
            yield db.endpoint_url
        finally:
            db.stop()
