"""Scheduler and rule bridge: the stand-ins for EventBridge and the IoT topic rule."""

from __future__ import annotations

import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chalicelib.config import HOME, MQTT_HOST, MQTT_PORT
from skymesh.local.appload import load_app
from skymesh.local.bridge import READY_LINE, RuleBridge, goes_to_failover, rule_event
from skymesh.local.scheduler import Scheduler, parse_rate, scheduled_event, schedules_of

from .conftest import enroll_host

REPO = Path(__file__).resolve().parents[2]

FAKE_APP = '''
import json, os, queue
from chalice import Chalice, Rate, Cron

app = Chalice(app_name="fake")
CALLS = queue.Queue()

@app.schedule(Rate(2, unit=Rate.MINUTES), name="tick")
def tick(event):
    CALLS.put(("tick", event.to_dict()))
    out = os.environ.get("FAKE_APP_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(event.to_dict()) + "\\n")
    return {"ok": True}

@app.schedule("rate(1 hour)", name="hourly")
def hourly(event):
    CALLS.put(("hourly", event.to_dict()))

@app.schedule(Cron(0, 10, "*", "*", "?", "*"), name="at_ten")
def at_ten(event):
    CALLS.put(("at_ten", None))

@app.lambda_function(name="host_report")
def report_handler(event, context):
    if event.get("end_the_worker"):  # stands for a bug no catch-all sees (BaseException)
        raise SystemExit("the worker thread ends here")
    CALLS.put(("host_report", event))
    out = os.environ.get("FAKE_APP_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(event) + "\\n")
    return {"recorded": True}

@app.lambda_function(name="failover_report")
def failover_handler(event, context):
    out = os.environ.get("FAKE_APP_FAILOVER_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(event) + "\\n")
    return {"moved": 0}
'''


@pytest.fixture
def fake_app(tmp_path, monkeypatch):
    name = f"fakeapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FAKE_APP))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def test_parse_rate():
    assert parse_rate("rate(1 minute)") == 60
    assert parse_rate("rate(5 minutes)") == 300
    assert parse_rate("rate(2 hours)") == 7200
    assert parse_rate("rate(1 day)") == 86400
    for bad in ("rate(0 minutes)", "cron(0 10 * * ? *)", "rate(5 seconds)"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_scheduled_event_shape():
    e = scheduled_event("tick", "us-east-1")
    assert e["detail-type"] == "Scheduled Event" and e["source"] == "aws.events"
    assert e["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/tick"]


def test_schedules_read_from_the_app(fake_app):
    found = {s.name: s.period for s in schedules_of(fake_app, fake_app.app)}
    assert found == {"tick": 120, "hourly": 3600}  # cron is reported and skipped


def test_scheduler_runs_each_schedule_repeatedly(fake_app):
    sched = Scheduler(schedules_of(fake_app, fake_app.app, every=0.05), "us-east-1",
                      run_now=True)
    sched.start()
    try:
        seen: dict[str, int] = {}
        deadline = time.monotonic() + 5
        while min(seen.get("tick", 0), seen.get("hourly", 0)) < 3:
            name, event = fake_app.CALLS.get(timeout=max(0.01, deadline - time.monotonic()))
            seen[name] = seen.get(name, 0) + 1
            assert event["detail-type"] == "Scheduled Event"
    finally:
        sched.stop(5)


def test_scheduler_process(fake_app, tmp_path):
    out = tmp_path / "runs.jsonl"
    env = {**os.environ, "FAKE_APP_OUT": str(out),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    p = subprocess.Popen([sys.executable, "-m", "skymesh.local.scheduler", "--every", "0.05",
                          "--run-now", "--app-module", fake_app.__name__],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (out.exists() and len(out.read_text().splitlines()) >= 2):
            assert p.poll() is None, p.stdout.read().decode() if p.stdout else ""
            assert time.monotonic() < deadline, "scheduler never ran"
            time.sleep(0.05)  # polling a file the child writes; bounded by the deadline
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert json.loads(out.read_text().splitlines()[0])["source"] == "aws.events"


def test_rule_event():
    assert rule_event("sm/h/host_a/status", b'{"v":1,"host_id":"spoof"}') == {
        "v": 1, "host_id": "host_a"}
    assert rule_event("sm/h/host_a/status", b"not json") is None
    assert rule_event("sm/h/host_a/status", b"[1, 2]") is None
    assert rule_event("sm/h/host_a/in", b"{}") is None


@pytest.fixture
def bridge(identity, broker):
    """A subscribed :class:`RuleBridge` whose handler puts each event on ``bridge.events``."""
    events: queue.Queue[dict] = queue.Queue()
    b = RuleBridge(broker.connect_host, broker.port, identity.issue_control_client("rules"),
                   lambda event, ctx: events.put(event))
    b.events = events  # type: ignore[attr-defined]
    b.start()
    try:
        assert b.subscribed.wait(5)
        yield b
    finally:
        b.stop(5)


def test_bridge_calls_the_handler_for_valid_reports(identity, tmp_path, mqtt_connect, bridge):
    events = bridge.events
    host = mqtt_connect(enroll_host(identity, "host_a", tmp_path))
    host.publish("sm/h/host_a/status", b'{"v":1,"type":"status","agent_version":"1"}')
    host.publish("sm/h/host_a/status", b"{broken")
    host.publish("sm/h/host_a/status", b'"a string"')
    host.publish("sm/h/host_a/status", b'{"n":2,"host_id":"host_b"}')
    first, second = events.get(timeout=5), events.get(timeout=5)
    assert first == {"v": 1, "type": "status", "agent_version": "1", "host_id": "host_a"}
    assert second == {"n": 2, "host_id": "host_a"}
    assert bridge.dropped == 2 and events.empty()


NESTED = b'{"v":1,"type":"status","agent_version":' + b"[" * 60_000 + b"]" * 60_000 + b"}"


def test_bridge_goes_on_after_a_deeply_nested_report(identity, tmp_path, mqtt_connect, bridge):
    """One host's hostile report must not stop every host's status from being recorded."""
    events = bridge.events
    a = mqtt_connect(enroll_host(identity, "host_a", tmp_path))
    b = mqtt_connect(enroll_host(identity, "host_b", tmp_path))
    assert not a.publish("sm/h/host_a/status", NESTED).is_failure
    assert not a.publish("sm/h/host_a/status", b'{"k":"' + b"x" * 200_000 + b'"}').is_failure
    b.publish("sm/h/host_b/status", b'{"v":1,"type":"status","agent_version":"1"}')
    assert events.get(timeout=5)["host_id"] == "host_b"
    assert bridge.dropped == 2 and not bridge.worker_ended.is_set()


@contextmanager
def _bridge_process(fake_app, tmp_path, broker, local_home, **env_extra) -> Iterator[
        tuple[subprocess.Popen, Path]]:
    """``python -m skymesh.local.bridge`` on ``fake_app``, subscribed; killed at the end if still up."""
    env = {**os.environ, **env_extra, HOME: str(local_home),
           MQTT_HOST: broker.connect_host, MQTT_PORT: str(broker.port),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    log = tmp_path / "bridge.log"
    with log.open("wb") as f:
        p = subprocess.Popen([sys.executable, "-m", "skymesh.local.bridge", "--app-module",
                              fake_app.__name__], env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while READY_LINE not in log.read_text(errors="replace"):
            assert p.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "bridge never subscribed"
            time.sleep(0.05)  # polling the child's log, bounded by the deadline
        yield p, log
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def test_bridge_process_exits_when_its_worker_dies(fake_app, identity, tmp_path, mqtt_connect,
                                                    broker, local_home):
    """A bridge whose worker is gone records nothing: it must exit so that its supervisor sees it."""
    out = tmp_path / "reports.jsonl"
    with _bridge_process(fake_app, tmp_path, broker, local_home, FAKE_APP_OUT=str(out)) as (p, log):
        host = mqtt_connect(enroll_host(identity, "host_a", tmp_path))
        host.publish("sm/h/host_a/status", NESTED)  # survived: the worker goes on
        host.publish("sm/h/host_a/status", b'{"n":1}')
        host.publish("sm/h/host_a/status", b'{"end_the_worker":true}')
        assert p.wait(20) == 1, log.read_text(errors="replace")
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"n": 1, "host_id": "host_a"}]
    assert "the worker thread ended" in log.read_text()


# --- the failover rule (issue 10): reports that carry latency go to failover_report too ----------

LATENCY = [{"host": "host_g1", "rtt": 4.5, "loss": 0, "up": True}]
WITH_LATENCY = json.dumps({"v": 3, "type": "status", "agent_version": "1", "latency": LATENCY}).encode()
WITHOUT_LATENCY = b'{"v":3,"type":"status","agent_version":"1"}'


def test_goes_to_failover_is_a_non_empty_latency_or_direct_list():
    """The local form of the failover rule's SQL (infra: ``get(latency, 0)`` or ``get(direct, 0)``
    is defined)."""
    assert goes_to_failover(rule_event("sm/h/host_a/status", WITH_LATENCY))
    assert not goes_to_failover(rule_event("sm/h/host_a/status", WITHOUT_LATENCY))
    assert not goes_to_failover({"host_id": "host_a", "latency": []})
    assert not goes_to_failover({"host_id": "host_a", "latency": None})
    assert goes_to_failover({"host_id": "host_a", "direct": ["host_b"]}), "a pair may go direct again"
    assert not goes_to_failover({"host_id": "host_a", "latency": [], "direct": []})


@pytest.fixture
def two_rule_bridge(identity, broker, request):
    """A :class:`RuleBridge` with both rules: host_report events on ``.events``, failover_report ones
    on ``.failover_events``; ``request.param`` (optional) is what failover_report does first."""
    events: queue.Queue[dict] = queue.Queue()
    failover_events: queue.Queue[dict] = queue.Queue()
    before = getattr(request, "param", None)

    def failover(event, ctx):
        failover_events.put(event)
        if before:
            before()

    b = RuleBridge(broker.connect_host, broker.port, identity.issue_control_client("rules"),
                   lambda event, ctx: events.put(event), failover_handler=failover)
    b.events, b.failover_events = events, failover_events  # type: ignore[attr-defined]
    b.start()
    try:
        assert b.subscribed.wait(5)
        yield b
    finally:
        RELEASE.set()
        b.stop(5)


def test_a_report_with_latency_reaches_failover_report_and_one_without_does_not(
        identity, tmp_path, mqtt_connect, two_rule_bridge):
    host = mqtt_connect(enroll_host(identity, "host_a", tmp_path))
    host.publish("sm/h/host_a/status", WITHOUT_LATENCY)
    host.publish("sm/h/host_a/status", WITH_LATENCY)
    reports = [two_rule_bridge.events.get(timeout=5) for _ in range(2)]
    assert [("latency" in r, r["host_id"]) for r in reports] == [(False, "host_a"), (True, "host_a")]
    assert two_rule_bridge.failover_events.get(timeout=5) == {
        "v": 3, "type": "status", "agent_version": "1", "latency": LATENCY, "host_id": "host_a"}
    # the report without latency went to host_report only (it came first: nothing is left behind it)
    assert two_rule_bridge.failover_events.empty()


RELEASE = threading.Event()


def _fail() -> None:
    raise RuntimeError("the store is down")


def _hang() -> None:
    RELEASE.wait(20)  # bounded: the fixture releases it at the end of the test


@pytest.mark.parametrize("two_rule_bridge", [_fail, _hang], indirect=True, ids=["failing", "hanging"])
def test_a_failing_or_hanging_failover_report_never_stops_host_report(
        identity, tmp_path, mqtt_connect, two_rule_bridge):
    """The status pipeline no host can stop (issue 7): placement is a rule of its own."""
    RELEASE.clear()
    a = mqtt_connect(enroll_host(identity, "host_a", tmp_path))
    b = mqtt_connect(enroll_host(identity, "host_b", tmp_path))
    for _ in range(3):
        a.publish("sm/h/host_a/status", WITH_LATENCY)
    b.publish("sm/h/host_b/status", WITHOUT_LATENCY)
    b.publish("sm/h/host_b/status", WITH_LATENCY)
    got = [two_rule_bridge.events.get(timeout=5)["host_id"] for _ in range(5)]
    assert got == ["host_a"] * 3 + ["host_b"] * 2  # every report was recorded, in order
    assert two_rule_bridge.failover_events.get(timeout=5)["host_id"] == "host_a"
    assert not two_rule_bridge.worker_ended.is_set()


def test_the_bridge_process_hands_reports_with_latency_to_the_apps_failover_report(
        fake_app, identity, tmp_path, mqtt_connect, broker, local_home):
    """``skymesh local up``'s bridge wires failover_report when the app has it."""
    out, failover_out = tmp_path / "reports.jsonl", tmp_path / "failover.jsonl"
    with _bridge_process(fake_app, tmp_path, broker, local_home, FAKE_APP_OUT=str(out),
                         FAKE_APP_FAILOVER_OUT=str(failover_out)) as (p, log):
        host = mqtt_connect(enroll_host(identity, "host_a", tmp_path))
        host.publish("sm/h/host_a/status", WITHOUT_LATENCY)
        host.publish("sm/h/host_a/status", WITH_LATENCY)
        deadline = time.monotonic() + 20
        while not (failover_out.exists() and out.exists() and len(out.read_text().splitlines()) == 2):
            assert p.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)  # polling files the child writes, bounded by the deadline
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0, log.read_text(errors="replace")
    (moved,) = [json.loads(line) for line in failover_out.read_text().splitlines()]
    assert moved["host_id"] == "host_a" and moved["latency"] == LATENCY


def test_the_apps_failover_schedule_runs_locally():
    """The scheduler (EventBridge's stand-in) picks up ``failover`` from app.py by itself."""
    module, app = load_app("app")
    assert {s.name: s.period for s in schedules_of(module, app)}["failover"] == 60
