"""The agent's MQTT link: awsiotsdk's MQTT5 client over mutual TLS.

The CRT client reconnects by itself with exponential backoff and full jitter
(sized below for a fleet: :data:`RECONNECT_MAX_MS`).
Its callbacks run on CRT threads; this module turns them into events on a
queue that the agent's single worker consumes, so all state changes happen on
one thread, in order.
"""

from __future__ import annotations

import logging
import queue
import random
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("skymesh.agent")

__all__ = ["MqttLink", "Connected", "Disconnected", "Received", "RECONNECT_MIN_MS", "RECONNECT_MAX_MS"]

# Reconnect backoff, sized so that a fleet converges within 10 s of the broker's return.
#
# What the CRT client does (awscrt 0.36, measured with its debug log and bench/reconnect.py):
# it draws the jittered delay first and caps it afterwards, min(uniform(0, R), max), and R is
# tens of seconds already at the first reconnect. With max = 30 s (before issue 7) agents came
# back spread over 0–30 s; with a small max nearly every draw is cut to exactly max, so a fleet
# that lost the broker at one instant retries in lockstep, one wave every max seconds (100
# agents: all within 0.1 s, 5.7 s after the broker's return). The spread therefore comes from
# the cap itself: each link picks its own, uniform in [RECONNECT_MAX/2, RECONNECT_MAX]. After an
# outage of a few caps the phases of N agents are spread over the whole window, and
#   one agent:  converged after <= RECONNECT_MAX + TLS/CONNECT/SUBSCRIBE + one resync
#   the fleet:  about N / RECONNECT_MAX connects per second, each followed by one resync
# Target 10 s, with about 2 s for connect, subscribe and resync under load: RECONNECT_MAX <= 8 s.
# We take 5 s (margin for the resync herd: about N / 5 s GET /config per second).
#
# AWS IoT allows 500 CONNECT/s per account, so the window N agents need is N / 500 s:
#   N / 500 <= RECONNECT_MAX       -> up to 5 s * 500/s = 2,500 agents reconnect unthrottled;
#   N / 500 <= 10 s - 2 s          -> the 10 s target holds up to ~4,000 agents per account
#                                     (throttled connects fail and retry within the same cap);
#   beyond that the account's rate is the bound, not the backoff: 10,000 agents need >= 20 s,
#   and a longer cap would only spread them thinner (fewer rejected CONNECTs, no faster end).
# A connection that lasted 30 s resets the backoff, so a flapping broker cannot make a fleet
# hammer it at RECONNECT_MIN.
RECONNECT_MIN_MS = 500
RECONNECT_MAX_MS = 5_000
RESET_AFTER_CONNECTED_MS = 30_000


@dataclass(frozen=True)
class Connected:
    pass


@dataclass(frozen=True)
class Disconnected:
    reason: str


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes


def _is_aws_iot(endpoint: str) -> bool:
    return endpoint.endswith(".amazonaws.com") or endpoint.endswith(".amazonaws.com.cn")


class MqttLink:
    """One MQTT5 session; events go to ``events``."""

    def __init__(self, *, endpoint: str, port: int, client_id: str, cert_path: Path, key_path: Path,
                 ca_path: Path | None, events: queue.Queue,
                 min_reconnect_ms: int = RECONNECT_MIN_MS, max_reconnect_ms: int | None = None,
                 keep_alive_s: int = 60, will: tuple[str, bytes] | None = None) -> None:
        """``max_reconnect_ms`` None: a cap of its own, uniform in [RECONNECT_MAX_MS/2, RECONNECT_MAX_MS].

        ``will``: (topic, payload) the broker publishes (QoS 1) when it loses this connection without
        a DISCONNECT: at once when the process dies (its socket closes), else after 1.5 × keep-alive."""
        from awscrt import mqtt5
        from awsiot import mqtt5_client_builder

        self._mqtt5 = mqtt5
        self._events = events
        self.endpoint = endpoint
        self.max_reconnect_ms = (random.randint(RECONNECT_MAX_MS // 2, RECONNECT_MAX_MS)
                                 if max_reconnect_ms is None else max_reconnect_ms)
        extra = {}
        if not _is_aws_iot(endpoint):
            # Mosquitto in local mode: IoT Core's client-side limits only slow us down (~10 ms/publish).
            extra["extended_validation_and_flow_control_options"] = (
                mqtt5.ExtendedValidationAndFlowControlOptions.NONE)
        if will is not None:
            # set on every CONNECT the client makes, reconnects included (awsiot: connect_options)
            extra["connect_options"] = mqtt5.ConnectPacket(will=mqtt5.PublishPacket(
                topic=will[0], payload=will[1], qos=mqtt5.QoS.AT_LEAST_ONCE))
        self._last_publish = None
        self._client = mqtt5_client_builder.mtls_from_path(
            endpoint=endpoint, port=port, client_id=client_id,
            cert_filepath=str(cert_path), pri_key_filepath=str(key_path),
            ca_filepath=str(ca_path) if ca_path else None,
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
            keep_alive_interval_sec=keep_alive_s,
            retry_jitter_mode=mqtt5.ExponentialBackoffJitterMode.FULL,
            min_reconnect_delay_ms=min_reconnect_ms, max_reconnect_delay_ms=self.max_reconnect_ms,
            min_connected_time_to_reset_reconnect_delay_ms=RESET_AFTER_CONNECTED_MS,
            connack_timeout_ms=10_000, ack_timeout_sec=15,
            enable_metrics_collection=False,
            on_publish_received=self._on_publish,
            on_lifecycle_connection_success=lambda _d: events.put(Connected()),
            on_lifecycle_connection_failure=self._on_failure,
            on_lifecycle_disconnection=self._on_disconnect,
            **extra,
        )

    def _on_publish(self, data) -> None:  # noqa: ANN001 - awscrt PublishReceivedData
        p = data.publish_packet
        self._events.put(Received(topic=p.topic, payload=bytes(p.payload or b"")))

    def _on_failure(self, data) -> None:  # noqa: ANN001
        log.info("MQTT connect to %s failed: %s", self.endpoint, data.exception)

    def _on_disconnect(self, data) -> None:  # noqa: ANN001
        reason = getattr(data.disconnect_packet, "reason_code", None) or data.exception
        self._events.put(Disconnected(reason=str(reason)))

    def start(self) -> None:
        self._client.start()

    def stop(self, drain_s: float = 2.0) -> None:
        """Disconnect cleanly (no will), after waiting up to ``drain_s`` for the last publish's PUBACK:
        a last word published just before (the agent's offline report) is not lost to the stop."""
        last, self._last_publish = self._last_publish, None
        if last is not None:
            try:
                last.result(drain_s)
            except Exception as e:  # noqa: BLE001 - not connected, timed out: stop anyway
                log.info("stopping MQTT without the last publish's ack: %s", e)
        self._client.stop()

    def subscribe(self, topics: list[str], timeout: float = 15.0) -> list[str]:
        """Subscribe (QoS 1); returns the topics the broker refused."""
        if not topics:
            return []
        m = self._mqtt5
        fut = self._client.subscribe(m.SubscribePacket(subscriptions=[
            m.Subscription(topic_filter=t, qos=m.QoS.AT_LEAST_ONCE) for t in topics]))
        suback = fut.result(timeout)
        return [t for t, code in zip(topics, suback.reason_codes, strict=False) if int(code) >= 0x80]

    def unsubscribe(self, topics: list[str], timeout: float = 15.0) -> None:
        if topics:
            m = self._mqtt5
            self._client.unsubscribe(m.UnsubscribePacket(topic_filters=topics)).result(timeout)

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue a QoS 1 publish; the client sends it when connected (fire and forget)."""
        m = self._mqtt5
        self._last_publish = self._client.publish(m.PublishPacket(topic=topic, payload=payload,
                                                                  qos=m.QoS.AT_LEAST_ONCE))
