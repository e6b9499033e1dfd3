"""What every host identity adapter tells a newly registered host about MQTT."""

from __future__ import annotations

from ..domain.ids import HostId
from ..domain.protocol import host_status_topic


class MqttAccess:
    """Where hosts connect, and the topic they report on (the plain status topic by default:
    the local rule bridge subscribes to it; AWS overrides it with Basic Ingest)."""

    def __init__(self, mqtt_endpoint: str, mqtt_port: int) -> None:
        self._endpoint = mqtt_endpoint
        self._port = int(mqtt_port)

    @property
    def mqtt_endpoint(self) -> str:
        return self._endpoint

    @property
    def mqtt_port(self) -> int:
        return self._port

    def status_topic(self, host_id: HostId) -> str:
        return host_status_topic(host_id)
