"""A host whose agent stops shows offline within seconds, not after the 660 s silence rule (issue 12).

The whole local stack (``skymesh local up``: API, Mosquitto with mTLS, the rule bridge, DynamoDB
Local) and real ``skymesh-agent run`` processes on the in-memory device (no root needed):

- a clean stop (SIGTERM, as systemd and ``leave`` stop it): the agent publishes an offline report
  before it disconnects;
- a killed agent (SIGKILL): it says nothing, its socket closes, and Mosquitto publishes the
  connection's last will, the same offline report;
- started again, it reports on connecting and is online again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.state import StateDir
from skymesh.local.proc import wait_until

from .test_agent_cli import AgentProcess
from .test_local_stack import call, running_stack

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ONLINE_WAIT = 45.0  # join → MQTT connect → first report → bridge → DynamoDB
OFFLINE_WITHIN = 5.0  # what "within a few seconds" means here; measured ≈ 0.2-0.6 s


def join_host(api_url: str, token: str, name: str, directory: Path, endpoint: str = "198.18.12.1:51820",
              interface: str = "smweb0") -> AgentProcess:
    """``skymesh-agent join`` as a real process, then ``skymesh-agent run`` on the in-memory device."""
    sd = StateDir(directory / "state")
    joined = subprocess.run(
        [sys.executable, "-m", "agent", "join", "--server", api_url, "--token", token, "--name", name,
         "--interface", interface, "--endpoint", endpoint, "--state-dir", str(sd.path)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert joined.returncode == 0, joined.stdout + joined.stderr
    sd.save(replace(sd.load(), backend="memory"))
    return AgentProcess(sd)


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    with running_stack("skymesh-offline-") as info:
        yield info


def online(stack: dict[str, Any], host_id: str) -> bool:
    status, host = call(stack, "GET", f"/v1/hosts/{host_id}", None, stack["admin_key"])
    assert status == 200, host
    return bool(host["status"]["online"])


def offline_after(stack: dict[str, Any], host_id: str, proc: subprocess.Popen[bytes], sig: int) -> float:
    """Send ``sig`` to the agent; seconds until the API says its host is offline (bounded)."""
    assert online(stack, host_id)
    t0 = time.monotonic()
    proc.send_signal(sig)
    wait_until(lambda: not online(stack, host_id), 3 * OFFLINE_WITHIN, "the host offline")
    return time.monotonic() - t0


def test_a_stopped_or_killed_agent_is_offline_within_seconds_and_online_again_when_back(stack, tmp_path):
    admin = stack["admin_key"]
    _, net = call(stack, "POST", "/v1/networks", {"name": "off", "ipv4_cidr": "100.64.40.0/24"}, admin)
    _, key = call(stack, "POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 2}, admin)
    (tmp_path / "a").mkdir()
    agent = join_host(stack["api_url"], key["token"], "stopping", tmp_path / "a", interface="smoff0")
    try:
        (host,) = call(stack, "GET", "/v1/hosts", None, admin)[1]["hosts"]
        wait_until(lambda: online(stack, host["id"]), ONLINE_WAIT, "the host online",
                   alive=lambda: agent.proc.poll() is None)

        took = offline_after(stack, host["id"], agent.proc, signal.SIGTERM)
        assert agent.proc.wait(timeout=30) == 0, agent.output()
        print(f"clean stop → offline in {took:.2f} s")
        assert took <= OFFLINE_WITHIN, agent.output()

        # Back: it reports on connecting (whatever it reported before), so it is online again.
        agent = AgentProcess(StateDir(tmp_path / "a" / "state"))
        wait_until(lambda: online(stack, host["id"]), ONLINE_WAIT, "the host online again",
                   alive=lambda: agent.proc.poll() is None)

        took = offline_after(stack, host["id"], agent.proc, signal.SIGKILL)
        print(f"killed → offline (its last will) in {took:.2f} s")
        assert took <= OFFLINE_WITHIN, agent.output()
    finally:
        agent.stop()
