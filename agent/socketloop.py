"""One daemon thread that waits on its sockets and runs a step at a time: what the prober
(:class:`agent.probe.Prober`) and the underlay echo (:class:`agent.underlay.Underlay`) share.

A subclass opens its sockets, implements :meth:`SocketLoop._step` (send what is due, ``select`` on
:attr:`SocketLoop._wake_r` and its sockets, handle what arrived; :meth:`_woken` reads the wake-up
bytes) and closes them in :meth:`SocketLoop._close`. :meth:`_wake` makes a waiting step return at
once (new targets, stop). A step that raises is logged and the loop goes on a second later: one
bad packet or send never ends the thread. :func:`open_udp` and :func:`send_udp` are the UDP
sockets of :class:`UdpLoop`, the loop of the UDP speakers (the underlay echo, the gateway groups'
election).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Iterator

__all__ = ["SocketLoop", "UdpLoop", "open_udp", "send_udp"]

Address = tuple[str, int]


class SocketLoop:
    thread_name = "skymesh-loop"

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread (bounded wait) and close every socket."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _woken(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(64)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the thread must outlive any one bad packet or send
                self._log.exception("%s: step failed", self.thread_name)
                self._stop.wait(1.0)

    def _step(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Close the subclass's sockets (after the thread ended)."""


def open_udp(port: int, log: logging.Logger, what: str, host: str | None = None) -> dict[int, socket.socket]:
    """Non-blocking UDP sockets bound at ``port``, by address family: IPv4 on every address and IPv6
    (v6 only) on every address, a family the host cannot bind left out (and logged); or, given
    ``host``, that one address only."""
    wanted = ([(socket.AF_INET6 if ":" in host else socket.AF_INET, host)] if host is not None
              else [(socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")])
    socks: dict[int, socket.socket] = {}
    for family, address in wanted:
        try:
            s = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((address, port))
            s.setblocking(False)
        except OSError as e:
            log.info("%s: no %s socket on port %d (%s)", what,
                     "IPv4" if family == socket.AF_INET else "IPv6", port, e)
            continue
        socks[family] = s
    return socks


def send_udp(socks: dict[int, socket.socket], data: bytes, address: Address, log: logging.Logger,
             what: str) -> None:
    """Send ``data`` to ``address`` from the socket of its family; a failure is logged, never raised
    (a lost datagram is what UDP promises anyway)."""
    sock = socks.get(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    if sock is None:
        return
    try:
        sock.sendto(data, address)
    except OSError as e:
        log.debug("%s to %s not sent: %s", what, address[0], e)


class UdpLoop(SocketLoop):
    """A :class:`SocketLoop` on UDP sockets at ``port`` (:func:`open_udp`): a subclass calls
    :meth:`_open` before :meth:`start`, waits with :meth:`_ready` and reads with :meth:`_datagrams`."""

    MAX_READ = 256  # datagrams read per wake-up and socket: bounded work whatever arrives
    what = "udp"  # what its log lines call it

    def __init__(self, log: logging.Logger, port: int, host: str | None = None) -> None:
        super().__init__(log)
        self.port, self.host = port, host
        self._socks: dict[int, socket.socket] = {}

    def _open(self) -> None:
        self._socks = open_udp(self.port, self._log, self.what, self.host)

    def _close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks = {}

    def _send(self, data: bytes, address: Address) -> None:
        send_udp(self._socks, data, address, self._log, self.what)

    def _ready(self, timeout: float) -> list[socket.socket]:
        """The sockets with datagrams waiting, after at most ``timeout`` s (fewer: woken)."""
        ready, _, _ = select.select([self._wake_r, *self._socks.values()], [], [], timeout)
        if self._wake_r in ready:
            self._woken()
        return [r for r in ready if r is not self._wake_r]

    def _datagrams(self, sock: socket.socket, size: int) -> Iterator[tuple[bytes, Address]]:
        """The datagrams waiting on ``sock`` (at most :attr:`MAX_READ`), each with its source."""
        for _ in range(self.MAX_READ):
            try:
                data, source = sock.recvfrom(size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued on the socket (port unreachable)
                continue
            yield data, (str(source[0]), int(source[1]))
