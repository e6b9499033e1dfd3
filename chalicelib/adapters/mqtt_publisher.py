"""``Publisher`` over MQTT with mutual TLS (paho-mqtt 2.x): the local stand-in for IoT Data.

One lazily opened connection per publisher object, shared by all threads.
``publish`` sends at QoS 1 and returns only after the broker's PUBACK; if the
broker is unreachable, refuses, or does not acknowledge within ``timeout``
seconds it raises :class:`~chalicelib.errors.UnavailableError`. A dropped
connection is not redialled in the background: the next ``publish`` opens a
fresh one (so a broker that was down for long is used again at once).

The broker forces the MQTT client id to the certificate's CN
(``use_username_as_clientid``), so the identity is the certificate: give each
concurrently running process its own (see ``LocalCaIdentity.issue_control_client``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from ..errors import UnavailableError

__all__ = ["MqttPublisher"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0


def _set_nodelay(sock: Any) -> None:
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Connection:
    """One connected paho client and the PUBACKs it is waiting for."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.settled = threading.Event()  # CONNACK arrived or the connection ended
        self.close_reason = "connection closed"
        self._lock = threading.Lock()
        self._waiting: dict[int, list[Any]] = {}
        self._early: dict[int, ReasonCode | int] = {}
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    # paho thread -------------------------------------------------------------
    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            self.close_reason = f"broker refused the connection: {rc}"
            self.closed.set()
        else:
            self.connected.set()
        self.settled.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.close_reason = f"connection lost ({rc})"
        self.closed.set()
        self.settled.set()
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for slot in waiting.values():
            slot[1] = None
            slot[0].set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode | int, _p: Any) -> None:
        with self._lock:
            slot = self._waiting.pop(mid, None)
            if slot is None:
                self._early[mid] = rc
                return
        slot[1] = rc
        slot[0].set()

    # caller threads ----------------------------------------------------------
    def publish(self, topic: str, payload: bytes, deadline: float) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise UnavailableError(f"MQTT publish to {topic} failed: {mqtt.error_string(info.rc)}")
        slot: list[Any] = [threading.Event(), None]
        with self._lock:
            if info.mid in self._early:
                slot[1] = self._early.pop(info.mid)
                slot[0].set()
            elif self.closed.is_set():
                raise UnavailableError(f"MQTT publish to {topic} failed: {self.close_reason}")
            else:
                self._waiting[info.mid] = slot
        if not slot[0].wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                self._waiting.pop(info.mid, None)
            raise UnavailableError(f"MQTT broker did not acknowledge a publish to {topic} in time")
        rc = slot[1]
        if rc is None:
            raise UnavailableError(f"MQTT publish to {topic} failed: {self.close_reason}")
        if isinstance(rc, ReasonCode) and rc.is_failure:
            raise UnavailableError(f"MQTT broker refused a publish to {topic}: {rc}")

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


class MqttPublisher:
    """Thread-safe QoS 1 publisher over mutual TLS; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        ca_path: str | Path,
        cert_path: str | Path,
        key_path: str | Path,
        client_id: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._host = host
        self._port = int(port)
        self._ca = str(ca_path)
        self._cert = str(cert_path)
        self._key = str(key_path)
        # The broker replaces it by the certificate's CN; it matters on brokers that don't.
        self._client_id = client_id or f"skymesh-control-{os.getpid()}-{secrets.token_hex(4)}"
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: _Connection | None = None

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the PUBACK (at most ``timeout`` seconds in all).

        Raises :class:`UnavailableError` when the broker is unreachable, refuses
        the connection or the message, or does not acknowledge in time.
        """
        deadline = time.monotonic() + self._timeout
        for attempt in (1, 2):
            conn = self._connection(deadline)
            try:
                conn.publish(topic, payload, deadline)
                return
            except UnavailableError:
                if not conn.closed.is_set():
                    raise
                self._discard(conn)
                # The connection died under us (e.g. the broker restarted): one more
                # try on a fresh one. QoS 1 is at-least-once, so a duplicate is fine.
                if attempt == 2 or time.monotonic() >= deadline:
                    raise

    def close(self) -> None:
        """Disconnect; a later ``publish`` connects again."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # --- internals ----------------------------------------------------------
    def _discard(self, conn: _Connection) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        conn.close()

    def _connection(self, deadline: float) -> _Connection:
        # Another thread may be connecting; wait for it no longer than our own deadline.
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise UnavailableError(f"MQTT broker {self._host}:{self._port}: connecting timed out")
        try:
            conn = self._conn
            if conn is not None and conn.connected.is_set() and not conn.closed.is_set():
                return conn
            self._conn = None
            if conn is not None:
                conn.close()
            conn = self._connect(deadline)
            self._conn = conn
            return conn
        finally:
            self._lock.release()

    def _connect(self, deadline: float) -> _Connection:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        try:
            client.tls_set(
                ca_certs=self._ca,
                certfile=self._cert,
                keyfile=self._key,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError) as e:
            raise UnavailableError(f"cannot load MQTT client TLS files: {e}") from None
        client.connect_timeout = max(0.1, deadline - time.monotonic())
        client.on_socket_open = lambda _c, _u, sock: _set_nodelay(sock)
        conn = _Connection(client)
        where = f"{self._host}:{self._port}"
        try:
            client.connect(self._host, self._port, keepalive=60)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise UnavailableError(f"MQTT broker {where} unreachable: {e}") from None
        client.loop_start()
        conn.settled.wait(max(0.0, deadline - time.monotonic()))
        if not conn.connected.is_set() or conn.closed.is_set():
            reason = conn.close_reason if conn.closed.is_set() else "no CONNACK in time"
            conn.close()
            raise UnavailableError(f"MQTT broker {where}: {reason}")
        return conn
