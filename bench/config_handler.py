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
import base64
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import dynamodb_local, stats_ms, summary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--known", action="store_true", help="ask as a current agent does (?known=net:seq)")
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
        first = None
        for i in range(args.hosts):
            wg = base64.b64encode(x25519.X25519PrivateKey.generate().public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
            reg = svc.hosts.register(key, name=f"h{i}", wg_public_key=wg, listen_port=51820,
                                     endpoints=[f"198.18.{i // 250}.{i % 250 + 1}:51820"],
                                     csr_pem=csr)
            first = first or reg
        setup_s = time.perf_counter() - t0

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
