"""Registration throughput against the local stack: hosts/s, with zero duplicate addresses.

Starts `skymesh local up` in a temporary home on free loopback ports (real DynamoDB
Local, Mosquitto, HTTP server, local CA), creates a network and a key, then
registers N hosts over HTTP from C concurrent clients, each with its own
WireGuard key and CSR.

    python bench/registration.py [--hosts 500] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import client, host_body, local_stack, stats_ms, summary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    bodies = [host_body(f"h{i}", f"198.18.{i // 250}.{i % 250 + 1}:51820")[0]  # key making is not timed
              for i in range(args.hosts)]
    with local_stack() as info:
        api = client(info["api_url"], info["admin_key"])
        net = api.create_network("bench", "100.64.0.0/16")
        key = api.create_enrollment_key([net["id"]], uses=args.hosts)

        def register(body: dict) -> tuple[dict, float]:
            t = time.perf_counter()
            out = api.register_host(key["token"], body)  # an error answer raises ApiError
            return out, time.perf_counter() - t

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(register, bodies))
        elapsed = time.perf_counter() - t0
        v4 = [o["host"]["addresses"][0]["ipv4"] for o, _ in results]
        v6 = [o["host"]["addresses"][0]["ipv6"] for o, _ in results]
        final = api.get_network(net["id"])
        summary("registration", hosts=args.hosts, concurrency=args.concurrency,
                seconds=round(elapsed, 2), hosts_per_second=round(args.hosts / elapsed, 1),
                duplicate_ipv4=len(v4) - len(set(v4)), duplicate_ipv6=len(v6) - len(set(v6)),
                broadcasts=final["seq"], **stats_ms([r[1] for r in results]))


if __name__ == "__main__":
    main()
