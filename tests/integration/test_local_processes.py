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
import time
import uuid
from pathlib import Path

import pytest

from chalicelib.config import HOME, MQTT_HOST, MQTT_PORT
from skymesh.local.bridge import READY_LINE, RuleBridge, rule_event
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


def test_bridge_process_exits_when_its_worker_dies(fake_app, identity, tmp_path, mqtt_connect,
                                                    broker, local_home):
    """A bridge whose worker is gone records nothing: it must exit so that its supervisor sees it."""
    out = tmp_path / "reports.jsonl"
    env = {**os.environ, "FAKE_APP_OUT": str(out), HOME: str(local_home),
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
        host = mqtt_connect(enroll_host(identity, "host_a", tmp_path))
        host.publish("sm/h/host_a/status", NESTED)  # survived: the worker goes on
        host.publish("sm/h/host_a/status", b'{"n":1}')
        host.publish("sm/h/host_a/status", b'{"end_the_worker":true}')
        assert p.wait(20) == 1, log.read_text(errors="replace")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"n": 1, "host_id": "host_a"}]
    assert "the worker thread ended" in log.read_text()
