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
import base64
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import dynamodb_local, stats_ms, summary  # noqa: E402

ROWS = 10  # what a host with 10 gateways reports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--profile", action="store_true", help="print where one request's CPU goes")
    args = ap.parse_args()

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, x25519
    from cryptography.x509.oid import NameOID

    with dynamodb_local() as endpoint:
        table = f"bench-{uuid.uuid4().hex[:8]}"
        os.environ.update({
            "SKYMESH_TABLE": table, "SKYMESH_DYNAMODB_ENDPOINT": endpoint,
            "SKYMESH_PUBLISHER": "memory", "SKYMESH_IDENTITY": "memory",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
        })
        from chalice.test import Client

        import app as app_module
        from chalicelib.adapters.dynamodb import ensure_table
        from chalicelib.domain import protocol
        from chalicelib.wiring import get_service

        ensure_table(table, endpoint, "us-east-1")
        svc = get_service()
        net = svc.networks.create(name="bench", ipv4_cidr="100.64.0.0/16")
        key, _ = svc.keys.create(networks=[net.id], unlimited=True)
        tls = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h")]))
               .sign(tls, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
        t0 = time.perf_counter()
        ids = []
        for i in range(args.hosts):
            wg = base64.b64encode(x25519.X25519PrivateKey.generate().public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
            ids.append(svc.hosts.register(key, name=f"h{i}", wg_public_key=wg, listen_port=51820,
                                          endpoints=[f"198.18.{i // 250}.{i % 250 + 1}:51820"],
                                          csr_pem=csr).host.id)
        gateways = ids[:ROWS]
        for i, h in enumerate(ids):
            report = {"v": protocol.VERSION, "type": "status", "agent_version": "1.0", "latency": [
                {"host": g, "rtt": 5.0 + (i + j) % 70, "loss": 0, "up": True} for j, g in enumerate(gateways)
                if g != h]}
            assert svc.status.record(h, report)
        setup_s = time.perf_counter() - t0

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
            import json
            rows = len(json.loads(resp.body)["rows"])
        summary("latency_matrix", hosts=args.hosts, rows=rows, requests=args.requests,
                cpu_ms_per_request=round(cpu_ms, 2), response_bytes=len(resp.body),
                host_statuses_calls_per_request=calls["host_statuses"] / args.requests,
                get_host_calls_per_request=calls["get_host"] / args.requests,
                setup_seconds=round(setup_s, 1), **stats_ms(samples))


if __name__ == "__main__":
    main()
