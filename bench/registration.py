"""Registration throughput against the local stack: hosts/s, with zero duplicate addresses.

Starts `skymesh local up` in a temporary home on free loopback ports (real DynamoDB
Local, Mosquitto, HTTP server, local CA), creates a network and a key, then
registers N hosts over HTTP from C concurrent clients, each with its own
WireGuard key and CSR.

    python bench/registration.py [--hosts 500] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, stats_ms, summary  # noqa: E402


def _call(api: str, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(api + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"skymesh local up exited with {proc.returncode}")
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass  # being written
        time.sleep(0.2)
    raise SystemExit(f"skymesh local up did not write {path} within {timeout:.0f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, x25519
    from cryptography.x509.oid import NameOID

    from skymesh.local.proc import free_port

    def host_body(i: int) -> dict:
        wg = base64.b64encode(x25519.X25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"h{i}")]))
               .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
        return {"name": f"h{i}", "wg_public_key": wg, "listen_port": 51820,
                "endpoints": [f"198.18.{i // 250}.{i % 250 + 1}:51820"],
                "csr_pem": csr.public_bytes(serialization.Encoding.PEM).decode()}

    bodies = [host_body(i) for i in range(args.hosts)]  # host-side key making is not timed
    with tempfile.TemporaryDirectory() as home:
        cmd = [sys.executable, "-m", "skymesh.cli", "local", "up", "--home", home,
               "--api-port", str(free_port()), "--mqtt-port", str(free_port()),
               "--dynamodb-port", str(free_port())]
        with open(os.path.join(home, "stack.err"), "w") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            info = _wait_for(Path(home) / "local.json", proc, 120)
            api, admin = info["api_url"], info["admin_key"]
            code, net = _call(api, "POST", "/v1/networks", admin,
                              {"name": "bench", "ipv4_cidr": "100.64.0.0/16"})
            assert code == 201, net
            code, key = _call(api, "POST", "/v1/enrollment-keys", admin,
                              {"networks": [net["id"]], "uses": args.hosts})
            assert code == 201, key

            def register(body: dict) -> tuple[int, dict, float]:
                t = time.perf_counter()
                code, out = _call(api, "POST", "/v1/hosts", key["token"], body)
                return code, out, time.perf_counter() - t

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                results = list(pool.map(register, bodies))
            elapsed = time.perf_counter() - t0
            failed = [(c, o) for c, o, _ in results if c != 201]
            assert not failed, failed[:3]
            v4 = [o["host"]["addresses"][0]["ipv4"] for _, o, _ in results]
            v6 = [o["host"]["addresses"][0]["ipv6"] for _, o, _ in results]
            _, final = _call(api, "GET", f"/v1/networks/{net['id']}", admin)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        summary("registration", hosts=args.hosts, concurrency=args.concurrency,
                seconds=round(elapsed, 2), hosts_per_second=round(args.hosts / elapsed, 1),
                duplicate_ipv4=len(v4) - len(set(v4)), duplicate_ipv6=len(v6) - len(set(v6)),
                broadcasts=final["seq"], **stats_ms([r[2] for r in results]))


if __name__ == "__main__":
    main()
