"""Shared bits of the benchmarks: percentiles, a DynamoDB Local to run against, the summary line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from skymesh.client import ApiClient  # noqa: E402 - after the path above

API_TIMEOUT = 60.0  # seconds per call: generous, a loaded machine answers slowly; still bounded


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


def in_process_fleet(endpoint: str, hosts: int) -> tuple[Any, Any, list[Any], float]:
    """The app's service on a new table at ``endpoint`` (the in-memory publisher and identity, as
    the handlers of ``import app`` will use), and a network "bench" of ``hosts`` hosts registered
    through it: (service, network, registrations in order, setup seconds)."""
    import base64
    import uuid

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, x25519
    from cryptography.x509.oid import NameOID

    table = f"bench-{uuid.uuid4().hex[:8]}"
    os.environ.update({
        "SKYMESH_TABLE": table, "SKYMESH_DYNAMODB_ENDPOINT": endpoint,
        "SKYMESH_PUBLISHER": "memory", "SKYMESH_IDENTITY": "memory",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    })
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
    regs = []
    for i in range(hosts):
        wg = base64.b64encode(x25519.X25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
        regs.append(svc.hosts.register(key, name=f"h{i}", wg_public_key=wg, listen_port=51820,
                                       endpoints=[f"198.18.{i // 250}.{i % 250 + 1}:51820"], csr_pem=csr))
    return svc, net, regs, time.perf_counter() - t0


def client(api: str, token: str) -> ApiClient:
    """The shared REST client for ``api`` with ``token``, bounded by :data:`API_TIMEOUT` per call."""
    return ApiClient(api, token, timeout=API_TIMEOUT)


def call(api: str, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    """One REST call through the shared client; returns (status, JSON body) also for 4xx/5xx."""
    answer = client(api, token).answer(method, path, body)
    return answer.status, answer.json() or {}


@contextlib.contextmanager
def local_stack(home: str | None = None) -> Iterator[dict]:
    """``skymesh local up`` in a temporary home on free loopback ports; yields its local.json."""
    from skymesh.local.proc import free_port

    with contextlib.ExitStack() as stack:
        if home is None:
            home = stack.enter_context(tempfile.TemporaryDirectory())
        cmd = [sys.executable, "-m", "skymesh.cli", "local", "up", "--home", home,
               "--api-port", str(free_port()), "--mqtt-port", str(free_port()),
               "--dynamodb-port", str(free_port())]
        with open(os.path.join(home, "stack.err"), "w") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            path, deadline = Path(home) / "local.json", time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"skymesh local up exited with {proc.returncode}; see {home}/stack.err")
                if time.monotonic() > deadline:
                    raise SystemExit(f"skymesh local up did not write {path} within 120s")
                try:
                    info = json.loads(path.read_text())
                    break
                except (FileNotFoundError, ValueError):
                    time.sleep(0.2)  # not written yet
            yield {**info, "home": home}
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def host_body(name: str, endpoint: str) -> tuple[dict, str]:
    """A registration body with fresh keys (made here, as an agent would); returns it and the TLS key PEM."""
    from agent import keys

    wg, tls = keys.new_wireguard_key(), keys.new_tls_key()
    return ({"name": name, "wg_public_key": keys.wireguard_public_key(wg), "listen_port": 51820,
             "endpoints": [endpoint], "csr_pem": keys.csr_pem(tls, name)}, tls)


def register_hosts(api: str, admin: str, count: int, concurrency: int = 16) -> tuple[dict, list[dict]]:
    """One network and ``count`` hosts registered in it (keys made here, as agents would).

    Returns the network and, per host, what a simulated agent needs to run: its id, token,
    certificate, TLS key, WireGuard key, the broker's address and the CA.
    """
    from agent import keys

    admin_api = client(api, admin)
    net = admin_api.create_network("bench", "100.64.0.0/16")
    key = admin_api.create_enrollment_key([net["id"]], uses=count)

    def register(i: int) -> dict:
        body, tls = host_body(f"a{i}", f"198.18.{i // 250}.{i % 250 + 1}:51820")
        out = admin_api.register_host(key["token"], body)
        return {"api": api, "host_id": out["host"]["id"], "name": out["host"]["name"],
                "host_token": out["host_token"], "certificate_pem": out["certificate_pem"],
                "ca_pem": out["ca_pem"], "mqtt_endpoint": out["mqtt"]["endpoint"],
                "mqtt_port": out["mqtt"]["port"], "tls_key": tls, "wg_key": keys.new_wireguard_key()}

    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        hosts = list(pool.map(register, range(count)))
    print(f"registered {count} hosts in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return net, hosts


def register_fleet(api: str, admin: str, agents: int, concurrency: int,
                   tmp: Path) -> tuple[dict, dict, list[dict], Any, Path]:
    """``agents`` + 1 hosts registered: (network, the extra host the bench changes, the agents' hosts,
    the /config they all start from (one fetch: members are network-wide), the CA file)."""
    from agent.api import ApiClient

    net, hosts = register_hosts(api, admin, agents + 1, concurrency)
    target, hosts = hosts[-1], hosts[:-1]
    shared = ApiClient(api, hosts[0]["host_token"]).config(hosts[0]["host_id"])
    ca = tmp / "ca.pem"
    ca.write_text(hosts[0]["ca_pem"])
    return net, target, hosts, shared, ca


def network_seq(api: str, admin: str, net_id: str) -> int:
    """The network's current sequence number (bumped by every change of its content)."""
    return int(client(api, admin).get_network(net_id)["seq"])
