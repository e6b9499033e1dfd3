"""Host agents on lab nodes: join, run, stop, status, leave; overlay pings; diagnostics.

>>> a = LabAgent(lab.add_node("a"))                          # doctest: +SKIP
>>> a.join(cp.api_url, key["token"])       # `python -m agent join ... --backend uapi`
>>> a.start()                              # `python -m agent run` in the background
>>> a.status()["networks"][0]["peers"]     # `python -m agent status --json`

Each agent uses the WireGuard interface ``<lab prefix>w<node index>`` (unique on the
machine, as wireguard-go's UAPI sockets are), a state dir and log files in the lab's
temp root; its ``run`` output goes to ``run-<n>.log`` there. :func:`diagnose` gathers
every agent's status and log tail for assertion messages.

``own_run_dir=True`` gives the agent a ``/run/wireguard`` of its own (a lab directory bound over
it in the mount namespace of each of its commands), as a machine of its own has: the interfaces
it names itself (a gateway group's, the same name on every member) then cannot clash with another
agent's socket on this machine, and nothing of them is left in the machine's ``/run/wireguard``.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import LabError, LabTimeout
from .netns import Node
from .processes import REPO_ROOT, python_env, terminate

__all__ = ["AGENT_MODULE", "LabAgent", "agent_available", "diagnose", "plain", "ping_matrix"]

AGENT_MODULE = "agent"
DEFAULT_LISTEN_PORT = 51820


def agent_available() -> str | None:
    """None when ``python -m agent run --help`` works here, else why not (for skip reasons)."""
    try:
        res = subprocess.run([sys.executable, "-m", AGENT_MODULE, "run", "--help"], capture_output=True,
                             text=True, timeout=60, env=python_env(), cwd=str(REPO_ROOT), check=False)
    except subprocess.TimeoutExpired:
        return "`python -m agent run --help` did not finish within 60 s"
    if res.returncode != 0:
        return f"the agent CLI is not usable yet: {(res.stderr or res.stdout).strip()[-300:]}"
    return None


def plain(address: str) -> str:
    """``100.64.0.2/32`` → ``100.64.0.2``."""
    return address.split("/", 1)[0]


class LabAgent:
    """One host: the skymesh agent on a lab node, with the ``uapi`` backend (wireguard-go)."""

    def __init__(self, node: Node, name: str | None = None, interface: str | None = None,
                 listen_port: int = DEFAULT_LISTEN_PORT, run_args: Sequence[str] = (),
                 own_run_dir: bool = False) -> None:
        self.node = node
        self.run_args = tuple(run_args)  # more options of `agent run`
        self.name = name or node.name
        self.interface = interface or node.wg_ifname()
        self.listen_port = listen_port
        self.dir = node.lab.tempdir(f"agent-{self.name}")
        self.state_dir = self.dir / "state"
        self.run_dir = self.dir / "run-wireguard" if own_run_dir else None
        if self.run_dir is not None:
            self.run_dir.mkdir(mode=0o700)
        self.host_id: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._runs = 0

    def __repr__(self) -> str:
        return f"LabAgent({self.name!r}, {self.interface!r}, host_id={self.host_id!r})"

    # --- commands ------------------------------------------------------------------
    def argv(self, *args: str) -> list[str]:
        return self.on_machine([sys.executable, "-m", AGENT_MODULE, *args])

    def on_machine(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on this agent's machine: with its own ``/run/wireguard`` if it has one
        (``ip netns exec`` gives each command a mount namespace of its own, so the bind stays there)."""
        if self.run_dir is None:
            return list(argv)
        return ["sh", "-c", 'mount --bind "$0" /run/wireguard && exec "$@"', str(self.run_dir), *argv]

    def _cmd(self, what: str | None, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run one short agent command in the node (bounded); its output goes to ``<what>.log``
        (not logged when ``what`` is None: ``status`` is polled and shown by :func:`diagnose`)."""
        res = self.node.run(self.argv(*args), timeout=timeout, env=python_env(), cwd=str(REPO_ROOT))
        if what is not None:
            shown = " ".join("<token>" if i and args[i - 1] == "--token" else a for i, a in enumerate(args))
            with (self.dir / f"{what}.log").open("a") as f:
                f.write(f"$ agent {shown}\n[exit {res.returncode}]\n{res.stdout}{res.stderr}\n")
        return res

    def join(self, server: str, token: str, timeout: float = 60.0,
             endpoints: Iterable[str] | None = None) -> str:
        """``join`` with an explicit underlay endpoint (``<node ip>:<port>``); returns the host id."""
        eps = list(endpoints) if endpoints is not None else [f"{self.node.ip}:{self.listen_port}"]
        args = ["join", "--server", server, "--token", token, "--name", self.name,
                "--interface", self.interface, "--backend", "uapi", "--state-dir", str(self.state_dir),
                "--listen-port", str(self.listen_port)]
        for ep in eps:
            args += ["--endpoint", ep]
        res = self._cmd("join", args, timeout)
        if res.returncode != 0:
            raise LabError(f"{self.name}: `agent join` failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        m = re.search(r"joined as \S+ \(([^)\s]+)\)", res.stdout)
        self.host_id = m.group(1) if m else self.status()["host_id"]
        return self.host_id

    def start(self) -> None:
        """Start ``run`` in the background; its output goes to ``run-<n>.log``."""
        if self.running:
            raise LabError(f"{self.name}: the agent is already running")
        self._runs += 1
        with (self.dir / f"run-{self._runs}.log").open("wb") as f:
            self.proc = self.node.popen(self.argv("run", "--state-dir", str(self.state_dir), *self.run_args),
                                        stdout=f, stderr=subprocess.STDOUT, env=python_env(),
                                        cwd=str(REPO_ROOT))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM ``run`` and wait (bounded); :class:`LabError` if it had to be killed."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                terminate([p.pid], [p], grace=2.0)
                raise LabError(f"{self.name}: `agent run` ignored SIGTERM for {timeout:g}s; killed it\n"
                               f"{self.log_tail()}") from None
        return p.returncode

    def status(self, timeout: float = 30.0) -> dict[str, Any]:
        """``status --json`` as a dict; :class:`LabError` if it fails."""
        res = self._cmd(None, ["status", "--json", "--state-dir", str(self.state_dir)], timeout)
        if res.returncode != 0:
            raise LabError(f"{self.name}: `agent status --json` failed ({res.returncode}): {res.stderr}")
        try:
            return json.loads(res.stdout)  # type: ignore[no-any-return]
        except ValueError:
            raise LabError(f"{self.name}: `agent status --json` printed no JSON:\n{res.stdout}") from None

    def leave(self, timeout: float = 60.0, force: bool = False) -> subprocess.CompletedProcess[str]:
        args = ["leave", "--state-dir", str(self.state_dir), *(["--force"] if force else [])]
        return self._cmd("leave", args, timeout)

    # --- facts -----------------------------------------------------------------------
    def peer_ids(self, status: dict[str, Any] | None = None) -> set[str]:
        st = status if status is not None else self.status()
        return {p["host_id"] for n in st.get("networks", []) for p in n.get("peers", [])}

    def addresses(self, status: dict[str, Any] | None = None) -> list[str]:
        """This host's overlay addresses (IPv4 and IPv6, no prefix length) from its status."""
        st = status if status is not None else self.status()
        return [plain(a) for n in st.get("networks", []) for a in n.get("addresses", [])]

    def delete_interface(self) -> None:
        """``ip link del`` the WireGuard interface (as a reboot would lose it)."""
        self.node.run(["ip", "link", "del", self.interface], timeout=10, check=True)

    def has_interface(self) -> bool:
        return self.node.run(["ip", "link", "show", self.interface], timeout=10).returncode == 0

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for log in sorted(self.dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {self.name}: {log.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def wg_show(self) -> str:
        with contextlib.suppress(LabError):
            res = self.node.run(self.on_machine(["wg", "show", self.interface]), timeout=10)
            return res.stdout + res.stderr
        return "(wg show timed out)"


def diagnose(agents: Iterable[LabAgent], log_lines: int = 40) -> str:
    """Every agent's ``status --json``, ``wg show`` and log tail: for assertion messages."""
    out = []
    for a in agents:
        out.append(f"===== {a.name} ({a.host_id}) in {a.node.netns}, interface {a.interface}, "
                   f"run {'alive' if a.running else 'not running'}")
        try:
            out.append(json.dumps(a.status(timeout=15), indent=1))
        except (LabError, LabTimeout) as e:
            out.append(f"(status failed: {e})")
        out.append(a.wg_show())
        out.append(a.log_tail(log_lines))
    return "\n".join(out)


def ping_matrix(agents: Sequence[LabAgent], addresses: dict[str, list[str]], wait: float = 1,
                count: int = 1) -> dict[tuple[str, str, str], bool]:
    """Ping every other agent's every address from every agent: ``{(src, dst, addr): ok}``.

    ``addresses`` maps agent name → overlay addresses (e.g. from :func:`LabAgent.addresses`).
    Pings run in parallel (one thread per pair), each bounded.
    """
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(s, d, addr) for s in agents for d in agents if s is not d for addr in addresses[d.name]]
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(jobs)))) as pool:
        results = list(pool.map(lambda j: j[0].node.ping(j[2], count=count, wait=wait), jobs))
    return {(s.name, d.name, addr): ok for (s, d, addr), ok in zip(jobs, results, strict=True)}
