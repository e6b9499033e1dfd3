"""Fixtures for tests against real local processes: a Mosquitto with real certificates.

``broker`` starts Mosquitto on a free loopback port in a fresh home; ``mqtt``
connects test clients (paho, MQTT 5) with certificates made by the local CA.
Nothing waits by sleeping: every wait is an event or queue with a timeout.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chalicelib.adapters.local_identity import ControlCredentials, LocalCaIdentity
from skymesh.local.broker import MosquittoBroker, find_mosquitto
from skymesh.local.proc import LocalStackError, free_port

# The bound on every wait for the broker. Only a failing test waits it out, so it is set for a
# loaded CI machine (TLS handshakes on 2 busy cores took over 5 s), not for a quiet one.
WAIT = 15.0


@pytest.fixture
def local_home() -> Iterator[Path]:
    """An empty home directory Mosquitto's own user can reach (so it drops privileges)."""
    d = Path(tempfile.mkdtemp(prefix="skymesh-test-"))
    os.chmod(d, 0o755)
    try:
        yield d / "home"
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def broker(local_home: Path) -> Iterator[MosquittoBroker]:
    """A running Mosquitto (mTLS, ACL, CRL) on a free 127.0.0.1 port."""
    try:
        find_mosquitto()
    except LocalStackError as e:
        pytest.fail(str(e), pytrace=False)
    b = MosquittoBroker(local_home, "127.0.0.1", free_port())
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def identity(broker: MosquittoBroker) -> LocalCaIdentity:
    return broker.identity


@dataclass(frozen=True)
class Creds:
    ca_path: Path
    cert_path: Path
    key_path: Path
    certificate_id: str = ""


def make_csr(common_name: str = "ignored") -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key and a CSR for it, as an agent makes them."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def enroll_host(identity: LocalCaIdentity, host_id: str, directory: Path) -> Creds:
    """Key + CSR made here, certificate from ``identity.issue`` (like a real enrollment)."""
    key, csr = make_csr()
    issued = identity.issue(host_id, csr)  # type: ignore[arg-type]
    key_path, cert_path = directory / f"{host_id}.key", directory / f"{host_id}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    cert_path.write_text(issued.certificate_pem)
    ca_path = directory / "ca.pem"
    ca_path.write_text(issued.ca_pem)
    return Creds(ca_path, cert_path, key_path, issued.certificate_id)


class ConnectRefused(Exception):
    pass


class MqttTestClient:
    """A paho MQTT 5 client whose every operation waits (bounded) for the broker's answer."""

    def __init__(self, host: str, port: int, creds: Creds | ControlCredentials, client_id: str = "") -> None:
        self.host, self.port = host, port
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._acks: dict[int, queue.Queue[Any]] = {}
        self._lock = threading.Lock()
        self._connack: queue.Queue[Any] = queue.Queue()
        self.disconnected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                        reconnect_on_failure=False)
        c.tls_set(ca_certs=str(creds.ca_path), certfile=str(creds.cert_path),
                  keyfile=str(creds.key_path))
        c.connect_timeout = WAIT
        c.on_connect = lambda _c, _u, _f, rc, _p: self._connack.put(rc)
        c.on_disconnect = self._on_disconnect
        c.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self._ack(mid).put(rcs)
        c.on_publish = lambda _c, _u, mid, rc, _p: self._ack(mid).put(rc)
        self.client = c

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.disconnected.set()
        self._connack.put(None)

    def _ack(self, mid: int) -> queue.Queue[Any]:
        with self._lock:
            return self._acks.setdefault(mid, queue.Queue())

    def connect(self) -> None:
        """Connect and wait for a successful CONNACK; :class:`ConnectRefused` otherwise."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise ConnectRefused(f"TLS/TCP refused: {e}") from None
        self.client.loop_start()
        try:
            rc = self._connack.get(timeout=WAIT)
        except queue.Empty:
            raise ConnectRefused("no CONNACK") from None
        if rc is None or rc.is_failure:
            raise ConnectRefused(f"refused: {rc}")

    def subscribe(self, *filters: str) -> list[Any]:
        info = self.client.subscribe([(f, 1) for f in filters])
        return self._ack(info[1]).get(timeout=WAIT)

    def publish(self, topic: str, payload: bytes) -> Any:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
        return self._ack(info.mid).get(timeout=WAIT)

    def barrier(self) -> None:
        """Round trip on this connection: every delivery the broker queued for us
        before this call has been received once it returns."""
        self.publish("sm/barrier", b"")

    def expect(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Wait for ``(topic, payload)``; return what arrived before it."""
        before = []
        while True:
            msg = self.messages.get(timeout=WAIT)
            if msg == (topic, payload):
                return before
            before.append(msg)

    def drain(self) -> list[tuple[str, bytes]]:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_connect(broker: MosquittoBroker) -> Iterator[Callable[..., MqttTestClient]]:
    """``mqtt_connect(creds, client_id="")`` → a connected :class:`MqttTestClient`."""
    clients: list[MqttTestClient] = []

    def connect(creds: Creds | ControlCredentials, *, do_connect: bool = True,
                client_id: str = "") -> MqttTestClient:
        c = MqttTestClient(broker.connect_host, broker.port, creds, client_id)
        clients.append(c)
        if do_connect:
            c.connect()
        return c

    yield connect
    for c in clients:
        c.close()


@contextmanager
def serving(bind: Callable[[], Any]) -> Iterator[Any]:
    """Serve the HTTP server ``bind()`` returns in a thread; shut it down and close it at exit.

    Takes a ``socketserver`` server or Chalice's ``LocalDevServer`` (which wraps one).
    """
    server = bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        getattr(server, "server", server).server_close()
        thread.join(10)
