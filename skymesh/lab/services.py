"""Small services on lab nodes for what a test must see from the far end: who is asking, and
WireGuard clients brought up with the real ``wg-quick``.

- :class:`WhoAmI`: a TCP server in a node that answers each connection with the address it
  came from, so a test sees whether traffic was masqueraded, and by whom;
- :func:`ask`: connect from another node and read that answer (bounded);
- :class:`WgQuickClient`: a wg-quick file brought up in a node (``wg-quick up``, which falls
  back to wireguard-go here), and taken down again;
- :class:`UdpEcho` and :class:`PacketStream`: a steady stream of datagrams echoed from the far
  end, and the gaps in the echoes (how long a failover left a host without a path).
"""

from __future__ import annotations

import queue
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError
from .netns import Node

__all__ = ["WhoAmI", "ask", "WgQuickClient", "UdpEcho", "PacketStream", "Gap"]

_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print('listening', flush=True)
while True:
    c, addr = s.accept()
    with c:
        c.sendall(addr[0].encode())
"""

_CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.settimeout(float(sys.argv[3]))
    print(c.recv(256).decode())
except OSError as e:
    print('error:', e, file=sys.stderr)
    sys.exit(1)
"""


class WhoAmI:
    """``python -c`` TCP server on ``node`` at ``address:port`` answering each connection with
    the source address it saw. Stopped by the lab at exit (or :meth:`stop`)."""

    def __init__(self, node: Node, address: str, port: int = 7000) -> None:
        self.node, self.address, self.port = node, address, port
        self.proc = _started(node, [sys.executable, "-c", _SERVER, address, str(port)], "listening",
                             f"whoami on {node.name} at {address}:{port}")

    def stop(self) -> None:
        _stop(self.proc)


def ask(node: Node, address: str, port: int = 7000, timeout: float = 2.0) -> str | None:
    """The source address a :class:`WhoAmI` at ``address:port`` saw for a connection from
    ``node``; None when it could not be reached within ``timeout`` seconds."""
    res = node.run([sys.executable, "-c", _CLIENT, address, str(port), f"{timeout:g}"], timeout=timeout + 10)
    return res.stdout.strip() or None if res.returncode == 0 else None


class WgQuickClient:
    """A client's wg-quick file brought up in ``node`` with the real ``wg-quick``.

    The interface name (the file's name) must be unique on the machine: wireguard-go's
    socket ``/var/run/wireguard/<if>.sock`` is shared by all namespaces. Use a lab name
    (``lab.ifname("c1")``) so the lab's cleanup finds it. A ``DNS =`` line would make
    wg-quick change the machine's resolver: it is refused here.
    """

    def __init__(self, node: Node, ifname: str, text: str) -> None:
        if any(line.strip().lower().startswith("dns") for line in text.splitlines()):
            raise LabError("a DNS line would change this machine's resolver; bring the file up without it")
        self.node, self.ifname = node, ifname
        self.path = Path(node.lab.tempdir(f"wgquick-{ifname}")) / f"{ifname}.conf"
        self.path.write_text(text)
        self.path.chmod(0o600)
        self.up_output = ""

    def up(self, timeout: float = 30.0) -> None:
        res = self.node.run(["wg-quick", "up", str(self.path)], timeout=timeout)
        self.up_output = res.stdout + res.stderr
        if res.returncode != 0:
            raise LabError(f"wg-quick up {self.path.name} in {self.node.name} failed "
                           f"({res.returncode}):\n{self.up_output}")

    def down(self, timeout: float = 30.0) -> None:
        res = self.node.run(["wg-quick", "down", str(self.path)], timeout=timeout)
        if res.returncode != 0:
            raise LabError(f"wg-quick down {self.path.name} failed ({res.returncode}):\n"
                           f"{res.stdout}{res.stderr}")

    def show(self) -> str:
        res = self.node.run(["wg", "show", self.ifname], timeout=10)
        return res.stdout + res.stderr


_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print('listening', flush=True)
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(data, addr)
"""

# Sends a datagram every ``interval`` s and prints, for every silence in the echoes longer than
# ``threshold`` s, ``gap <last echo before> <first echo after>`` (CLOCK_MONOTONIC, which every
# namespace shares, so the caller compares it with its own time.monotonic()), and at most every
# 0.1 s ``echo <last echo>`` once there was a new one. Echoes of old datagrams count like new
# ones: the path works again.
_STREAM = """
import select, socket, sys, time
addr, port, interval, threshold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ':' in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
seq, last, nxt, told = 0, None, time.monotonic(), 0.0
print('started', flush=True)
while True:
    now = time.monotonic()
    if now >= nxt:
        try:
            s.sendto(seq.to_bytes(8, 'big'), (addr, port))
        except OSError:
            pass  # no route for a moment: the echo's silence shows it
        seq, nxt = seq + 1, nxt + interval
    r, _, _ = select.select([s], [], [], max(0.0, nxt - time.monotonic()))
    while r:
        try:
            s.recv(64)
        except BlockingIOError:
            break
        t = time.monotonic()
        if last is None:
            print('first', t, flush=True)
        elif t - last > threshold:
            print('gap', last, t, flush=True)
        last = t
    if last is not None and last > told and time.monotonic() - told >= 0.1:
        print('echo', last, flush=True)
        told = time.monotonic()
"""


class UdpEcho:
    """``python -c`` UDP echo server on ``node`` at ``address:port``. Stopped by the lab at exit."""

    def __init__(self, node: Node, address: str, port: int = 7001) -> None:
        self.node, self.address, self.port = node, address, port
        self.proc = _started(node, [sys.executable, "-c", _ECHO, address, str(port)], "listening",
                             f"udp echo on {node.name} at {address}:{port}")

    def stop(self) -> None:
        _stop(self.proc)


@dataclass(frozen=True)
class Gap:
    """A silence in the echoes: from the last echo before it to the first one after it."""

    start: float  # time.monotonic()
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class PacketStream:
    """A steady stream from ``node`` to a :class:`UdpEcho` at ``address:port``: a datagram every
    ``interval`` s. :meth:`gap_after` finds the silence that began around a moment (a kill).
    """

    def __init__(self, node: Node, address: str, port: int = 7001, *, interval: float = 0.01,
                 threshold: float = 0.1) -> None:
        self.node, self.interval, self.threshold = node, interval, threshold
        argv = [sys.executable, "-c", _STREAM, address, str(port), f"{interval:g}", f"{threshold:g}"]
        self.proc = _started(node, argv, "started", f"packet stream from {node.name} to {address}")
        self._lines: queue.Queue[str] = queue.Queue()
        self._gaps: list[Gap] = []
        self.first: float | None = None
        self.last: float | None = None  # the last echo the stream told of (every 0.1 s at most)
        threading.Thread(target=self._read, daemon=True, name=f"stream-{node.name}").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode(errors="replace").strip())

    def _drain(self, timeout: float) -> None:
        try:
            line = self._lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return
        while True:
            kind, *times = line.split()
            if kind == "first":
                self.first = float(times[0])
            elif kind == "gap":
                self._gaps.append(Gap(float(times[0]), float(times[1])))
            elif kind == "echo":
                self.last = float(times[0])
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return

    def flowing(self, timeout: float) -> bool:
        """Whether echoes came back (the path works), waiting at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.first is None and time.monotonic() < deadline:
            self._drain(deadline - time.monotonic())
        return self.first is not None

    def gap_after(self, moment: float, timeout: float) -> Gap | None:
        """The silence in which ``moment`` (a time.monotonic()) falls, once the echoes are back;
        None when they do not come back within ``timeout`` s (or nothing was silent then)."""
        deadline = time.monotonic() + timeout
        while True:
            for gap in self._gaps:
                if gap.start - self.interval <= moment <= gap.end:
                    return gap
            if time.monotonic() >= deadline:
                return None
            self._drain(deadline - time.monotonic())

    def silence_around(self, moment: float, timeout: float) -> Gap | None:
        """Like :meth:`gap_after`, and when the echoes came back after ``moment`` without a silence
        above the threshold around it: ``Gap(moment, moment + threshold)`` (at most that long)."""
        deadline = time.monotonic() + timeout
        while True:
            gap = self.gap_after(moment, min(0.05, max(0.0, deadline - time.monotonic())))
            if gap is not None:
                return gap
            # lines come in order: a silence around ``moment`` would have been told before this echo
            if self.last is not None and self.last > moment + self.threshold:
                return Gap(moment, moment + self.threshold)
            if time.monotonic() >= deadline:
                return None

    def stop(self) -> None:
        _stop(self.proc)


def _started(node: Node, argv: list[str], ready: str, what: str) -> subprocess.Popen[bytes]:
    proc = node.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    found, _, _ = select.select([proc.stdout], [], [], 20.0)
    line = proc.stdout.readline().decode(errors="replace") if found else "(nothing within 20 s)"
    if ready not in line:
        _stop(proc)
        raise LabError(f"{what} did not start: {line!r}")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
