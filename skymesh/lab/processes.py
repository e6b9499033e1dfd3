"""Processes for the lab: bounded commands, the process tree from ``/proc``, stopping with a
grace period, and the environment of the Python programs a lab starts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import LabError, LabTimeout
from .wait import wait_until

__all__ = ["REPO_ROOT", "alive", "cmdline", "descendants", "proc_stat", "python_env", "run", "terminate"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_TERM_GRACE = 10.0  # seconds between SIGTERM and SIGKILL at cleanup
_KILL_GRACE = 5.0


def python_env() -> dict[str, str]:
    """The environment for ``python -m skymesh.cli|agent`` in a lab: this one without ``SKYMESH_*`` and
    ``AWS_*`` (nothing of the caller's stage leaks in), the repository on the path, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYMESH_", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(argv: Sequence[str], timeout: float = 15.0, check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion (text output captured). :class:`LabTimeout` if it takes over
    ``timeout`` s (it is killed); :class:`LabError` if it is not found, or fails and ``check``."""
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                             input=input, stdin=None if input is not None else subprocess.DEVNULL,
                             env=env, cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        raise LabTimeout(f"`{' '.join(argv)}` did not finish within {timeout:g}s") from None
    except FileNotFoundError:
        raise LabError(f"`{argv[0]}` not found on PATH") from None
    if check and res.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({res.returncode}): "
                       f"{(res.stderr or res.stdout).strip()}")
    return res


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, their children, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return [p for p in out if alive(p)]


def cmdline(pid: int) -> str:
    """The command line of ``pid`` with spaces between arguments; empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def terminate(pids: Iterable[int], procs: Iterable[subprocess.Popen[Any]] = (),
              grace: float = _TERM_GRACE) -> list[int]:
    """SIGTERM ``pids``, wait up to ``grace`` s, SIGKILL the rest, wait again (bounded).

    ``procs`` are our own children among them: they are reaped so no zombie stays.
    Returns the pids still alive at the end (normally none).
    """
    procs = list(procs)
    pids = set(pids) | {p.pid for p in procs if p.poll() is None}

    def gone() -> bool:
        for p in procs:
            p.poll()
        return not any(alive(pid) for pid in pids)

    if not pids:
        return []
    _signal_all(pids, signal.SIGTERM)
    try:
        wait_until(gone, grace, "processes to exit after SIGTERM", interval=0.05)
    except LabTimeout:
        _signal_all([p for p in pids if alive(p)], signal.SIGKILL)
        with contextlib.suppress(LabTimeout):
            wait_until(gone, _KILL_GRACE, "processes to exit after SIGKILL", interval=0.05)
    return sorted(p for p in pids if alive(p))
