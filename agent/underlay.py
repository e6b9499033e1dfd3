"""Whether a relayed pair's direct path works again: an authenticated UDP echo over the underlay
(issue 10, autorelay rule 4: the ``direct`` set of the status report).

While a pair is relayed, a probe of the peer's overlay address goes through the relay and says
nothing of the direct path. So each end of a relayed pair (both read the pair in the plan) sends
a small echo request every :attr:`DirectSettings.interval` from a second UDP socket, bound at its
WireGuard port + 1, to the other's endpoints at their port + 1, both ends at once: the requests
of each end open the NAT mappings the other's need (the simultaneous open of hole punching), and
a valid request's source address is probed back too. ``direct`` holds for a peer after
:attr:`DirectSettings.answers` answered rounds in a row over at least :attr:`DirectSettings.hold`
seconds, and is dropped at the first unanswered round. A pair the control plane ended on our
word and relayed again soon after (a flap) doubles the time required, up to
:attr:`DirectSettings.max_doublings` times. It is an approximation (the WireGuard port's NAT
mapping may differ from the echo port's); a wrong verdict costs one relay round trip: the pair
is relayed again by rule 1.

The message (:func:`pack`, :func:`parse`), 120 bytes both ways (no amplification)::

    magic "SMU1" | kind (1 request, 2 reply) | 3 zero bytes | sender's WireGuard public key (32) |
    receiver's public key (32) | seq (8) | sender's time, unix ms (8) | HMAC-SHA256 (32)

The MAC key is known to the two ends only: HKDF-SHA256 of the X25519 shared secret of one end's
WireGuard private key and the other's public key (both ends get the same), bound to both public
keys. A reply carries the request's seq and time and its own kind, so it answers that request
only and a request cannot pass for a reply. The responder answers only valid requests from the
peers of this host's own relayed pairs (no reflection for strangers, and no key derivation for
them), within :attr:`DirectSettings.max_skew` of its clock, never the same seq twice. The private
key stays in this process; nothing secret is logged.

Layers as in :mod:`agent.probe`: :class:`Streak` (one peer's verdict) and :class:`Echoes` (every
peer's rounds, requests in flight, flaps) are pure, times passed in; :class:`Underlay` runs them
on real sockets in one thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .socketloop import UdpLoop

log = logging.getLogger("skymesh.agent.underlay")

__all__ = ["DirectSettings", "Echo", "REQUEST", "REPLY", "SIZE", "pair_key", "pack", "parse", "verify",
           "Streak", "Echoes", "Responder", "Underlay", "echo_addresses"]

MAGIC = b"SMU1"
REQUEST, REPLY = 1, 2
_HEAD = struct.Struct("!4sB3x32s32sQQ")
MAC_SIZE = 32
SIZE = _HEAD.size + MAC_SIZE
_INFO = b"skymesh underlay echo v1"

Address = tuple[str, int]


@dataclass(frozen=True)
class DirectSettings:
    """``interval``: seconds between rounds to a peer; ``timeout``: a round unanswered this long is
    a miss; ``answers`` rounds in a row over at least ``hold`` seconds make ``direct``; after a flap
    (a pair ended and relayed again within ``flap_window`` s) ``hold`` doubles, at most
    ``max_doublings`` times; ``port_offset``: the echo port is the WireGuard port plus this;
    ``max_skew``: a request whose time is further than this from ours is not answered;
    ``max_addresses``: at most this many addresses probed per peer."""

    interval: float = 2.0
    timeout: float = 1.0
    answers: int = 5
    hold: float = 30.0
    flap_window: float = 600.0
    max_doublings: int = 4
    port_offset: int = 1
    max_skew: float = 120.0
    max_addresses: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.timeout < self.interval:  # one round in flight per peer at a time
            raise ValueError("the echo timeout must be positive and shorter than its interval")


# --------------------------------------------------------------------------------- the message
@dataclass(frozen=True)
class Echo:
    """One echo message: ``kind`` REQUEST or REPLY, public keys raw (32 bytes each)."""

    kind: int
    sender: bytes
    receiver: bytes
    seq: int
    time_ms: int


def pair_key(private_key: str, peer_public_key: str) -> bytes:
    """The MAC key of the pair (this host, the peer): the same at both ends, unknown to anyone else
    (X25519 of one's private key and the other's public key, through HKDF bound to both keys).
    Keys are base64, as WireGuard writes them."""
    me = x25519.X25519PrivateKey.from_private_bytes(base64.b64decode(private_key))
    peer = base64.b64decode(peer_public_key)
    shared = me.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
    ours = me.public_key().public_bytes_raw()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_INFO + b"".join(sorted((ours, peer)))).derive(shared)


def pack(echo: Echo, key: bytes) -> bytes:
    """The message on the wire (always :data:`SIZE` bytes)."""
    head = _HEAD.pack(MAGIC, echo.kind, echo.sender, echo.receiver, echo.seq, echo.time_ms)
    return head + hmac.new(key, head, hashlib.sha256).digest()


def parse(data: bytes) -> Echo | None:
    """The message's fields if it is shaped like one (size, magic, kind); not yet authenticated."""
    if len(data) != SIZE:
        return None
    magic, kind, sender, receiver, seq, time_ms = _HEAD.unpack_from(data)
    if magic != MAGIC or kind not in (REQUEST, REPLY):
        return None
    return Echo(kind, sender, receiver, seq, time_ms)


def verify(data: bytes, key: bytes) -> bool:
    """Whether the message's MAC is right for this pair key (in constant time)."""
    return len(data) == SIZE and hmac.compare_digest(
        hmac.new(key, data[:_HEAD.size], hashlib.sha256).digest(), data[_HEAD.size:])


def echo_addresses(endpoints: Iterable[str], offset: int) -> tuple[Address, ...]:
    """A member's endpoints (``ip:port``, ``[ip6]:port``) as echo addresses (port + ``offset``);
    DNS names are left out (the echo thread resolves nothing)."""
    out = []
    for e in endpoints:
        host, _, port = e.rpartition(":")
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            continue
        if port.isdigit() and 0 < int(port) + offset <= 65535:
            out.append((str(ip), int(port) + offset))
    return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------------------------- verdicts
class Streak:
    """One peer's ``direct`` verdict from its rounds' outcomes, in order: true after ``answers``
    answered rounds in a row spanning at least the required time, false at the first miss."""

    def __init__(self, settings: DirectSettings) -> None:
        self._s = settings
        self.run = 0
        self.run_start: float | None = None
        self.direct = False

    def answered(self, now: float, required: float) -> bool:
        """An answered round; True when this made the peer direct."""
        if self.run == 0:
            self.run_start = now
        self.run += 1
        assert self.run_start is not None
        if not self.direct and self.run >= self._s.answers and now - self.run_start >= required:
            self.direct = True
            return True
        return False

    def missed(self) -> bool:
        """An unanswered round; True when this ended the verdict."""
        was, self.direct, self.run, self.run_start = self.direct, False, 0, None
        return was


@dataclass
class _Peer:
    addresses: tuple[Address, ...]
    streak: Streak
    due: float
    round: int = 0
    round_sent: float | None = None  # when the round in flight went out (None: none in flight)
    round_answered: bool = False


Change = tuple[str, bool]  # (peer public key, direct)


class Echoes:
    """Every relayed peer's rounds, requests in flight, verdict and flap backoff. Pure: times come in.

    A round sends one request to each of the peer's addresses (its endpoints, and where valid
    requests of it came from), each with its own seq; it is answered when a valid reply to one
    of them comes back within ``timeout`` from the address that request went to.
    """

    def __init__(self, settings: DirectSettings = DirectSettings(), first_seq: int = 1) -> None:
        self.settings = settings
        self._peers: dict[str, _Peer] = {}
        self._inflight: dict[int, tuple[str, Address, int]] = {}  # seq → (peer, address, round)
        self._seq = first_seq
        self._ended: dict[str, tuple[float, bool]] = {}  # peer → (when it stopped being relayed, direct then)
        self._doublings: dict[str, int] = {}
        self._learned: dict[str, tuple[Address, ...]] = {}

    def set_peers(self, peers: Mapping[str, tuple[Address, ...]], now: float) -> None:
        """Probe exactly these peers (public key → echo addresses). A peer that stays keeps its
        verdict; one that goes is remembered for flap detection; one that comes back within
        ``flap_window`` after it went while direct doubles the hold it needs."""
        for key in set(self._peers) - set(peers):
            self._ended[key] = (now, self._peers.pop(key).streak.direct)
            self._learned.pop(key, None)
        for key, addresses in peers.items():
            p = self._peers.get(key)
            if p is None:
                ended = self._ended.pop(key, None)
                if ended is not None and ended[1] and now - ended[0] <= self.settings.flap_window:
                    self._doublings[key] = min(self.settings.max_doublings, self._doublings.get(key, 0) + 1)
                    log.info("underlay: a pair ended on its direct path is relayed again: its peer "
                             "must answer %.0fs before it is direct again", self.required(key))
                self._peers[key] = _Peer(addresses, Streak(self.settings), now)
            else:
                p.addresses = addresses
        self._ended = {k: v for k, v in self._ended.items() if now - v[0] <= self.settings.flap_window}
        self._inflight = {s: v for s, v in self._inflight.items() if v[0] in self._peers}

    def required(self, key: str) -> float:
        """Seconds a peer must answer in a row before it is direct (``hold``, doubled per flap)."""
        return self.settings.hold * 2 ** self._doublings.get(key, 0)

    def learned(self, key: str, source: Address) -> None:
        """A valid request of this peer came from ``source``: probe it there too (newest first)."""
        if key in self._peers:
            self._learned[key] = tuple(dict.fromkeys((source, *self._learned.get(key, ()))))[:2]

    def _addresses(self, key: str) -> tuple[Address, ...]:
        both = dict.fromkeys((*self._learned.get(key, ()), *self._peers[key].addresses))
        return tuple(both)[:self.settings.max_addresses]

    def due(self, now: float) -> list[tuple[int, str, Address]]:
        """The requests to send now, as (seq, peer, address); each is in flight from now."""
        out = []
        for key, p in self._peers.items():
            if p.due > now:
                continue
            p.due = now + self.settings.interval
            addresses = self._addresses(key)
            if not addresses:
                continue  # nowhere to send: the other end's requests may teach us an address
            p.round += 1
            p.round_sent, p.round_answered = now, False
            for address in addresses:
                self._seq += 1
                self._inflight[self._seq] = (key, address, p.round)
                out.append((self._seq, key, address))
        return out

    def reply(self, seq: int, key: str, source: Address, now: float) -> Change | None:
        """A valid reply of peer ``key`` to request ``seq`` from ``source``: the change it made."""
        sent = self._inflight.get(seq)
        if sent is None or sent[0] != key or not _same(sent[1], source):
            return None
        p = self._peers[key]
        for s in [s for s, v in self._inflight.items() if v[0] == key and v[2] == sent[2]]:
            del self._inflight[s]  # one answer answers the round
        if sent[2] != p.round or p.round_answered or p.round_sent is None \
                or now - p.round_sent >= self.settings.timeout:
            return None
        p.round_answered = True
        return (key, True) if p.streak.answered(now, self.required(key)) else None

    def expire(self, now: float) -> list[Change]:
        """Count the rounds unanswered for ``timeout`` as missed."""
        out = []
        for key, p in self._peers.items():
            if p.round_sent is None or now - p.round_sent < self.settings.timeout:
                continue
            p.round_sent = None
            if not p.round_answered:
                self._inflight = {s: v for s, v in self._inflight.items() if (v[0], v[2]) != (key, p.round)}
                if p.streak.missed():
                    out.append((key, False))
        return out

    def next_event(self, now: float) -> float:
        """Seconds until a round is due or one in flight times out (0: now)."""
        times = [p.due for p in self._peers.values()]
        times += [p.round_sent + self.settings.timeout for p in self._peers.values()
                  if p.round_sent is not None]
        return max(0.0, min(times) - now) if times else self.settings.interval

    def direct(self) -> frozenset[str]:
        """The peers whose direct path holds now."""
        return frozenset(k for k, p in self._peers.items() if p.streak.direct)

    @property
    def peers(self) -> frozenset[str]:
        return frozenset(self._peers)


def _same(a: Address, b: Address) -> bool:
    try:
        return a[1] == b[1] and ipaddress.ip_address(a[0]) == ipaddress.ip_address(str(b[0]).split("%")[0])
    except ValueError:
        return False


class Responder:
    """Which requests to answer, and the answer: only a request to us, from one of ``peers`` (the
    peers of our relayed pairs), with a valid MAC, a time within ``max_skew`` of ours and a seq
    not seen from that peer before (a window of recent ones). Pure but for the cached pair keys."""

    WINDOW = 256  # recent seqs remembered per peer (reordering across families is a few)

    def __init__(self, private_key: str, public_key: str,
                 settings: DirectSettings = DirectSettings()) -> None:
        self._private = private_key
        self.public = base64.b64decode(public_key)
        self._s = settings
        self._keys: dict[bytes, bytes] = {}  # peer's raw public key → pair key
        self._peers: frozenset[bytes] = frozenset()
        self._seen: dict[bytes, OrderedDict[int, None]] = {}

    def set_peers(self, peers: Iterable[str]) -> None:
        """Answer requests of exactly these peers (base64 public keys) from now on."""
        self._peers = frozenset(base64.b64decode(k) for k in peers)
        self._keys = {k: v for k, v in self._keys.items() if k in self._peers}
        self._seen = {k: v for k, v in self._seen.items() if k in self._peers}

    def key(self, peer: bytes) -> bytes | None:
        """The pair key with one of our peers (None: not one of them)."""
        if peer not in self._peers:
            return None
        if peer not in self._keys:
            self._keys[peer] = pair_key(self._private, base64.b64encode(peer).decode())
        return self._keys[peer]

    def answer(self, data: bytes, wall_ms: int) -> bytes | None:
        """The reply to a valid request (None: not one, not from a peer of ours, or a replay)."""
        echo = parse(data)
        if echo is None or echo.kind != REQUEST or echo.receiver != self.public:
            return None
        key = self.key(echo.sender)
        if key is None or not verify(data, key) or abs(wall_ms - echo.time_ms) > self._s.max_skew * 1000:
            return None
        seen = self._seen.setdefault(echo.sender, OrderedDict())
        if echo.seq in seen or (len(seen) >= self.WINDOW and echo.seq < min(seen)):
            return None
        seen[echo.seq] = None
        while len(seen) > self.WINDOW:
            seen.popitem(last=False)
        return pack(Echo(REPLY, self.public, echo.sender, echo.seq, echo.time_ms), key)

    def reply_of(self, data: bytes) -> tuple[str, int] | None:
        """(peer's base64 key, seq) of a valid reply to us from one of our peers, else None."""
        echo = parse(data)
        if echo is None or echo.kind != REPLY or echo.receiver != self.public:
            return None
        key = self.key(echo.sender)
        if key is None or not verify(data, key):
            return None
        return base64.b64encode(echo.sender).decode(), echo.seq


# ----------------------------------------------------------------------------------- sockets
class Underlay(UdpLoop):
    """:class:`Echoes` and :class:`Responder` on real UDP sockets (one per address family the host
    has, at ``listen_port + port_offset``), in one daemon thread (:class:`~agent.socketloop.SocketLoop`).

    ``on_change(public_key, direct)`` is called from its thread when a peer's verdict flips (keep
    it short: the agent only queues an event).
    """

    thread_name = "skymesh-underlay"
    what = "underlay echo"

    def __init__(self, private_key: str, public_key: str, listen_port: int,
                 settings: DirectSettings = DirectSettings(), *,
                 on_change: Callable[[str, bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(log, listen_port + settings.port_offset)
        self.settings = settings
        self._listeners = [on_change] if on_change is not None else []
        self._clock = clock
        self._echoes = Echoes(settings, first_seq=time.time_ns())  # grows across restarts: no replay
        self._responder = Responder(private_key, public_key, settings)
        self._lock = threading.Lock()
        self._me = base64.b64decode(public_key)
        self._targets: dict[str, tuple[Address, ...]] = {}

    # ----------------------------------------------------------------------- API
    def add_listener(self, on_change: Callable[[str, bool], None]) -> None:
        self._listeners.append(on_change)

    def set_peers(self, peers: Mapping[str, tuple[Address, ...]]) -> None:
        """Probe, and answer, exactly these peers (public key → echo addresses) from now on."""
        with self._lock:
            if dict(peers) == self._targets:
                return
            self._targets = dict(peers)
            self._echoes.set_peers(peers, self._clock())
            self._responder.set_peers(peers)
        self._wake()

    def direct(self) -> frozenset[str]:
        with self._lock:
            return self._echoes.direct()

    def required(self, key: str) -> float:
        with self._lock:
            return self._echoes.required(key)

    def start(self) -> None:
        """Open the echo sockets (a family the host cannot bind is left out), then the thread."""
        self._open()
        super().start()

    # ---------------------------------------------------------------------- loop
    def _step(self) -> None:
        with self._lock:
            now = self._clock()
            sends = self._echoes.due(now)
            wait = self._echoes.next_event(now)
            packets = []
            for seq, key, address in sends:
                pk = self._responder.key(base64.b64decode(key))
                if pk is not None:
                    packets.append((pack(Echo(REQUEST, self._me, base64.b64decode(key), seq,
                                              int(time.time() * 1000)), pk), address))
        for data, address in packets:
            self._send(data, address)
        changes: list[Change] = []
        for r in self._ready(min(wait, 1.0)):
            for data, address in self._datagrams(r, 512):
                with self._lock:
                    if (out := self._responder.answer(data, int(time.time() * 1000))) is not None:
                        echo = parse(data)
                        assert echo is not None
                        self._echoes.learned(base64.b64encode(echo.sender).decode(), address)
                    elif (got := self._responder.reply_of(data)) is not None and \
                            (c := self._echoes.reply(got[1], got[0], address, self._clock())) is not None:
                        changes.append(c)
                if out is not None:
                    self._send(out, address)
        with self._lock:
            changes += self._echoes.expire(self._clock())
        for key, direct in changes:
            log.info("underlay: the direct path to peer %s %s", key[:8],
                     "answers" if direct else "STOPPED answering")
            for listener in self._listeners:
                listener(key, direct)
