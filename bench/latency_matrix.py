"""GET /v1/networks/{id}/latency for a network of N members (default 1,000), each of which
reported 10 latency rows (issue 10: probes).

Runs the real handler (auth, the members' query, one batched read of their statuses without
their peers, the matrix, serialization) on DynamoDB Local through chalice.test.Client; the
publisher and identity are the in-memory adapters. Also counts the store calls the handler
makes, to show it reads the statuses in one batched call, not one read per host.

    python bench/latency_matrix.py [--hosts 1000] [--requests 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import dynamodb_local, in_process_fleet, stats_ms, summary  # noqa: E402

ROWS = 10  # what a host with 10 gateways reports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--profile", action="store_true", help="print where one request's CPU goes")
    args = ap.parse_args()

    with dynamodb_local() as endpoint:
        svc, net, regs, register_s = in_process_fleet(endpoint, args.hosts)
        from chalice.test import Client

        import app as app_module
        from chalicelib.domain import protocol

        t0 = time.perf_counter()
        ids = [r.host.id for r in regs]
        gateways = ids[:ROWS]
        for i, h in enumerate(ids):
            report = {"v": protocol.VERSION, "type": "status", "agent_version": "1.0", "latency": [
                {"host": g, "rtt": 5.0 + (i + j) % 70, "loss": 0, "up": True} for j, g in enumerate(gateways)
                if g != h]}
            assert svc.status.record(h, report)
        setup_s = register_s + time.perf_counter() - t0

        store = svc.deps.store
        calls = {"host_statuses": 0, "get_host": 0}
        for name in calls:
            real = getattr(store, name)

            def counted(*a, _real=real, _name=name, **kw):  # noqa: ANN002, ANN003, ANN202
                calls[_name] += 1
                return _real(*a, **kw)
            setattr(store, name, counted)
        admin = svc.ensure_admin_key()
        samples = []
        with tempfile.TemporaryDirectory() as tmp, Client(app_module.app, project_dir=tmp) as client:
            headers = {"Authorization": f"Bearer {admin}"}
            path = f"/v1/networks/{net.id}/latency"
            for _ in range(3):  # warm connections and caches
                client.http.get(path, headers=headers)
            calls = dict.fromkeys(calls, 0)
            cpu0 = time.process_time()
            for _ in range(args.requests):
                t = time.perf_counter()
                resp = client.http.get(path, headers=headers)
                samples.append(time.perf_counter() - t)
                assert resp.status_code == 200, resp.body
            cpu_ms = (time.process_time() - cpu0) * 1000 / args.requests
            if args.profile:
                import cProfile
                import pstats
                with cProfile.Profile() as prof:
                    client.http.get(path, headers=headers)
                pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
            rows = len(json.loads(resp.body)["rows"])
        summary("latency_matrix", hosts=args.hosts, rows=rows, requests=args.requests,
                cpu_ms_per_request=round(cpu_ms, 2), response_bytes=len(resp.body),
                host_statuses_calls_per_request=calls["host_statuses"] / args.requests,
                get_host_calls_per_request=calls["get_host"] / args.requests,
                setup_seconds=round(setup_s, 1), **stats_ms(samples))


if __name__ == "__main__":
    main()
