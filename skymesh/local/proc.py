"""Child processes and ports for the local stack: start, watch, stop, all bounded.

Nothing here sleeps to synchronise: readiness is polled against a deadline and
every wait for a process has a timeout after which it is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "LocalStackError",
    "ManagedProcess",
    "RestartBudget",
    "free_port",
    "check_port_free",
    "require_executable",
    "wait_until",
    "tail",
]


class LocalStackError(RuntimeError):
    """Something the person running the stack must fix; the message says what."""


def require_executable(name: str, hint: str) -> str:
    """The absolute path of ``name`` on PATH, or :class:`LocalStackError` with ``hint``."""
    found = shutil.which(name)
    if not found:
        raise LocalStackError(f"`{name}` not found on PATH. {hint}")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the kernel picked it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int, what: str, option: str) -> None:
    """Raise :class:`LocalStackError` naming the port when something already listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise LocalStackError(
                    f"port {port} on {host} ({what}) is already in use. Stop whatever listens "
                    f"there (see `ss -ltnp 'sport = :{port}'`) or choose another with {option}."
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise LocalStackError(
                    f"{host} is not an address of this machine (needed for {what}); "
                    "pass an address it has with --bind."
                ) from None
            raise LocalStackError(f"cannot bind {host}:{port} for {what}: {e}") from None


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``predicate`` until it is true; raise :class:`LocalStackError` at ``timeout``
    or as soon as ``alive`` says the process being waited for has died."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if alive is not None and not alive():
            raise LocalStackError(f"{what}: the process exited while starting")
        if time.monotonic() >= deadline:
            raise LocalStackError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    # Resolved once in the parent: the child must not dlopen between fork and exec.
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if not name:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class ManagedProcess:
    """A child with its output in a log file, its own process group, and a bounded stop.

    The child gets SIGTERM if this process dies (Linux ``PR_SET_PDEATHSIG``) and
    ignores the terminal's Ctrl-C, so the parent decides the order of shutdown.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        umask: int = -1,
    ) -> None:
        """``umask`` (e.g. ``0o077``) applies to the child only; -1 keeps ours."""
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.umask = umask
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        """Spawn the process (appending to its log file)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o666 if self.umask < 0 else 0o666 & ~self.umask  # the log is the child's file too
        with os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode), "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    umask=self.umask,
                    preexec_fn=_die_with_parent if _PRCTL is not None else None,
                )
            except OSError as e:
                raise LocalStackError(f"cannot start {self.name} ({self.argv[0]}): {e}") from None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL (and wait 5 s more)."""
        p = self.popen
        if p is None:
            return None
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5.0)
        return p.poll()

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)


class RestartBudget:
    """When to restart a child that died: exponential backoff, and a limit per time window.

    As the common supervisors do it: systemd's ``StartLimitBurst`` within
    ``StartLimitIntervalSec`` with ``RestartSec``, Erlang/OTP's restart intensity per
    period, Kubernetes' doubling CrashLoopBackOff. A child that crashes now and then
    is restarted at once; one that crashes in a loop is restarted ever more slowly and
    then given up on, so its supervisor stops and says so instead of spinning.

    >>> b = RestartBudget(limit=2, window=60, first_delay=1, max_delay=10)
    >>> b.after_death(0), b.after_death(1), b.after_death(2)
    (1, 2, None)
    >>> b.after_death(100)  # the earlier deaths left the window
    1
    """

    def __init__(self, limit: int = 5, window: float = 300.0, first_delay: float = 0.5,
                 max_delay: float = 30.0) -> None:
        self.limit, self.window = limit, window
        self.first_delay, self.max_delay = first_delay, max_delay
        self._deaths: deque[float] = deque()

    def after_death(self, now: float) -> float | None:
        """Record a death at ``now`` (monotonic seconds); return the delay before the next
        start, or ``None`` when this is more than ``limit`` deaths within ``window``."""
        while self._deaths and self._deaths[0] <= now - self.window:
            self._deaths.popleft()
        self._deaths.append(now)
        n = len(self._deaths)
        if n > self.limit:
            return None
        return min(self.max_delay, self.first_delay * 2 ** (n - 1))

    @property
    def recent_deaths(self) -> int:
        return len(self._deaths)
