"""A slower link in a lab: the frames one node sends to another go through a userspace delay line.

The kernel here has no ``netem`` qdisc (DESIGN.md), so delay, jitter and loss are added by a small
process. :class:`DelayLink` starts it (``python -m skymesh.lab.delay``) and changes its settings at
run time (:meth:`DelayLink.set`), so one lab can go through "jitter below the hysteresis" and then
"delay well past it". It works on the lab's hub, the bridge every node hangs on::

    hub namespace (bridge br0)
      <prefix>v<a> (a's port) ──▶ bridge forward: nftables "iifname <prefix>v<a> ip daddr <b> drop"
            │ packet socket (a tap: sees the frame before the bridge drops it)
            ▼
      this module's process: DelayLine (delay, jitter, loss)
            │ packet socket on b's port: the frame, unchanged, goes out to b's eth0
            ▼
      <prefix>v<b> (b's port) ──▶ b

Why there, and not a UDP forwarder behind an nftables DNAT in ``a``, nor a TUN route in ``a``:
the frames travel unchanged (same addresses, ports and MACs; no NAT for conntrack to undo), so
``b``'s WireGuard never roams to a forwarder's port and the agents' endpoints and plans stay as
they are; and ``a``'s routing is left alone — wireguard-go sends with the source address *and
interface* of its sticky socket, so a policy route through a TUN device in ``a`` is never taken.
The frames keep their GSO and partial-checksum state across the line (both packet sockets use
``PACKET_VNET_HDR``, as a hypervisor's tap does). Every IPv4 frame from ``a`` to ``b``'s address
passes the line (the WireGuard datagrams that carry the probes, handshakes and traffic; ARP does
not); only that direction, so a round trip grows by the delay once. The nftables table lives in
the hub and the process is the lab's: the lab's exit removes both, :meth:`DelayLink.stop` earlier.

The delay line itself (:class:`DelayLine`) is pure, with the time and the random source passed
in: each packet is released at its arrival plus ``delay_ms`` plus a uniform draw in
``±jitter_ms``, never before the packet ahead of it (no reordering: WireGuard would count a
reordered datagram as a replay only beyond its window, but a probe's RTT must not depend on
overtaking), and lost with probability ``loss_pct``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import linux
from .errors import LabError
from .netns import Node
from .processes import REPO_ROOT, python_env, run

__all__ = ["Impairment", "DelayLine", "DelayLink"]

_ETH_P_ALL, _ETH_P_IP = 0x0003, 0x0800
_SOL_PACKET, _PACKET_VNET_HDR = 263, 15  # linux/socket.h, linux/if_packet.h
_VNET_HDR = 10  # bytes of struct virtio_net_hdr before each frame
_PACKET_OUTGOING = 4  # a frame the port sends (to a), not one it receives (from a)
_MOST_PER_WAKE = 256  # frames read per wake-up, so releasing is never starved
_REPLY_WITHIN = 10.0  # seconds for the process to answer a command
_NICE = -15


@dataclass(frozen=True)
class Impairment:
    """What the line does to each packet: ``delay_ms`` plus a uniform draw in ``±jitter_ms`` (never
    below zero in all), and a loss of ``loss_pct`` percent."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    def __post_init__(self) -> None:
        if not (self.delay_ms >= 0 and self.jitter_ms >= 0 and 0 <= self.loss_pct <= 100):
            raise LabError(f"an impairment needs delay_ms >= 0, jitter_ms >= 0 and loss_pct in 0..100: "
                           f"{self}")


class DelayLine:
    """A FIFO of packets with release times (pure: ``now`` in seconds and ``rng`` passed in).

    >>> line = DelayLine(Impairment(delay_ms=40), random.Random(1))
    >>> line.push(b"a", now=10.0), line.due(10.039), line.due(10.04)
    (10.04, [], [b'a'])
    """

    def __init__(self, impairment: Impairment = Impairment(), rng: random.Random | None = None) -> None:
        self.impairment = impairment
        self._rng = rng or random.Random()
        self._queue: deque[tuple[float, bytes]] = deque()
        self._last = float("-inf")
        self.forwarded = 0
        self.dropped = 0

    def push(self, packet: bytes, now: float) -> float | None:
        """Queue ``packet`` that arrived at ``now``; its release time, or None when it is lost.
        A new impairment applies to packets that arrive after it (those queued keep their time)."""
        imp = self.impairment
        if imp.loss_pct and self._rng.random() * 100 < imp.loss_pct:
            self.dropped += 1
            return None
        wait = imp.delay_ms + (self._rng.uniform(-imp.jitter_ms, imp.jitter_ms) if imp.jitter_ms else 0.0)
        at = max(now + max(0.0, wait) / 1000, self._last)  # never before the packet ahead
        self._last = at
        self._queue.append((at, packet))
        return at

    def due(self, now: float) -> list[bytes]:
        """The packets whose release time has come, in arrival order (they leave the line)."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(self._queue.popleft()[1])
        self.forwarded += len(out)
        return out

    def next_release(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)


class DelayLink:
    """Every IPv4 frame ``a`` sends to ``b``'s address goes through a :class:`DelayLine` process.

    Starts with ``impairment`` (default: none, the line only forwards); :meth:`set` changes it,
    :meth:`stop` removes the link (the lab's exit does too).
    """

    def __init__(self, a: Node, b: Node, impairment: Impairment = Impairment()) -> None:
        lab = a.lab
        if b.lab is not lab or a.router_ip or b.router_ip:
            raise LabError("a delay link joins two nodes on the same lab's bridge")
        self.a, self.b, self.hub = a, b, lab.hub
        self.table = lab.ifname(f"d{a.index}x{b.index}")
        self.impairment = impairment
        tap, out = lab.ifname(f"v{a.index}"), lab.ifname(f"v{b.index}")  # their ports on the hub's bridge
        argv = ["ip", "netns", "exec", lab.hub, sys.executable, "-m", __name__, "--tap", tap, "--to", b.ip,
                "--out", out, *_args(impairment)]
        kw: dict[str, Any] = {}
        if linux.can_die_with_parent():
            kw["preexec_fn"] = linux.die_with_parent
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=python_env(), cwd=str(REPO_ROOT),
                                     start_new_session=True, **kw)
        lab._track(self.proc)  # the lab kills it at exit, like its nodes' processes
        try:
            self._answer("ready")  # the tap is open: from now on no frame is lost by the drop below
            rule = "\n".join([f"table bridge {self.table} {{", "  chain forward {",
                              "    type filter hook forward priority 0;",
                              f"    iifname {tap} ip daddr {b.ip} drop", "  }", "}", ""])
            run(["ip", "netns", "exec", lab.hub, "nft", "-f", "-"], input=rule, check=True)
        except BaseException:
            self.stop()
            raise

    def set(self, impairment: Impairment) -> tuple[int, int]:
        """Apply ``impairment`` to the frames from now on; (frames forwarded, dropped) so far."""
        self._send(" ".join(["set", *(f"{v:g}" for v in _values(impairment))]))
        self.impairment = impairment
        return self._counts(self._answer("ok"))

    def counts(self) -> tuple[int, int]:
        """(frames forwarded, dropped) so far: whether traffic goes through the line at all."""
        self._send("stats")
        return self._counts(self._answer("ok"))

    def stop(self) -> None:
        """Remove the drop rule (frames flow directly again) and end the process."""
        run(["ip", "netns", "exec", self.hub, "nft", "delete", "table", "bridge", self.table], check=False)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    # ------------------------------------------------------------------ helpers
    def _send(self, line: str) -> None:
        if self.proc.poll() is not None or self.proc.stdin is None:
            raise LabError(f"the delay line from {self.a.name} to {self.b.name} has ended")
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def _answer(self, expected: str) -> str:
        assert self.proc.stdout is not None
        found, _, _ = select.select([self.proc.stdout], [], [], _REPLY_WITHIN)
        line = self.proc.stdout.readline().decode(errors="replace").strip() if found else ""
        if not line.startswith(expected):
            rest = b""
            if self.proc.poll() is not None or line.startswith("Traceback"):
                with contextlib.suppress(Exception):
                    rest = self.proc.communicate(timeout=5)[0] or b""
            raise LabError(f"the delay line from {self.a.name} to {self.b.name} answered {line!r}, "
                           f"not {expected!r} within {_REPLY_WITHIN:g}s: {rest.decode(errors='replace')}")
        return line

    @staticmethod
    def _counts(line: str) -> tuple[int, int]:
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        return int(fields["forwarded"]), int(fields["dropped"])


def _values(imp: Impairment) -> tuple[float, float, float]:
    return imp.delay_ms, imp.jitter_ms, imp.loss_pct


def _args(imp: Impairment) -> list[str]:
    return ["--delay-ms", f"{imp.delay_ms:g}", "--jitter-ms", f"{imp.jitter_ms:g}",
            "--loss-pct", f"{imp.loss_pct:g}"]


# ------------------------------------------------------------------ the process
def _packet_socket(ifname: str, receive: bool) -> socket.socket:
    """A packet socket on port ``ifname`` that reads every frame (``receive``) or none (it only sends)."""
    proto = _ETH_P_ALL if receive else 0
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    s.setsockopt(_SOL_PACKET, _PACKET_VNET_HDR, 1)
    s.bind((ifname, proto))
    s.setblocking(False)
    return s


def _serve(tap: str, to: str, out: str, impairment: Impairment) -> None:
    """Forward the IPv4 frames to ``to`` that port ``tap`` receives out through port ``out``, through
    the line; commands on stdin (``set <delay_ms> <jitter_ms> <loss_pct>``, ``stats``), one answer
    line each; ends at EOF (the lab, its parent, is gone) or on a signal."""
    # Ahead of the lab's other processes: a release that wakes late on a loaded machine is delay the
    # test did not ask for (jitter "inside the band" would then reach past it).
    with contextlib.suppress(OSError):
        os.nice(_NICE)
    dst = socket.inet_aton(to)
    src = _packet_socket(tap, True)
    dst_at = _VNET_HDR + 14 + 16  # the IPv4 destination: after the vnet and Ethernet headers
    sink = _packet_socket(out, False)
    line = DelayLine(impairment)
    stdin = sys.stdin.buffer
    print("ready", flush=True)
    while True:
        nxt = line.next_release()
        wait = 1.0 if nxt is None else min(1.0, max(0.0, nxt - time.monotonic()))
        readable, _, _ = select.select([src, stdin], [], [], wait)
        if src in readable:
            now = time.monotonic()
            for _ in range(_MOST_PER_WAKE):
                try:
                    frame, addr = src.recvfrom(65535 + _VNET_HDR)
                except BlockingIOError:
                    break
                if (addr[2] != _PACKET_OUTGOING and frame[_VNET_HDR + 12:_VNET_HDR + 14] == b"\x08\x00"
                        and frame[dst_at:dst_at + 4] == dst):
                    line.push(frame, now)
        if stdin in readable:
            command = stdin.readline().decode().split()
            if not command:
                return  # EOF: the parent is gone
            if command[0] == "set" and len(command) == 4:
                line.impairment = Impairment(*(float(v) for v in command[1:]))
            print(f"ok forwarded={line.forwarded} dropped={line.dropped}", flush=True)
        for frame in line.due(time.monotonic()):
            try:
                sink.send(frame)
            except OSError:
                line.dropped += 1  # the port is down for a moment: as lost on the wire


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m skymesh.lab.delay",
                                description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tap", required=True, help="the hub port of the sending node")
    p.add_argument("--to", required=True, help="the IPv4 address whose frames go through the line")
    p.add_argument("--out", required=True, help="the hub port of the receiving node")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss-pct", type=float, default=0.0)
    a = p.parse_args(argv)
    _serve(a.tap, a.to, a.out, Impairment(a.delay_ms, a.jitter_ms, a.loss_pct))
    return 0


if __name__ == "__main__":
    sys.exit(main())
