"""The agent's MQTT link (awsiotsdk MQTT5) against a real Mosquitto with real certificates.

Connect, subscribe, receive, publish, a subscribe that cannot succeed, and the
reconnect after the broker restarts. Every wait is a queue read with a bound.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from agent.mqtt import Connected, Disconnected, MqttLink, Received

from .conftest import WAIT, enroll_host

NET = "net_aaaa"
INBOX, NETWORK, STATUS = "sm/h/host_a/in", f"sm/n/{NET}", "sm/h/host_a/status"


def next_event(events: queue.Queue, kind: type, timeout: float = WAIT) -> object:
    """The next event of ``kind`` (others before it are skipped), within ``timeout``."""
    while True:
        ev = events.get(timeout=timeout)
        if isinstance(ev, kind):
            return ev


@pytest.fixture
def link(broker, identity, tmp_path) -> Iterator[tuple[MqttLink, queue.Queue]]:
    creds = enroll_host(identity, "host_a", tmp_path)
    identity.set_networks("host_a", [NET])
    events: queue.Queue = queue.Queue()
    # Short reconnect delays so that the restart test waits for the broker, not for the backoff.
    lk = MqttLink(endpoint=broker.connect_host, port=broker.port, client_id="host_a",
                  cert_path=creds.cert_path, key_path=creds.key_path, ca_path=creds.ca_path, events=events,
                  min_reconnect_ms=100, max_reconnect_ms=500)
    lk.start()
    try:
        yield lk, events
    finally:
        lk.stop()


@pytest.fixture
def control(identity, mqtt_connect):
    return mqtt_connect(identity.issue_control_client("test"))


def test_connect_subscribe_receive_and_publish(link, control):
    lk, events = link
    next_event(events, Connected)
    assert lk.subscribe([INBOX, NETWORK], timeout=WAIT) == []
    control.subscribe(STATUS)
    control.publish(NETWORK, b"delta")
    control.publish(INBOX, b"command")
    got = {(e.topic, e.payload) for e in (next_event(events, Received), next_event(events, Received))}
    assert got == {(NETWORK, b"delta"), (INBOX, b"command")}
    lk.publish(STATUS, b"report")
    assert control.expect(STATUS, b"report") == []
    lk.unsubscribe([NETWORK], timeout=WAIT)
    control.publish(NETWORK, b"not for us any more")
    control.publish(INBOX, b"marker")
    assert next_event(events, Received) == Received(INBOX, b"marker")  # the broadcast was not delivered


def test_a_subscribe_that_cannot_succeed_raises_so_the_agent_retries(link):
    lk, events = link
    next_event(events, Connected)
    with pytest.raises(Exception):  # noqa: B017 - the CRT's own error type: any exception means "retry"
        lk.subscribe(["sm/#/not-a-filter"], timeout=WAIT)
    assert lk.subscribe([], timeout=WAIT) == []


def test_the_link_reconnects_after_the_broker_restarts(broker, identity, link, mqtt_connect):
    lk, events = link
    next_event(events, Connected)
    assert lk.subscribe([INBOX], timeout=WAIT) == []
    broker.stop()
    next_event(events, Disconnected)
    broker.start()
    next_event(events, Connected)  # clean session: the agent subscribes again on every connect
    assert lk.subscribe([INBOX], timeout=WAIT) == []
    control = mqtt_connect(identity.issue_control_client("after"))
    control.publish(INBOX, b"after the restart")
    assert next_event(events, Received) == Received(INBOX, b"after the restart")
