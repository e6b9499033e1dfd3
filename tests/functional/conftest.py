"""Functional tests: the Chalice app through chalice.test.Client, on DynamoDB Local.

Each test gets its own table. Publisher and identity are the in-memory adapters
(recording publisher, throwaway CA) so assertions can read what was broadcast.
A module marked ``memory_store`` runs on the in-memory store instead (a fresh one per
test): its tests are about the API, not the database, and the in-memory store is held
to the DynamoDB store's behaviour by tests/contract.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from chalice.local import LocalChalice
from chalice.test import BaseClient, Client
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.oid import NameOID

import app as app_module
from chalicelib.adapters.dynamodb import ensure_table
from chalicelib.adapters.memory_store import MemoryStore
from chalicelib.service import Service
from chalicelib.wiring import build_service


@pytest.fixture(scope="session", autouse=True)
def _thread_safe_app() -> None:
    # Chalice keeps current_request on the app; make it per-thread as `chalice local` does,
    # so concurrent requests in tests do not see each other's bodies.
    if not isinstance(app_module.app, LocalChalice):
        app_module.app.__class__ = type("ThreadLocalChalice", (LocalChalice,), {})


def _on_memory(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("memory_store") is not None


@pytest.fixture
def stage(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    table = f"skymesh-test-{uuid.uuid4().hex[:12]}"  # also one service per test (wiring caches by env)
    # On the in-memory store nothing may reach a database: a closed local port, never AWS.
    ddb_endpoint = "http://127.0.0.1:9" if _on_memory(request) else request.getfixturevalue("ddb_endpoint")
    env = {
        "SKYMESH_TABLE": table,
        "SKYMESH_DYNAMODB_ENDPOINT": ddb_endpoint,
        "SKYMESH_PUBLISHER": "memory",
        "SKYMESH_IDENTITY": "memory",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if not _on_memory(request):
        ensure_table(table, ddb_endpoint, "us-east-1")
    return env


@pytest.fixture
def service(stage: dict[str, str], request: pytest.FixtureRequest) -> Service:
    service = build_service()
    if _on_memory(request):
        service.deps.store = MemoryStore()  # the app gets this very service for the test's env
    return service


@dataclass
class Api:
    """JSON over chalice.test.Client, with bearer tokens."""

    client: Client
    admin_key: str

    def call(self, method: str, path: str, body: Any = None, token: str | None = "admin",
             raw: bytes | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        bearer = self.admin_key if token == "admin" else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        resp = getattr(self.client.http, method.lower())(path, headers=headers, body=data)
        payload = json.loads(resp.body) if resp.body else None
        return resp.status_code, payload

    def ok(self, method: str, path: str, body: Any = None, token: str | None = "admin",
           status: int | None = None) -> Any:
        code, payload = self.call(method, path, body, token)
        expected = status or {"POST": 201, "DELETE": 204}.get(method, 200)
        assert code == expected, (code, payload)
        return payload


@contextlib.contextmanager
def _keep_environ(self: Any, environment_variables: dict[str, str]) -> Iterator[None]:
    """chalice.test swaps ``os.environ`` for a copy during each call and back after: calls
    from several threads restore each other's copies, and the stage's variables leak
    into later tests. Here the stage env is set with monkeypatch, so nothing is swapped."""
    assert not environment_variables, "functional tests set the stage's env with monkeypatch"
    yield


@pytest.fixture
def api(service: Service, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    admin = service.ensure_admin_key()
    monkeypatch.setattr(BaseClient, "_patched_env_vars", _keep_environ)
    # project_dir without .chalice/: the stage's env vars come from the test's environment only.
    with Client(app_module.app, project_dir=str(tmp_path)) as client:
        yield Api(client, admin)


def wg_public_key() -> str:
    import base64
    key = x25519.X25519PrivateKey.generate().public_key()
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw)).decode()


_CSR_KEY = ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey | None = None) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = key or _CSR_KEY
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "host")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def host_body(name: str = "h1", **extra: Any) -> dict[str, Any]:
    return {"name": name, "wg_public_key": wg_public_key(), "listen_port": 51820,
            "endpoints": ["198.18.0.10:51820"], "csr_pem": make_csr()[0], **extra}
