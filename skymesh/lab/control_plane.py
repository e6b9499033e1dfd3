"""The control plane in a lab node: ``skymesh local up`` (API, DynamoDB Local, Mosquitto,
scheduler, rule bridge) started, awaited, stopped and restarted without losing its data, with
the shared REST client (:class:`~skymesh.client.ApiClient`) calling it from inside the node."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..client import ApiClient
from .errors import LabError, LabTimeout
from .netns import Node
from .processes import alive, cmdline, descendants, python_env, terminate
from .wait import wait_until

__all__ = ["ADMIN_TIMEOUT", "ControlPlane"]

ADMIN_TIMEOUT = 15.0  # seconds per admin call


class ControlPlane:
    """``skymesh local up`` (API, DynamoDB Local, Mosquitto, scheduler, bridge) in ``node``.

    Everything it keeps is in ``home`` (default: a lab temp dir), so :meth:`stop` then
    :meth:`start` loses nothing. Its output goes to ``<home>/../stack-<n>.out``; the
    children's logs are in ``<home>/logs``.
    """

    READY_LINE = "skymesh local stack is up"

    def __init__(self, node: Node, home: Path | None = None, *, api_port: int = 8787,
                 mqtt_port: int = 8883, dynamodb_port: int = 8000) -> None:
        self.node = node
        self.home = (home or node.lab.tempdir("control") / "home").absolute()
        self.api_port, self.mqtt_port, self.dynamodb_port = api_port, mqtt_port, dynamodb_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.out: Path | None = None
        self.info: dict[str, Any] = {}
        self._starts = 0
        self._admin: ApiClient | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.node.ip}:{self.api_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def admin(self) -> ApiClient:
        """The REST client with the admin key, calling from the control plane's own namespace; needs
        a start first."""
        if self._admin is None:
            raise LabError("the control plane has not been started yet (no admin key)")
        return self._admin

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "skymesh.cli", "local", "up", "--home", str(self.home),
                "--bind", self.node.ip, "--api-port", str(self.api_port),
                "--mqtt-port", str(self.mqtt_port), "--dynamodb-port", str(self.dynamodb_port)]

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out and self.out.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        """The supervisor's output and the tail of each child's log, for failure messages."""
        parts = [f"--- {self.out}:\n{self.output()[-4000:]}"]
        for log in sorted((self.home / "logs").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log}:\n" + "\n".join(text))
        return "\n".join(parts)

    def start(self, timeout: float = 120.0, via: Node | None = None) -> dict[str, Any]:
        """Start it and wait (bounded) until it is fully up and ``GET /v1/health`` answers
        from ``via`` (default: its own node). Returns ``local.json``."""
        if self.running:
            raise LabError("the control plane is already running")
        self.home.parent.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        self.out = self.home.parent / f"stack-{self._starts}.out"
        with self.out.open("wb") as f:
            self.proc = self.node.popen(self.argv(), stdout=f, stderr=subprocess.STDOUT,
                                        env=python_env(), cwd=str(self.home.parent))
        probe = via or self.node

        def up() -> bool:
            if not self.running:
                raise LabError(f"`skymesh local up` exited with {self.proc.returncode if self.proc else None}"
                               f" while starting\n{self.log_tail()}")
            if self.READY_LINE not in self.output():
                return False
            status, body = probe.http("GET", self.api_url + "/v1/health", timeout=3)
            return status == 200 and isinstance(body, dict) and body.get("ok") is True

        try:
            wait_until(up, timeout, f"the control plane in {self.node.netns} ({self.api_url}/v1/health"
                       f" from {probe.netns})", interval=0.2, details=self.log_tail, ignore=(OSError,))
        except BaseException:
            self.stop(check=False)
            raise
        self.info = json.loads((self.home / "local.json").read_text())
        self._admin = ApiClient(self.info["api_url"], self.info["admin_key"], timeout=ADMIN_TIMEOUT,
                                opener=self.node.urlopen)
        return self.info

    def stop(self, timeout: float = 60.0, check: bool = True) -> int | None:
        """SIGTERM the supervisor and wait (bounded) until it AND every child it had
        (DynamoDB Local, Mosquitto, API, scheduler, bridge) are gone. Children still
        alive are killed and, if ``check``, reported with :class:`LabError`."""
        p = self.proc
        if p is None:
            return None
        children = descendants(p.pid) if p.poll() is None else []
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                terminate([p.pid, *children], [p], grace=2.0)
                if check:
                    raise LabError(f"`skymesh local up` ignored SIGTERM for {timeout:g}s; killed it\n"
                                   f"{self.log_tail()}") from None
        try:
            wait_until(lambda: not any(alive(c) for c in children), 20.0,
                       "the control plane's children to exit after the supervisor")
        except LabTimeout:
            stuck = [f"{c} ({cmdline(c)[:80]})" for c in children if alive(c)]
            terminate(children, grace=2.0)
            if check:
                raise LabError(f"children of `skymesh local up` outlived it: {stuck}") from None
        return p.returncode
