"""The agent's prober: ICMP echo through the tunnel to the gateways (and relays, and peers without
a direct path) this host depends on; round-trip time, loss, and up/down with hysteresis.

Why ICMP to the targets' *overlay* addresses: the echo goes through WireGuard and comes back
only when the peer's tunnel, its forwarding and the path both ways work, which is what a
host relying on that gateway needs to know. WireGuard itself notices silence only after
~15 s; a probe a second notices in a few.

Cheap by construction: one thread, one socket per address family (the unprivileged ICMP
datagram socket where ``net.ipv4.ping_group_range`` allows it, else a raw ICMP socket, which
the agent may open already: it runs with CAP_NET_RAW), no process per probe, and a bounded
number of targets and of packets handled per wake-up.

Layers, as in the rest of the agent: :class:`Health` (one target's verdict) and
:class:`Probes` (every target's schedule, outstanding echoes and matching) are pure, with the
time passed in, and unit-tested without sockets; :class:`Prober` runs them on real sockets in
its thread. What other parts build on (failover, relays) is :class:`Prober`'s small API:
:meth:`Prober.set_targets` (targets in), :meth:`Prober.states` (per-target state out) and the
``on_change(host_id, up)`` callback when a target goes down or up.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from chalicelib.domain.ids import HostId
from chalicelib.domain.models import LatencyRow, Member
from chalicelib.domain.placement import Policy
from chalicelib.domain.protocol import MAX_REPORT_LATENCY

from .socketloop import SocketLoop

log = logging.getLogger("skymesh.agent.probe")

__all__ = ["ProbeSettings", "Target", "TargetState", "Health", "Probes", "Prober", "IcmpSocket",
           "clearly_better", "worth_reporting_now", "choose_targets", "rows", "echo_reply_seq",
           "FAST", "SLOW"]

_PLACEMENT = Policy()
FAST, SLOW = "fast", "slow"  # what a target is probed as: depended on, or watched


@dataclass(frozen=True)
class ProbeSettings:
    """How often and how strictly. ``fast``/``slow``: seconds between probes of a target this host
    depends on (its gateways, its relay) and of the rest (other gateways, peers without a direct
    path); HA failover wants ``fast`` at 0.3–0.5 s. ``timeout``: a probe unanswered this long is a
    miss (a later reply to it is not counted). A target is down after ``down_after`` misses in a
    row, up again after ``up_after`` replies in a row; ``window`` probes make the loss figure;
    ``alpha`` weighs each new RTT in the smoothed one."""

    # Down after three misses: at 0.5 s a dead gateway is noticed within 1.5–2 s, so a host's
    # traffic is on another one in under 3 s (DESIGN: WireGuard alone notices after ~15 s).
    fast: float = 0.5
    slow: float = 10.0
    timeout: float = 1.0
    down_after: int = 3
    up_after: int = 2
    window: int = 20
    alpha: float = 0.25
    max_targets: int = MAX_REPORT_LATENCY

    def interval(self, kind: str) -> float:
        return self.fast if kind == FAST else self.slow


@dataclass(frozen=True)
class Target:
    """Where to probe a host (an overlay address, through the tunnel), and how often (FAST/SLOW).
    ``hold_until``: before this time (the prober's clock) misses count for loss but cannot make the
    target down: a peer the host only started to send to gets WireGuard's handshake a fair chance
    first (:mod:`agent.reach`)."""

    address: str
    kind: str = FAST
    hold_until: float = 0.0


@dataclass(frozen=True)
class TargetState:
    """One target as the prober sees it now. ``up`` None: too few answers or misses to say yet."""

    up: bool | None
    rtt_ms: float | None
    loss_pct: int
    sent: int


class Health:
    """One target's verdict from its probes' outcomes, in the order they are known.

    Down after ``down_after`` misses in a row, up after ``up_after`` replies in a row: a
    single lost echo never flips it. RTT is an exponentially weighted average of the replies.
    """

    def __init__(self, settings: ProbeSettings) -> None:
        self._s = settings
        self.up: bool | None = None
        self.rtt_ms: float | None = None
        self._outcomes: deque[bool] = deque(maxlen=settings.window)  # True: answered
        self._run = 0  # consecutive outcomes equal to the last one (positive: replies, negative: misses)

    def reply(self, rtt_ms: float) -> bool:
        """A reply after ``rtt_ms``; True when this made the target go up."""
        self.rtt_ms = rtt_ms if self.rtt_ms is None else self.rtt_ms + self._s.alpha * (rtt_ms - self.rtt_ms)
        self._outcomes.append(True)
        self._run = self._run + 1 if self._run > 0 else 1
        if self.up is not True and self._run >= self._s.up_after:
            self.up = True
            return True
        return False

    def miss(self, may_go_down: bool = True) -> bool:
        """A probe without a reply in time; True when this made the target go down (never while
        ``may_go_down`` is False: the misses still count, so the first one after it may)."""
        self._outcomes.append(False)
        self._run = self._run - 1 if self._run < 0 else -1
        if may_go_down and self.up is not False and -self._run >= self._s.down_after:
            self.up = False
            return True
        return False

    @property
    def loss_pct(self) -> int:
        if not self._outcomes:
            return 0
        return round(100 * self._outcomes.count(False) / len(self._outcomes))

    def state(self) -> TargetState:
        return TargetState(self.up, self.rtt_ms, self.loss_pct, len(self._outcomes))


@dataclass
class _Probe:
    target: HostId
    address: str
    sent_at: float


class _Slot:
    __slots__ = ("target", "health", "due")

    def __init__(self, target: Target, health: Health, due: float) -> None:
        self.target, self.health, self.due = target, health, due


Change = tuple[HostId, bool]


class Probes:
    """Every target's schedule, its echoes in flight and its :class:`Health`. Pure: times come in.

    Each echo carries a sequence number of this prober; a reply counts only when its sequence
    number is in flight *and* it comes from the address that echo went to, so a reply from
    another host, or to a probe already counted as missed, changes nothing.
    """

    def __init__(self, settings: ProbeSettings = ProbeSettings()) -> None:
        self.settings = settings
        self._slots: dict[HostId, _Slot] = {}
        self._inflight: dict[int, _Probe] = {}
        self._seq = 0

    def set_targets(self, targets: Mapping[HostId, Target], now: float) -> None:
        """Probe exactly these (at most ``max_targets``, in the order given). A target that stays
        keeps its history; a new one is probed at once; one that went is forgotten."""
        kept = dict(list(targets.items())[:self.settings.max_targets])
        slots: dict[HostId, _Slot] = {}
        for host, t in kept.items():
            old = self._slots.get(host)
            if old is not None and old.target.address == t.address:
                old.due = min(old.due, now + self.settings.interval(t.kind))
                old.target = t
                slots[host] = old
            else:
                slots[host] = _Slot(t, Health(self.settings), now)
        self._slots = slots
        self._inflight = {s: p for s, p in self._inflight.items()
                          if p.target in slots and slots[p.target].target.address == p.address}

    @property
    def targets(self) -> dict[HostId, Target]:
        return {h: s.target for h, s in self._slots.items()}

    def due(self, now: float) -> list[tuple[int, HostId, str]]:
        """The echoes to send now, as (sequence number, target, address); each is in flight from now."""
        out = []
        for host, slot in self._slots.items():
            if slot.due <= now:
                self._seq = (self._seq + 1) & 0xFFFF
                self._inflight[self._seq] = _Probe(host, slot.target.address, now)
                slot.due = now + self.settings.interval(slot.target.kind)
                out.append((self._seq, host, slot.target.address))
        return out

    def reply(self, seq: int, source: str, now: float) -> Change | None:
        """An echo reply with ``seq`` from ``source`` at ``now``; a change of up/down it caused."""
        probe = self._inflight.get(seq)
        if probe is None or not _same_address(probe.address, source):
            return None
        del self._inflight[seq]
        slot = self._slots[probe.target]
        if slot.health.reply(max(0.0, now - probe.sent_at) * 1000.0):
            return probe.target, True
        return None

    def expire(self, now: float) -> list[Change]:
        """Count the echoes in flight for longer than ``timeout`` as missed (oldest first)."""
        changes = []
        late = [s for s, p in self._inflight.items() if now - p.sent_at >= self.settings.timeout]
        for seq in sorted(late, key=lambda s: self._inflight[s].sent_at):
            probe = self._inflight.pop(seq)
            slot = self._slots[probe.target]
            if slot.health.miss(now >= slot.target.hold_until):
                changes.append((probe.target, False))
        return changes

    def next_event(self, now: float) -> float:
        """Seconds until the next echo is due or the oldest in flight times out (0: now)."""
        times = [s.due for s in self._slots.values()]
        times += [p.sent_at + self.settings.timeout for p in self._inflight.values()]
        return max(0.0, min(times) - now) if times else self.settings.slow

    def states(self) -> dict[HostId, TargetState]:
        return {h: s.health.state() for h, s in self._slots.items()}


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b.split("%")[0])
    except ValueError:
        return False


def choose_targets(gateways: Iterable[tuple[Member, bool]], unreachable: Iterable[Member],
                   limit: int = MAX_REPORT_LATENCY,
                   trying: Mapping[HostId, tuple[str, float]] | None = None) -> dict[HostId, Target]:
    """What to probe, at most ``limit``: first the gateways this host routes through (``True``
    beside them: fast), then the peers it has no direct path to (``trying``: host → (kind, hold
    until), :mod:`agent.reach`; slow when not named), then the other gateways of its networks
    (slow). Each at its IPv4 overlay address, so the echo crosses the tunnel. Peers before the
    gateways it does not use: whether a pair needs a relay is what the probe of a peer decides."""
    trying = trying or {}
    gws = sorted(gateways, key=lambda g: (not g[1], g[0].host_id))
    out: dict[HostId, Target] = {}
    for m, routed in gws:  # routed first: a gateway in two networks is fast if either says so
        if routed:
            out.setdefault(m.host_id, Target(m.ipv4, FAST))
    for m in sorted(unreachable, key=lambda m: m.host_id):
        kind, hold = trying.get(m.host_id, (SLOW, 0.0))
        out.setdefault(m.host_id, Target(m.ipv4, kind, hold))
    for m, _ in gws:
        out.setdefault(m.host_id, Target(m.ipv4, SLOW))
    return dict(list(out.items())[:limit])


def rows(states: Mapping[HostId, TargetState]) -> tuple[LatencyRow, ...]:
    """The report's latency section: every target the prober has a verdict on, in host id order."""
    return tuple(LatencyRow(h, None if s.rtt_ms is None else round(s.rtt_ms, 1), s.loss_pct, s.up)
                 for h, s in sorted(states.items()) if s.up is not None)


def clearly_better(rtt_ms: float, than_ms: float) -> bool:
    """Whether ``rtt_ms`` beats ``than_ms`` beyond hysteresis, by the failover functions' own rule
    (:meth:`chalicelib.domain.placement.Policy.clearly_better`: at least 10 ms better *and* below
    two thirds of it, Tailscale's rule for changing its home region): a host reports at once
    exactly what could make placement move it."""
    return _PLACEMENT.clearly_better(rtt_ms, than_ms)


def worth_reporting_now(reported: Sequence[LatencyRow], now: Sequence[LatencyRow],
                        ranked: Iterable[HostId]) -> bool:
    """Whether the latency section changed enough to report at once rather than at the heartbeat:
    a target went up or down, appeared or went, or, among the ``ranked`` targets (the gateways), the
    order of two flipped beyond hysteresis (:func:`clearly_better`) since the last report, or one's
    own RTT moved beyond hysteresis and another is now clearly better than it (or it than another)
    where the last report said not: a gateway a little slower than another that becomes much slower
    moves its hosts without flipping the order. Noise that moves no RTT past hysteresis never
    reports at once."""
    before = {r.target: r for r in reported}
    after = {r.target: r for r in now}
    if {h: r.up for h, r in before.items()} != {h: r.up for h, r in after.items()}:
        return True
    rtts = [(b, a) for h in set(ranked) & set(before)
            if before[h].up and (b := before[h].rtt_ms) is not None and (a := after[h].rtt_ms) is not None]
    if any(a0 <= b0 and clearly_better(b1, a1) for a0, a1 in rtts for b0, b1 in rtts):
        return True
    moved = [(r0, r1) for r0, r1 in rtts if clearly_better(r0, r1) or clearly_better(r1, r0)]
    return any(clearly_better(b1, a1) and not clearly_better(b0, a0)
               for m in moved for o in rtts for (a0, a1), (b0, b1) in ((m, o), (o, m)))


# ----------------------------------------------------------------------------------- sockets
# family → (echo request, echo reply) type
_ECHO: dict[int, tuple[int, int]] = {socket.AF_INET: (8, 0), socket.AF_INET6: (128, 129)}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class IcmpSocket:
    """ICMP echo over one socket of one address family, non-blocking.

    Prefers the unprivileged datagram ("ping") socket: the kernel then picks the echo
    identifier, computes the checksum and hands this socket only the replies to its own
    identifier. Where ``ping_group_range`` does not allow it (the default on Debian), a raw
    socket: its identifier is ours, and replies to other identifiers are dropped here.
    Every echo carries ``token`` as its payload, and a reply must carry it back.
    """

    def __init__(self, family: int, token: bytes) -> None:
        self.family = family
        self.token = token
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        try:
            self.sock = socket.socket(family, socket.SOCK_DGRAM, proto)
            self.datagram = True
        except PermissionError:
            self.sock = socket.socket(family, socket.SOCK_RAW, proto)
            self.datagram = False
        self.sock.setblocking(False)
        self.ident = int.from_bytes(os.urandom(2), "big")  # the kernel's own on a datagram socket

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send(self, address: str, seq: int) -> bool:
        """Send one echo request; False when the kernel refused it (no route: it will be a miss)."""
        request, _ = _ECHO[self.family]
        header = struct.pack("!BBHHH", request, 0, 0, self.ident, seq)
        if self.family == socket.AF_INET:  # ICMPv6 checksums are the kernel's (pseudo-header)
            header = struct.pack("!BBHHH", request, 0, _checksum(header + self.token), self.ident, seq)
        try:
            self.sock.sendto(header + self.token, (address, 0))
        except OSError as e:
            log.debug("echo to %s not sent: %s", address, e)
            return False
        return True

    def receive(self, most: int) -> list[tuple[int, str]]:
        """The echo replies waiting (at most ``most`` packets read), as (sequence number, source)."""
        out = []
        for _ in range(most):
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # an ICMP error queued on the socket: nothing to read
                log.debug("receive: %s", e)
                continue
            seq = echo_reply_seq(data, self.family, raw=not self.datagram, ident=self.ident, token=self.token)
            if seq is not None:
                out.append((seq, str(addr[0])))
        return out


def echo_reply_seq(data: bytes, family: int, *, raw: bool, ident: int, token: bytes) -> int | None:
    """The sequence number of a packet read from an ICMP socket if it is a reply to one of our
    echoes (type echo reply, our ``token`` as its payload; on a raw socket, which sees every
    program's ICMP, also our ``ident``), else None."""
    if raw and family == socket.AF_INET and data:
        data = data[(data[0] & 0x0F) * 4:]  # a raw IPv4 socket hands the IP header too
    if len(data) < 8 + len(token):
        return None
    kind, _, _, their_ident, seq = struct.unpack("!BBHHH", data[:8])
    if kind != _ECHO[family][1] or data[8:8 + len(token)] != token:
        return None
    if raw and their_ident != ident:
        return None  # another program's ping (the kernel sorts them out on a datagram socket)
    return int(seq)


class Prober(SocketLoop):
    """:class:`Probes` on real sockets, in one daemon thread (:class:`~agent.socketloop.SocketLoop`).

    ``on_change(host_id, up)`` is called from the prober's thread when a target goes down or up
    (keep it short: the agent only queues an event). ``clock`` is ``time.monotonic`` and
    ``open_socket`` :class:`IcmpSocket` but for tests.
    """

    MAX_READ = 256  # packets read per wake-up and family: bounded work whatever arrives
    thread_name = "skymesh-prober"

    def __init__(self, settings: ProbeSettings = ProbeSettings(), *,
                 on_change: Callable[[HostId, bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 open_socket: Callable[[int, bytes], IcmpSocket] = IcmpSocket) -> None:
        super().__init__(log)
        self.settings = settings
        self._listeners = [on_change] if on_change is not None else []
        self._clock = clock
        self._probes = Probes(settings)
        self._lock = threading.Lock()
        self._token = os.urandom(8)
        self._socks: dict[int, IcmpSocket] = {}
        self._refused: dict[int, float] = {}  # family → when to try to open its socket again
        self._open_socket = open_socket

    # ----------------------------------------------------------------------- API
    def add_listener(self, on_change: Callable[[HostId, bool], None]) -> None:
        """Also call ``on_change(host_id, up)`` (from the prober's thread) when a target goes down or up."""
        self._listeners.append(on_change)

    def set_targets(self, targets: Mapping[HostId, Target]) -> None:
        """Probe exactly these from now on (thread-safe; a new target is probed at once)."""
        with self._lock:
            if targets == self._probes.targets:
                return
            self._probes.set_targets(targets, self._clock())
        self._wake()

    def states(self) -> dict[HostId, TargetState]:
        """Every target's state now (thread-safe)."""
        with self._lock:
            return self._probes.states()

    def rows(self) -> tuple[LatencyRow, ...]:
        """The latency section of a status report now."""
        return rows(self.states())

    # ---------------------------------------------------------------------- loop
    def _close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks = {}

    SOCKET_RETRY = 60.0  # seconds between tries to open a socket the kernel refused

    def _socket(self, address: str) -> IcmpSocket | None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        if family not in self._socks:
            if self._clock() < self._refused.get(family, float("-inf")):
                return None  # its probes count as missed: the targets show down, as they are to us
            try:
                self._socks[family] = self._open_socket(family, self._token)
            except OSError as e:
                log.warning("cannot open an ICMP socket (%s): no probes of %s; trying again in %.0fs",
                            e, address, self.SOCKET_RETRY)
                self._refused[family] = self._clock() + self.SOCKET_RETRY
                return None
        return self._socks[family]

    def _step(self) -> None:
        with self._lock:
            now = self._clock()
            sends = self._probes.due(now)
            wait = self._probes.next_event(now)
        for seq, _, address in sends:
            sock = self._socket(address)
            if sock is not None:
                sock.send(address, seq)
        watched: list[socket.socket | IcmpSocket] = [self._wake_r, *self._socks.values()]
        ready, _, _ = select.select(watched, [], [], min(wait, 1.0))
        changes: list[Change] = []
        for r in ready:
            if r is self._wake_r:
                self._woken()
                continue
            got = r.receive(self.MAX_READ) if isinstance(r, IcmpSocket) else []
            at = self._clock()
            with self._lock:
                changes += [c for seq, src in got if (c := self._probes.reply(seq, src, at)) is not None]
        with self._lock:
            changes += self._probes.expire(self._clock())
        for host, up in changes:
            log.info("probe: %s is %s", host, "up" if up else "DOWN")
            for listener in self._listeners:
                listener(host, up)
