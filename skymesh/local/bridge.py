"""``python -m skymesh.local.bridge``: plays the AWS IoT topic rules for host reports.

The rules are ``SELECT *, topic(3) AS host_id FROM 'sm/h/+/status'`` → Lambda
``host_report``, and the same for the reports that carry latency or ``direct``
(:func:`goes_to_failover`) → Lambda ``failover_report``. Here a control client (CN
``skymesh-control-rules``) subscribes to :data:`HOST_STATUS_FILTER`; the MQTT callback
only enqueues, and one worker thread parses each payload (a JSON object, else logged
and dropped), sets ``host_id`` from the topic (overriding any ``host_id`` in the
payload, as the rule's alias does) and calls the handler with context ``None``.

Any host can publish here, so nothing a payload holds may stop the worker: every
report is handled inside one catch-all and costs at most one log line. If the
worker thread ends anyway, the process exits with status 1, so the supervisor
(``skymesh local up``) sees it and starts a fresh bridge instead of one that
stays up and records nothing.

``failover_report`` runs on a worker and queue of its own, as its rule is a Lambda
of its own on AWS: a slow or failing placement never holds up the status of any
host (a full failover queue drops the event; the scheduled ``failover`` still runs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from chalicelib.adapters.local_identity import ControlCredentials, LocalCaIdentity
from chalicelib.config import HOME, MQTT_HOST, MQTT_PORT
from chalicelib.domain.protocol import HOST_STATUS_FILTER, MAX_MESSAGE_BYTES, host_id_from_status_topic

from .appload import lambda_function, load_app

__all__ = ["RuleBridge", "rule_event", "goes_to_failover", "main", "READY_LINE", "BRIDGE_COMPONENT"]

log = logging.getLogger("local-bridge")  # not under "skymesh": the app's logger

READY_LINE = f"subscribed to {HOST_STATUS_FILTER}"
BRIDGE_COMPONENT = "rules"
_SENTINEL = ("", b"")


def rule_event(topic: str, payload: bytes) -> dict[str, Any] | None:
    """What the topic rule hands the Lambda, or ``None`` when it would not fire
    (IoT Core refuses messages above 128 KB, and fires ``SELECT *`` on JSON objects only)."""
    host_id = host_id_from_status_topic(topic)
    if host_id is None or len(payload) > MAX_MESSAGE_BYTES:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is a RecursionError
        return None
    if not isinstance(doc, dict):
        return None
    doc["host_id"] = host_id
    return doc


def goes_to_failover(event: dict[str, Any]) -> bool:
    """Whether the failover rule fires on a status report too: its ``latency`` or its ``direct``
    (automatic relays: a pair may go direct again) is a non-empty list.

    The one statement of that rule for local mode; its AWS form is the IoT SQL of
    :func:`chalicelib.adapters.aws_iot_policies.failover_report_rule_sql`, which
    ``infra/stack.py`` deploys as ``FailoverReportRule`` (``get(latency, 0)`` or
    ``get(direct, 0)`` is defined). They differ only on a field that is no list, which
    ``failover_report`` drops anyway.
    """
    return any(isinstance(v := event.get(k), list) and len(v) > 0 for k in ("latency", "direct"))


class RuleBridge:
    """Subscribe, queue, and call ``handler(event, None)`` for every valid report, and
    ``failover_handler(event, None)`` for those that carry latency (on a worker of its own)."""

    def __init__(
        self,
        host: str,
        port: int,
        creds: ControlCredentials,
        handler: Callable[[dict[str, Any], Any], Any],
        queue_size: int = 10_000,
        *,
        failover_handler: Callable[[dict[str, Any], Any], Any] | None = None,
    ) -> None:
        self._host, self._port, self._creds = host, port, creds
        self._handler = handler
        self._failover_handler = failover_handler
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=queue_size)
        self._failover_queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_size)
        self.subscribed = threading.Event()
        self.worker_ended = threading.Event()
        self.handled = 0
        self.dropped = 0
        self.failover_handled = 0
        self.failover_dropped = 0
        self._worker = threading.Thread(target=self._work, name="bridge-worker", daemon=True)
        self._failover_worker = threading.Thread(target=self._work_failover, name="bridge-failover",
                                                 daemon=True)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(creds.ca_path), certfile=str(creds.cert_path),
                  keyfile=str(creds.key_path))
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        self._client = c

    # paho thread: never block here -----------------------------------------
    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused the bridge: %s", rc)
            return
        c.subscribe(HOST_STATUS_FILTER, qos=1)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, rcs: list[Any], _p: Any) -> None:
        if rcs and not rcs[0].is_failure:
            log.info("%s", READY_LINE)
            self.subscribed.set()
        else:
            log.error("subscription to %s refused: %s", HOST_STATUS_FILTER, rcs)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.subscribed.clear()
        log.warning("disconnected from the broker (%s); reconnecting", rc)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._queue.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self.dropped += 1
            log.warning("queue full: dropped a report on %s", msg.topic)

    # worker ----------------------------------------------------------------
    def _work(self) -> None:
        try:
            while True:
                topic, payload = self._queue.get()
                if (topic, payload) == _SENTINEL:
                    return
                self._handle(topic, payload)
        finally:
            self.worker_ended.set()

    def _handle(self, topic: str, payload: bytes) -> None:
        """One report: never raises an ``Exception``, logs at most one line for a bad one."""
        try:
            event = rule_event(topic, payload)
        except Exception as e:  # whatever a host sent, the worker goes on
            event = None
            log.warning("parsing a report on %s failed: %s", topic, type(e).__name__)
        if event is None:
            self.dropped += 1
            log.warning("dropped a report on %s: not a JSON object of at most %d bytes (%d bytes)",
                        topic, MAX_MESSAGE_BYTES, len(payload))
            return
        if self._failover_handler is not None and goes_to_failover(event):
            try:  # a copy: host_report may run while failover_report reads it
                self._failover_queue.put_nowait(dict(event))
            except queue.Full:
                self.failover_dropped += 1
                log.warning("failover queue full: a report on %s goes to host_report only", topic)
        try:
            self._handler(event, None)
            self.handled += 1
        except Exception as e:
            # The handler drops bad reports itself; this is the store or a bug, not the host.
            log.error("host_report failed for a report on %s: %s: %s", topic, type(e).__name__,
                      str(e)[:200])

    def _work_failover(self) -> None:
        assert self._failover_handler is not None
        try:
            while (event := self._failover_queue.get()) is not None:
                try:
                    self._failover_handler(event, None)
                    self.failover_handled += 1
                except Exception as e:  # placement failed for this report: the schedule goes on
                    log.error("failover_report failed for a report of %s: %s: %s", event.get("host_id"),
                              type(e).__name__, str(e)[:200])
        finally:
            self.worker_ended.set()

    def start(self, timeout: float = 10.0) -> None:
        """Connect (bounded) and start the worker; the subscription follows on CONNACK."""
        self._worker.start()
        if self._failover_handler is not None:
            self._failover_worker.start()
        self._client.connect_timeout = timeout
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect, then let the worker finish what is queued (bounded)."""
        self._client.disconnect()
        self._client.loop_stop()
        try:
            self._queue.put(_SENTINEL, timeout=timeout)
        except queue.Full:
            return
        self._worker.join(timeout)
        if self._failover_worker.is_alive():
            try:
                self._failover_queue.put(None, timeout=timeout)
            except queue.Full:
                return
            self._failover_worker.join(timeout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m skymesh.local.bridge")
    p.add_argument("--app-module", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("botocore", "pynamodb", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        home = Path(os.environ[HOME])
        host = os.environ[MQTT_HOST]
        port = int(os.environ.get(MQTT_PORT, "8883"))
    except (KeyError, ValueError) as e:
        print(f"bridge: missing or bad environment ({e}); run it via `skymesh local up`",
              file=sys.stderr)
        return 2
    module, app = load_app(args.app_module)
    handler = lambda_function(module, app, "host_report")
    # an app without the failover function (an older one, a test's) has only the status rule
    failover = (lambda_function(module, app, "failover_report")
                if any(fn.name == "failover_report" for fn in app.pure_lambda_functions) else None)
    creds = LocalCaIdentity(home, host, port).issue_control_client(BRIDGE_COMPONENT)
    bridge = RuleBridge(host, port, creds, handler, failover_handler=failover)
    stop_requested = threading.Event()

    def on_signal(*_: Any) -> None:
        stop_requested.set()
        bridge.worker_ended.set()  # wakes the wait below

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        bridge.start()
    except OSError as e:
        print(f"bridge: cannot reach the broker at {host}:{port}: {e}", file=sys.stderr)
        return 2
    while not bridge.worker_ended.wait(3600):
        pass
    if not stop_requested.is_set():
        log.error("the worker thread ended (%d handled, %d dropped); exiting so the "
                  "supervisor starts a new bridge", bridge.handled, bridge.dropped)
        bridge.stop(timeout=2.0)
        return 1
    bridge.stop()
    log.info("stopped (%d handled, %d dropped)", bridge.handled, bridge.dropped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
