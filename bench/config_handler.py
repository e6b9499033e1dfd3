"""GET /v1/hosts/{id}/config handler time for a network of N hosts (default 1,000).

Runs the real handler (auth, DynamoDB Local query, topology, serialization) through
chalice.test.Client; the publisher and identity are the in-memory adapters, since
they play no part in this call.

    python bench/config_handler.py [--hosts 1000] [--requests 300] [--known]

``--known``: the call an agent makes when it reconnects and is current
(``?known=<network>:<seq>``): the answer names no member.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import dynamodb_local, in_process_fleet, stats_ms, summary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--known", action="store_true", help="ask as a current agent does (?known=net:seq)")
    args = ap.parse_args()

    with dynamodb_local() as endpoint:
        svc, net, regs, setup_s = in_process_fleet(endpoint, args.hosts)
        first = regs[0]
        from chalice.test import Client

        import app as app_module

        samples = []
        with tempfile.TemporaryDirectory() as tmp, Client(app_module.app, project_dir=tmp) as client:
            headers = {"Authorization": f"Bearer {first.host_token}"}
            path = f"/v1/hosts/{first.host.id}/config"
            if args.known:
                path += f"?known={net.id}:{svc.networks.get(net.id).seq}"
            cpu0 = time.process_time()
            for _ in range(10):  # warm connections and caches
                client.http.get(path, headers=headers)
            for _ in range(args.requests):
                t = time.perf_counter()
                resp = client.http.get(path, headers=headers)
                samples.append(time.perf_counter() - t)
                assert resp.status_code == 200, resp.body
            cpu_ms = (time.process_time() - cpu0) * 1000 / (args.requests + 10)
            size = len(resp.body)
        summary("config_handler", hosts=args.hosts, requests=args.requests, known=args.known,
                cpu_ms_per_request=round(cpu_ms, 2), response_bytes=size,
                setup_seconds=round(setup_s, 1), **stats_ms(samples))


if __name__ == "__main__":
    main()
