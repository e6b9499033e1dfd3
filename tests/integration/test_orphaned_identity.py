"""A registration that dies between its certificate and its commit leaves nothing behind.

Real parts: DynamoDB Local, the local CA with Mosquitto's ACL files and CRL, a real
Mosquitto, and a registration in its own process killed with SIGKILL at the moment
the store would commit the host (so no ``except`` or ``finally`` of it runs).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from chalicelib.adapters.dynamodb import DynamoStore, ensure_table
from chalicelib.adapters.local_identity import LocalCaIdentity
from chalicelib.adapters.memory import RecordingPublisher
from chalicelib.clock import process_ns
from chalicelib.domain.ids import HostId
from chalicelib.domain.models import EnrollmentKey, Host
from chalicelib.errors import UnavailableError
from chalicelib.service import Deps, Service
from chalicelib.service.ports import IssuedCertificate, PendingIdentity
from skymesh.local.broker import MosquittoBroker
from tests.functional.conftest import wg_public_key

from .conftest import ConnectRefused, Creds, make_csr

REGION = "us-east-1"
GRACE = 300  # Settings.orphan_after


@dataclass
class Clock:
    t: int

    def now(self) -> int:
        return self.t

    def now_ns(self) -> int:
        return process_ns()  # orders changes; the test moves only the seconds


@dataclass(frozen=True)
class Stage:
    endpoint: str
    table: str
    broker: MosquittoBroker
    clock: Clock
    service: Service
    key: EnrollmentKey


@pytest.fixture
def stage(dynamodb_local: str, broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch) -> Stage:
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    table = f"skymesh-orphans-{uuid.uuid4().hex[:10]}"
    ensure_table(table, dynamodb_local, REGION)
    clock = Clock(int(time.time()))
    service = Service(Deps(store=DynamoStore(table, endpoint_url=dynamodb_local, region=REGION),
                           publisher=RecordingPublisher(), identity=broker.identity, clock=clock))
    net = service.networks.create(name="office", ipv4_cidr="100.64.0.0/24")
    key, _token = service.keys.create(networks=[net.id], uses=10)
    return Stage(dynamodb_local, table, broker, clock, service, key)


def _write_creds(directory: Path, name: str, key: Any, certificate_pem: str, ca_pem: str) -> Creds:
    key_path, cert_path, ca_path = directory / f"{name}.key", directory / f"{name}.pem", directory / "ca.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    cert_path.write_text(certificate_pem)
    ca_path.write_text(ca_pem)
    return Creds(ca_path, cert_path, key_path)


# --- the registration that dies ------------------------------------------------------------


class _IssueRecorder(LocalCaIdentity):
    """The local identity that also writes each issued certificate to ``out`` (so the test
    can try it on the broker; a real agent never gets it when the registration dies)."""

    out: Path

    def issue(self, host_id: HostId, csr_pem: str) -> IssuedCertificate:
        issued = super().issue(host_id, csr_pem)
        (self.out / "host_id").write_text(host_id)
        (self.out / "certificate.pem").write_text(issued.certificate_pem)
        (self.out / "ca.pem").write_text(issued.ca_pem)
        return issued


class _DiesAtCommit(DynamoStore):
    def register_host(self, host: Host, key: EnrollmentKey, now: int, **outbox: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def _register_and_die(endpoint: str, table: str, home: str, mqtt: tuple[str, int], key_id: str,
                      csr_pem: str, out: str, now: int) -> None:
    """Child process: a registration on the real adapters, killed at the commit."""
    identity = _IssueRecorder(Path(home), *mqtt)
    identity.out = Path(out)
    store = _DiesAtCommit(table, endpoint_url=endpoint, region=REGION)
    service = Service(Deps(store=store, publisher=RecordingPublisher(), identity=identity,
                           clock=Clock(now)))
    key = store.get_enrollment_key(key_id)
    assert key is not None
    service.hosts.register(key, name="doomed", wg_public_key=wg_public_key(), listen_port=51820,
                           endpoints=[], csr_pem=csr_pem)


@dataclass(frozen=True)
class Orphan:
    host_id: HostId
    creds: Creds


def _kill_a_registration(stage: Stage, tmp_path: Path) -> Orphan:
    key, csr = make_csr()
    out = tmp_path / "child"
    out.mkdir()
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_register_and_die, args=(
        stage.endpoint, stage.table, str(stage.broker.home),
        (stage.broker.connect_host, stage.broker.port), stage.key.id, csr, str(out), stage.clock.now()))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        child.join(timeout=10)
        pytest.fail("the registration did not reach its commit within 60 s")
    assert child.exitcode == -signal.SIGKILL
    host_id = HostId((out / "host_id").read_text())
    creds = _write_creds(out, host_id, key, (out / "certificate.pem").read_text(),
                         (out / "ca.pem").read_text())
    return Orphan(host_id, creds)


def _connects(stage: Stage, creds: Creds, mqtt_connect: Any) -> bool:
    try:
        mqtt_connect(creds)
        return True
    except ConnectRefused:
        return False


def _refused_within(stage: Stage, creds: Creds, mqtt_connect: Any, timeout: float = 5.0) -> bool:
    """Mosquitto re-reads the CRL on the SIGHUP's next loop turn: bounded wait for refusal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _connects(stage, creds, mqtt_connect):
            return True
    return False


def _serials_revoked(identity: LocalCaIdentity) -> set[str]:
    import json
    path = identity.home / "broker" / "revoked.json"
    return set(json.loads(path.read_text())["serials"]) if path.exists() else set()


def _certificate_id(creds: Creds) -> str:
    from chalicelib.adapters import local_ca
    return local_ca.certificate_id(local_ca.load_certificate(creds.cert_path))


@pytest.fixture
def committed(stage: Stage, tmp_path: Path) -> Iterator[tuple[Host, Creds]]:
    key, csr = make_csr()
    reg = stage.service.hosts.register(stage.key, name="kept", wg_public_key=wg_public_key(),
                                       listen_port=51820, endpoints=[], csr_pem=csr)
    d = tmp_path / "kept"
    d.mkdir()
    yield reg.host, _write_creds(d, reg.host.id, key, reg.certificate.certificate_pem,
                                 reg.certificate.ca_pem)


# --- tests -----------------------------------------------------------------------------------


def test_sweeper_removes_the_certificate_and_acl_of_a_registration_killed_before_its_commit(
    stage: Stage, tmp_path: Path, mqtt_connect: Any, committed: tuple[Host, Creds]
) -> None:
    identity = stage.broker.identity
    kept, kept_creds = committed
    orphan = _kill_a_registration(stage, tmp_path)
    fragment = identity.home / "broker" / "acl.d" / orphan.host_id
    acl = identity.home / "broker" / "acl"

    # What the dead registration left: no host, but a live certificate and its ACL fragment.
    assert stage.service.deps.store.get_host(orphan.host_id) is None
    assert fragment.exists() and f"user {orphan.host_id}\n" in acl.read_text()
    assert _connects(stage, orphan.creds, mqtt_connect)

    # Within the bound it may still be registering: left alone.
    stage.clock.t += GRACE
    assert stage.service.orphans.sweep() == []
    assert fragment.exists()

    stage.clock.t += 1
    assert stage.service.orphans.sweep() == [orphan.host_id]
    assert not fragment.exists() and orphan.host_id not in acl.read_text()
    assert _certificate_id(orphan.creds) in _serials_revoked(identity)
    assert _refused_within(stage, orphan.creds, mqtt_connect)
    assert stage.service.deps.store.pending_identities() == []

    # The committed host's identity is untouched, and it still connects and reads.
    assert (identity.home / "broker" / "acl.d" / kept.id).exists()
    assert kept.certificate_id not in _serials_revoked(identity)
    assert _connects(stage, kept_creds, mqtt_connect)
    assert stage.service.orphans.sweep() == []  # nothing left to do


def test_a_registration_slower_than_the_bound_is_refused_and_leaves_nothing(
    stage: Stage, tmp_path: Path
) -> None:
    """The sweeper claims the identity while the registration still runs: the commit
    is then refused (503, retryable), so no host is committed with a withdrawn certificate."""
    identity = stage.broker.identity
    store = stage.service.deps.store
    real_register = store.register_host
    seen: dict[str, HostId] = {}

    def slow_register(host: Host, key: EnrollmentKey, now: int, **outbox: Any) -> None:
        seen["host"] = host.id
        stage.clock.t += GRACE + 1
        assert stage.service.orphans.sweep() == [host.id]
        real_register(host, key, now, **outbox)

    store.register_host = slow_register  # type: ignore[method-assign]
    _key, csr = make_csr()
    with pytest.raises(UnavailableError, match="took too long"):
        stage.service.hosts.register(stage.key, name="slow", wg_public_key=wg_public_key(),
                                     listen_port=51820, endpoints=[], csr_pem=csr)
    host_id = seen["host"]
    assert store.get_host(host_id) is None
    assert not (identity.home / "broker" / "acl.d" / host_id).exists()
    assert store.pending_identities() == []
    assert stage.service.keys.get(stage.key.id).uses_left == 10  # the key's use is not consumed


def test_a_cleanup_that_fails_half_way_is_finished_by_the_next_sweep(
    stage: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = stage.broker.identity
    orphan = _kill_a_registration(stage, tmp_path)
    fragment = identity.home / "broker" / "acl.d" / orphan.host_id
    real_discard = identity.discard

    def broker_down(host_id: HostId, certificate_id: str | None) -> None:
        raise UnavailableError("the broker's files are locked (simulated)")

    monkeypatch.setattr(identity, "discard", broker_down)
    stage.clock.t += GRACE + 1
    assert stage.service.orphans.sweep() == []
    (left,) = stage.service.deps.store.pending_identities()
    assert left == PendingIdentity(orphan.host_id, left.created_at, _certificate_id(orphan.creds),
                                   abandoned=True)
    assert fragment.exists()

    monkeypatch.setattr(identity, "discard", real_discard)
    assert stage.service.orphans.sweep() == [orphan.host_id]
    assert not fragment.exists()
    assert _certificate_id(orphan.creds) in _serials_revoked(identity)
    assert stage.service.deps.store.pending_identities() == []
