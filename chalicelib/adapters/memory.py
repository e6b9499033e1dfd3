"""In-memory adapters for tests and dry runs: a publisher that records, an identity that
signs with a throwaway CA. Never used by a deployed stage."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..domain.ids import HostId, NetworkId
from ..errors import UnavailableError
from ..service.ports import IssuedCertificate
from .mqtt_access import MqttAccess


@dataclass(frozen=True)
class Published:
    topic: str
    payload: bytes


class RecordingPublisher:
    """Keeps every message; ``fail`` makes publishing fail as a down broker would."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[Published] = []
        self.fail = False

    def publish(self, topic: str, payload: bytes) -> None:
        if self.fail:
            raise UnavailableError("the broker is unreachable (simulated)")
        with self._lock:
            self.messages.append(Published(topic, payload))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [m.payload for m in self.messages if m.topic == topic]


class MemoryIdentity(MqttAccess):
    """Issues certificates from the CSR with a throwaway CA; remembers permissions."""

    def __init__(self, mqtt_endpoint: str = "127.0.0.1", mqtt_port: int = 8883) -> None:
        from . import local_ca

        self._local_ca = local_ca
        self._ca = local_ca.create_ca("skymesh test CA", days=1)
        self._lock = threading.Lock()
        self.networks: dict[HostId, tuple[NetworkId, ...]] = {}
        self.revoked: set[str] = set()
        self.removed_networks: list[NetworkId] = []
        self.discarded: list[tuple[HostId, str | None]] = []
        MqttAccess.__init__(self, mqtt_endpoint, mqtt_port)

    def issue(self, host_id: HostId, csr_pem: str) -> IssuedCertificate:
        cert = self._local_ca.sign_csr(self._ca, csr_pem, host_id, days=1)
        return IssuedCertificate(self._local_ca.cert_pem(cert), self._local_ca.certificate_id(cert),
                                 self._ca.cert_pem)

    def set_networks(self, host_id: HostId, network_ids: Sequence[NetworkId]) -> None:
        with self._lock:
            self.networks[host_id] = tuple(network_ids)

    def revoke(self, host_id: HostId, certificate_id: str) -> None:
        with self._lock:
            self.networks.pop(host_id, None)
            self.revoked.add(certificate_id)

    def remove_network(self, network_id: NetworkId) -> None:
        with self._lock:
            self.removed_networks.append(network_id)

    def discard(self, host_id: HostId, certificate_id: str | None) -> None:
        with self._lock:
            self.networks.pop(host_id, None)
            if certificate_id is not None:
                self.revoked.add(certificate_id)
            self.discarded.append((host_id, certificate_id))
