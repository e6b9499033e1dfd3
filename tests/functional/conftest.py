"""Functional tests: the Chalice app through Chalice's local API Gateway, on DynamoDB Local.

Each test gets its own table. Publisher and identity are the in-memory adapters
(recording publisher, throwaway CA) so assertions can read what was broadcast. The
handlers use the test's service through ``wiring.set_service`` (as the Chalice todo
sample's ``get_app_db()``), so what a test sees in ``service`` is what they used.
A module marked ``memory_store`` runs on the in-memory store instead (a fresh one per
test): its tests are about the API, not the database, and the in-memory store is held
to the DynamoDB store's behaviour by tests/contract.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partialmethod
from typing import Any

import pytest
from chalice import Chalice
from chalice.config import Config
from chalice.local import LocalChalice, LocalGateway, LocalGatewayException
from chalice.test import Client, HTTPResponse
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.oid import NameOID

import app as app_module
from chalicelib.adapters.dynamodb import ensure_table
from chalicelib.adapters.memory_store import MemoryStore
from chalicelib.config import StageConfig
from chalicelib.service import Service
from chalicelib.wiring import build_service, set_service


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
    table = f"skymesh-test-{uuid.uuid4().hex[:12]}"
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
def service(stage: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Service]:
    """The service of this test's stage; the app's handlers use it too."""
    service = build_service(StageConfig.from_env(stage))
    if _on_memory(request):
        service.deps.store = MemoryStore()
    set_service(service)
    try:
        yield service
    finally:
        set_service(None)


class GatewayHttp:
    """HTTP into the app through Chalice's local API Gateway, from any number of threads.

    ``chalice.test``'s HTTP client swaps ``os.environ`` for a copy around each call
    (for a stage's variables, which these tests do not use: the service comes from
    ``set_service``); from several threads the swaps restore each other's copies.
    """

    def __init__(self, app: Chalice) -> None:
        self._gateway = LocalGateway(app, Config.create())

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | str | None = b"") -> HTTPResponse:
        data = body.encode() if isinstance(body, str) else body
        try:
            answer = self._gateway.handle_request(method=method.upper(), path=path,
                                                  headers=headers or {}, body=data)
        except LocalGatewayException as e:
            return HTTPResponse(body=e.body or b"", headers=e.headers, status_code=e.CODE)
        return HTTPResponse.create_from_dict(answer)

    get = partialmethod(request, "GET")
    post = partialmethod(request, "POST")
    put = partialmethod(request, "PUT")
    patch = partialmethod(request, "PATCH")
    delete = partialmethod(request, "DELETE")


@dataclass
class Api:
    """JSON over the app's HTTP routes, with bearer tokens; ``client`` for its other functions."""

    client: Client
    http: GatewayHttp
    admin_key: str

    def call(self, method: str, path: str, body: Any = None, token: str | None = "admin",
             raw: bytes | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        bearer = self.admin_key if token == "admin" else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        resp = self.http.request(method, path, headers=headers, body=data)
        payload = json.loads(resp.body) if resp.body else None
        return resp.status_code, payload

    def ok(self, method: str, path: str, body: Any = None, token: str | None = "admin",
           status: int | None = None) -> Any:
        code, payload = self.call(method, path, body, token)
        expected = status or {"POST": 201, "DELETE": 204}.get(method, 200)
        assert code == expected, (code, payload)
        return payload


@pytest.fixture
def api(service: Service, tmp_path: Any) -> Iterator[Api]:
    admin = service.ensure_admin_key()
    # project_dir without .chalice/: no stage variables; the handlers use `service`.
    with Client(app_module.app, project_dir=str(tmp_path)) as client:
        yield Api(client, GatewayHttp(app_module.app), admin)


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
