"""``skymesh-agent`` join, status, run and leave against the real API (the app over HTTP on DynamoDB Local).

The API runs as its own process (``python -m skymesh.local.api``); ``run`` runs as a
real ``skymesh-agent run`` child. Its device is the in-memory backend (the state's
``backend`` is set to ``memory`` after ``join``), so no root and no WireGuard are
needed: what is tested is who owns the state directory, what ``leave`` stops and
removes, and how the agent ends when the control plane deleted its host.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from agent import cli
from agent.runner import EXIT_HOST_DELETED
from agent.state import StateDir
from chalicelib.adapters.dynamodb import ensure_table
from chalicelib.config import StageConfig
from chalicelib.wiring import build_service
from skymesh.local.proc import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
WAIT = 20.0
_NETWORKS = itertools.count(7)


@dataclass(frozen=True)
class LiveApi:
    url: str
    admin_key: str

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", f"Bearer {token or self.admin_key}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def enrollment_token(self) -> str:
        n = next(_NETWORKS)
        code, net = self.call("POST", "/v1/networks", {"name": f"lab-{n}", "ipv4_cidr": f"100.64.{n}.0/24",
                                                       "ipv6_cidr": f"fd00:{n:x}::/64"})
        assert code == 201, net
        code, key = self.call("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 5})
        assert code == 201, key
        return str(key["token"])


def _serving(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/v1/openapi.json", timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def live_api(dynamodb_local: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """The app over HTTP (its own process) on a fresh table of DynamoDB Local."""
    env = {"SKYMESH_TABLE": f"skymesh-agent-{uuid.uuid4().hex[:10]}",
           "SKYMESH_DYNAMODB_ENDPOINT": dynamodb_local,
           "SKYMESH_PUBLISHER": "memory", "SKYMESH_IDENTITY": "memory", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
    with pytest.MonkeyPatch.context() as mp:  # boto3 reads its credentials from the environment
        for k, v in env.items():
            mp.setenv(k, v)
        ensure_table(env["SKYMESH_TABLE"], dynamodb_local, "us-east-1")
        admin = build_service(StageConfig.from_env(env)).ensure_admin_key()
    port = free_port()
    log = (tmp_path_factory.mktemp("api") / "api.log").open("wb")
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "skymesh.local.api", "--host", "127.0.0.1", "--port", str(port)],
        env={**child_env, **env, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _serving(url), WAIT, "the API", alive=lambda: proc.poll() is None)
        yield LiveApi(url, admin)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def joined(live_api: LiveApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> StateDir:
    """A host joined with the real CLI, its device switched to the in-memory backend."""
    sd = StateDir(tmp_path / "state")
    ifname = "smc" + secrets.token_hex(4)
    assert cli.main(["join", "--server", live_api.url, "--token", live_api.enrollment_token(),
                     "--name", "cli-host", "--interface", ifname, "--endpoint", "198.18.7.1:51820",
                     "--state-dir", str(sd.path)]) == 0
    assert "joined as cli-host" in capsys.readouterr().out
    sd.save(replace(sd.load(), backend="memory"))
    return sd


class AgentProcess:
    """``skymesh-agent run`` as a child process, its output in a file, always stopped at the end."""

    def __init__(self, sd: StateDir) -> None:
        self.out = sd.path.parent / "agent.log"
        with self.out.open("wb") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--state-dir", str(sd.path)],
                                         env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=f,
                                         stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def agent_process(joined: StateDir) -> Iterator[AgentProcess]:
    a = AgentProcess(joined)
    try:
        yield a
    finally:
        a.stop()


def _status(sd: StateDir, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert cli.main(["status", "--json", "--state-dir", str(sd.path)]) == 0
    return json.loads(capsys.readouterr().out)


def test_leave_while_run_is_active_stops_the_agent_then_removes_everything(
        live_api, joined, agent_process, capsys):
    sd, proc = joined, agent_process.proc
    host_id = sd.load().host_id
    wait_until(lambda: (h := sd.lock_holder()) is not None and h.pid == proc.pid, WAIT, "the agent's lock",
               alive=lambda: proc.poll() is None)
    wait_until(lambda: sd.load_runtime().get("last_sync") is not None, WAIT, "the agent's first sync",
               alive=lambda: proc.poll() is None)
    st = _status(sd, capsys)
    assert st["agent"]["running"] is True and [n["name"][:4] for n in st["networks"]] == ["lab-"]
    # A second `run` for the same directory is refused: two agents would fight over one device.
    assert cli.main(["run", "--state-dir", str(sd.path)]) == 1
    assert f"pid {proc.pid}" in capsys.readouterr().err

    assert cli.main(["leave", "--state-dir", str(sd.path)]) == 0
    out = capsys.readouterr().out
    assert f"stopping the running agent (pid {proc.pid}" in out and "left" in out
    assert proc.wait(timeout=WAIT) == 0  # stopped by leave (SIGTERM), not left to "repair" the interface
    assert not sd.exists() and sd.lock_holder() is None and list(sd.path.iterdir()) == []
    assert live_api.call("GET", f"/v1/hosts/{host_id}")[0] == 404


def test_an_agent_whose_host_was_deleted_stops_once_with_its_own_exit_status(live_api, joined, capsys):
    sd = joined
    host_id = sd.load().host_id
    assert live_api.call("DELETE", f"/v1/hosts/{host_id}")[0] == 204
    agent = AgentProcess(sd)
    try:
        assert agent.proc.wait(timeout=WAIT) == EXIT_HOST_DELETED
    finally:
        agent.stop()
    log = agent.output()
    assert log.count("this host was deleted from the control plane") == 1, log
    assert "skymesh-agent leave" in log
    st = _status(sd, capsys)
    assert st["agent"]["host_deleted"] is True and st["agent"]["running"] is False
    assert sd.load_cache() == []  # a restart brings none of its peers back
    capsys.readouterr()
    assert cli.main(["status", "--state-dir", str(sd.path)]) == 0
    assert "stopped: this host was deleted from the control plane" in capsys.readouterr().out
    # leave still works: the API's "unknown host token" means it is gone already
    assert cli.main(["leave", "--state-dir", str(sd.path)]) == 0
    assert not sd.exists()


def test_status_says_when_the_agent_died_without_saying_so(joined, agent_process, capsys):
    sd, proc = joined, agent_process.proc
    wait_until(lambda: sd.load_runtime().get("running") is True, WAIT, "the agent's runtime file",
               alive=lambda: proc.poll() is None)
    proc.kill()
    proc.wait(timeout=WAIT)
    st = _status(sd, capsys)
    assert st["agent"]["running"] is False and st["agent"]["crashed"] is True
    assert sd.load_runtime()["running"] is True  # what the killed agent last wrote


def test_leave_refuses_when_the_api_is_unreachable_and_changes_nothing(joined, capsys):
    sd = joined
    sd.save(replace(sd.load(), server=f"http://127.0.0.1:{free_port()}"))  # nothing listens there
    assert cli.main(["leave", "--state-dir", str(sd.path)]) == cli.EXIT_USAGE
    assert "--force" in capsys.readouterr().err and sd.exists()
    assert cli.main(["leave", "--force", "--state-dir", str(sd.path)]) == 0
    assert not sd.exists()


def test_join_refuses_a_second_join_and_a_bad_interface_name(live_api, joined, tmp_path, capsys):
    token = live_api.enrollment_token()
    again = ["join", "--server", live_api.url, "--token", token, "--state-dir", str(joined.path)]
    assert cli.main(again) == 2
    assert "already joined as cli-host" in capsys.readouterr().err
    assert cli.main(["join", "--server", live_api.url, "--token", token, "--interface", "no spaces please",
                     "--state-dir", str(tmp_path / "other")]) == 2
    assert "--interface" in capsys.readouterr().err
    assert cli.main(["join", "--server", live_api.url, "--token", "skm_ek_wrong", "--endpoint",
                     "198.18.7.2:51820", "--state-dir", str(tmp_path / "other")]) == 1
    assert "HTTP 401" in capsys.readouterr().err
    assert not StateDir(tmp_path / "other").exists()  # nothing half written
