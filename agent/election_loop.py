"""A gateway group member's election runtime: :mod:`chalicelib.domain.election` on real UDP sockets.

The pure protocol decides; this module gives it a clock, messages and a voice (issue 11):

- **Steps.** Every group this host is a member of is stepped at least every :data:`TICK` s (half a
  ``heartbeat`` at most) and at once on every message for it, with the host's monotonic clock.
- **Messages** (claims, acks, and the active member's client endpoints) travel as small UDP
  datagrams between the members' overlay addresses on :data:`ELECTION_PORT` (so through the mesh's
  WireGuard tunnels). One socket per address family serves every group of the host: each datagram
  names its group. The format (:func:`encode`, :func:`decode`) is versioned, at most
  :data:`MAX_SIZE` bytes, decoded with strict bounds, and authenticated with HMAC-SHA256 under a key
  derived (HKDF) from the group's private key, bound to network, group and key version
  (:func:`mac_key`): only members holding the current group key take part. A datagram that is
  malformed, names a group we do not serve or another key version, fails its MAC, comes from a
  non-member or acks another incarnation's claim is dropped and counted (:meth:`ElectionLoop.counters`);
  none raises into the loop.
- **Liveness input**: which members are up is the agent's prober's verdict (``Hooks.up``), not a
  second prober.
- **The control plane as a voter** (``claims`` endpoint, :meth:`agent.api.ApiClient.claim_gateway_group`):
  asked for the first claim of each campaign and for every claim while the members seen up cannot
  form a quorum without it (a 2-member group with one down). Asked from a
  worker thread (:class:`VoteWorker`), never from the step loop; its answer, late or not, becomes an
  :class:`~chalicelib.domain.election.Ack` of the claim it answers (``step`` ignores stale ones).
- **Acting.** ``Hooks.on_standby`` is called as soon as a step says standby (the floating address
  is withdrawn before anything else is done); ``Hooks.on_active`` only after checking
  :func:`~chalicelib.domain.election.is_active` again right before the call. Both run in the loop's
  thread: keep them short (tens of ms), a hook that blocks delays renewals.
- **Incarnation** (:func:`next_incarnation`): a persisted counter in the state directory (raised past
  the wall clock's seconds too), written durably before use, with the boot id mixed in, so a restart
  never reuses one.

The active member sends its group interface's client endpoints (public key → ``ip:port``, what
WireGuard saw last) every :data:`ENDPOINTS_EVERY` s and at the first tick after they change; a
standby merges them and hands the result to ``Hooks.learn_endpoints``, so a member that takes over
can start handshakes to the clients at once.

Layers as elsewhere in the agent: the codec is pure; :class:`GroupDriver` is one group's runtime with
the clock and the sending passed in (unit-tested with an injected clock); :class:`ElectionLoop`
runs the drivers on sockets in one :class:`~agent.socketloop.SocketLoop` thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chalicelib.domain import election
from chalicelib.domain.election import CONTROL_PLANE, ELECTION_PORT, Ack, Claim, Group, Record, Role, Timing

from .socketloop import Address, UdpLoop
from .state import write_private

log = logging.getLogger("skymesh.agent.election")

__all__ = ["ELECTION_PORT", "TICK", "ENDPOINTS_EVERY", "MAX_SIZE", "MAX_ENDPOINTS", "MAX_LEARNED",
           "WIRE_VERSION", "DEFAULT_TIMING", "Endpoints", "Message", "DropError", "mac_key", "encode",
           "encode_endpoints", "decode", "GroupConfig", "peer_addresses", "Hooks", "GroupStatus", "Vote",
           "VoteWorker", "GroupDriver", "ElectionLoop", "next_incarnation", "control_plane_vote"]

DEFAULT_TIMING = Timing()
TICK = 0.25  # seconds between steps at most (election.step wants ≤ heartbeat / 2)
RETRY_ACTIVATE = 1.0  # seconds before an on_active that failed is tried again
ENDPOINTS_EVERY = 1.0  # the active member resends its clients' endpoints this often
MAX_SIZE = 1232  # bytes per datagram: fits IPv6's minimum MTU, so inside any tunnel unfragmented
WIRE_VERSION = 1
MAGIC = b"SMG"
CLAIM, ACK, ENDPOINTS = 1, 2, 3
MAX_LEARNED = 65536  # client endpoints a standby keeps (a group has far fewer clients)
MAX_NAME = 64  # bytes of a network, group or host id (ids are ≤ 45 characters)
MAC_SIZE = 32
_HEAD = struct.Struct("!3sBBI")  # magic, version, kind, key version
_CLAIM = struct.Struct("!QdQ")  # epoch, sent, incarnation
_ACK = struct.Struct("!QdQBQ")  # claim: epoch, sent, incarnation; granted; epoch
_ENDPOINTS = struct.Struct("!QQH")  # incarnation, seq, count
_INFO = b"skymesh gateway-group election v1"
_MAX_INT = 2**63 - 1  # epochs and incarnations (JSON and DynamoDB numbers hold them exactly)
# The largest endpoint entry: public key, family, IPv6 address, port.
_ENTRY_MAX = 32 + 1 + 16 + 2
MAX_ENDPOINTS = (MAX_SIZE - _HEAD.size - 2 * (1 + MAX_NAME) - _ENDPOINTS.size - MAC_SIZE) // _ENTRY_MAX


# ------------------------------------------------------------------------------------ the codec
@dataclass(frozen=True)
class Endpoints:
    """Part of the active member's client endpoints (public key, base64 → ``ip:port``/``[ip6]:port``).
    ``seq`` grows with every message of one ``incarnation`` of ``member``: an older one is stale."""

    member: str
    incarnation: int
    seq: int
    endpoints: Mapping[str, str]


Message = Claim | Ack | Endpoints


class DropError(Exception):
    """A datagram that is not a valid message for us; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def mac_key(group_private_key: str, network_id: str, group_id: str, key_version: int) -> bytes:
    """The MAC key of a group's election messages: HKDF-SHA256 of the group's private key (base64),
    bound to network, group and key version. Only holders of that key version can derive it, and a
    message of one group or version does not verify under another's."""
    raw = base64.b64decode(group_private_key, validate=True)
    info = _INFO + b"".join(_name(v) for v in (network_id, group_id)) + struct.pack("!I", key_version)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(raw)


def _name(value: str) -> bytes:
    raw = value.encode()
    if not 1 <= len(raw) <= MAX_NAME or not _printable(raw):
        raise ValueError(f"an id in an election message must be 1 to {MAX_NAME} printable ASCII bytes")
    return bytes([len(raw)]) + raw


def _printable(raw: bytes) -> bool:
    return all(0x21 <= b <= 0x7E for b in raw)


def _seal(kind: int, group_id: str, key_version: int, sender: str, body: bytes, key: bytes) -> bytes:
    data = _HEAD.pack(MAGIC, WIRE_VERSION, kind, key_version) + _name(group_id) + _name(sender) + body
    out = data + hmac.new(key, data, hashlib.sha256).digest()
    assert len(out) <= MAX_SIZE
    return out


def encode(message: Claim | Ack, group_id: str, key_version: int, key: bytes) -> bytes:
    """A claim or an ack on the wire (the claim's member, or the ack's voter, is the sender)."""
    if isinstance(message, Claim):
        return _seal(CLAIM, group_id, key_version, message.member,
                     _CLAIM.pack(message.epoch, message.sent, message.incarnation), key)
    c = message.claim
    return _seal(ACK, group_id, key_version, message.voter, _name(c.member) + _ACK.pack(
        c.epoch, c.sent, c.incarnation, int(message.granted), message.epoch), key)


def encode_endpoints(member: str, incarnation: int, first_seq: int, endpoints: Mapping[str, str],
                     group_id: str, key_version: int, key: bytes) -> list[bytes]:
    """``endpoints`` as messages of at most :data:`MAX_ENDPOINTS` entries each, with seqs from
    ``first_seq`` (one per message). An entry whose key or address does not parse is left out."""
    entries = [e for k, v in sorted(endpoints.items()) if (e := _entry(k, v)) is not None]
    chunks = [entries[i:i + MAX_ENDPOINTS] for i in range(0, len(entries), MAX_ENDPOINTS)] or [[]]
    return [_seal(ENDPOINTS, group_id, key_version, member,
                  _ENDPOINTS.pack(incarnation, first_seq + i, len(chunk)) + b"".join(chunk), key)
            for i, chunk in enumerate(chunks)]


def _entry(public_key: str, endpoint: str) -> bytes | None:
    try:
        raw = base64.b64decode(public_key, validate=True)
        host, _, port = endpoint.rpartition(":")
        ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
        number = int(port) if port.isdigit() else 0
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 32 or not 0 < number <= 65535:
        return None
    return raw + bytes([ip.version]) + ip.packed + struct.pack("!H", number)


class _Reader:
    def __init__(self, data: bytes, at: int) -> None:
        self.data, self.at = data, at

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise DropError("malformed")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def name(self) -> str:
        raw = self.take(self.take(1)[0])
        if not 1 <= len(raw) <= MAX_NAME or not _printable(raw):
            raise DropError("malformed")
        return raw.decode()

    def unpack(self, shape: struct.Struct) -> tuple[int | float, ...]:
        return shape.unpack(self.take(shape.size))


def _int(value: int | float) -> int:
    if not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise DropError("malformed")
    return value


def _time(value: int | float) -> float:
    if not math.isfinite(value):
        raise DropError("malformed")
    return float(value)


def decode(data: bytes, keys: Callable[[str], tuple[int, bytes] | None]) -> tuple[str, Message]:
    """(group id, message) of a datagram, authenticated; ``keys(group_id)`` gives the group's current
    (key version, MAC key), None for a group we do not serve. Raises :class:`DropError` whose
    ``reason`` is ``malformed``, ``unknown_group``, ``other_version`` or ``bad_mac``; reads nothing
    beyond :data:`MAX_SIZE` bytes and accepts no trailing byte."""
    if not _HEAD.size + MAC_SIZE < len(data) <= MAX_SIZE:
        raise DropError("malformed")
    magic, version, kind, key_version = _HEAD.unpack_from(data)
    if magic != MAGIC or version != WIRE_VERSION or kind not in (CLAIM, ACK, ENDPOINTS):
        raise DropError("malformed")
    body = data[:-MAC_SIZE]
    r = _Reader(body, _HEAD.size)
    group_id, sender = r.name(), r.name()
    known = keys(group_id)
    if known is None:
        raise DropError("unknown_group")
    if known[0] != key_version:
        raise DropError("other_version")
    if not hmac.compare_digest(hmac.new(known[1], body, hashlib.sha256).digest(), data[-MAC_SIZE:]):
        raise DropError("bad_mac")
    message: Message
    if kind == CLAIM:
        epoch, sent, incarnation = r.unpack(_CLAIM)
        message = Claim(sender, _int(epoch), _time(sent), _int(incarnation))
    elif kind == ACK:
        member = r.name()
        epoch, sent, incarnation, granted, promised = r.unpack(_ACK)
        if granted not in (0, 1):
            raise DropError("malformed")
        message = Ack(sender, Claim(member, _int(epoch), _time(sent), _int(incarnation)), granted == 1,
                      _int(promised))
    else:
        incarnation, seq, count = r.unpack(_ENDPOINTS)
        if count > MAX_ENDPOINTS:
            raise DropError("malformed")
        endpoints = {}
        for _ in range(int(count)):
            key = base64.b64encode(r.take(32)).decode()
            family = r.take(1)[0]
            if family not in (4, 6):
                raise DropError("malformed")
            ip = ipaddress.ip_address(r.take(4 if family == 4 else 16))
            (port,) = r.unpack(struct.Struct("!H"))
            endpoints[key] = f"{ip}:{port}" if family == 4 else f"[{ip}]:{port}"
        message = Endpoints(sender, _int(incarnation), _int(seq), endpoints)
    if r.at != len(body):
        raise DropError("malformed")
    return group_id, message


# --------------------------------------------------------------------------- one group's runtime
@dataclass(frozen=True)
class GroupConfig:
    """A group as this member runs its election: ``members`` in priority order (``me`` among them),
    ``peers`` the address (overlay IP, port) of each other member's election socket, and the group's
    current key (its private half never shown by ``repr``)."""

    network_id: str
    group_id: str
    me: str
    members: tuple[str, ...]
    peers: Mapping[str, Address]
    key_version: int
    group_private_key: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.me not in self.members:
            raise ValueError(f"{self.me} is no member of group {self.group_id}")
        for value in (self.network_id, self.group_id, *self.members):
            _name(value)


def peer_addresses(overlay_ips: Mapping[str, str], port: int = ELECTION_PORT) -> dict[str, Address]:
    """The members' election sockets from their overlay addresses (``GroupConfig.peers``)."""
    return {member: (ip, port) for member, ip in overlay_ips.items()}


def _nothing() -> None:
    return None


def _no_endpoints() -> Mapping[str, str]:
    return {}


def _ignore(_endpoints: Mapping[str, str]) -> None:
    return None


@dataclass(frozen=True)
class Hooks:
    """What the election reads and drives on this member: ``up()`` the members its probes see up;
    ``on_active``/``on_standby`` (the group data plane's activate/deactivate); ``client_endpoints()``
    what the group interface sees now; ``learn_endpoints(map)`` a standby's copy of the active
    member's (the whole map merged so far, each time it changes)."""

    up: Callable[[], Iterable[str]]
    on_active: Callable[[], None] = _nothing
    on_standby: Callable[[], None] = _nothing
    client_endpoints: Callable[[], Mapping[str, str]] = _no_endpoints
    learn_endpoints: Callable[[Mapping[str, str]], None] = _ignore


@dataclass(frozen=True)
class GroupStatus:
    """A group's row of the status report: the member's role, the epoch it holds or has seen, and
    the other members its probes see down."""

    id: str
    role: Role
    epoch: int
    down: tuple[str, ...]

    def as_row(self) -> dict[str, object]:
        """``{"id", "role", "epoch", "down"}``, as the status report carries it (schema 5)."""
        return {"id": self.id, "role": self.role, "epoch": self.epoch, "down": list(self.down)}


Vote = Callable[[str, str, Claim], tuple[bool, int]]
"""The control plane's vote: ``(network_id, group_id, claim) -> (granted, epoch)``; may raise."""

Send = Callable[[bytes, Address], None]


class GroupDriver:
    """One group's election on this member: :func:`election.step` with its inbox, the sends it asks
    for, the hooks, the endpoints, and when to ask the control plane. Not thread-safe (the loop
    owns it); the clock comes in (``tick(clock, send)``)."""

    def __init__(self, config: GroupConfig, hooks: Hooks, incarnation: int, now: float,
                 timing: Timing = DEFAULT_TIMING, *, counters: Counter[str] | None = None,
                 ask: Callable[[str, str, Claim], None] | None = None) -> None:
        self.timing = timing
        self.hooks = hooks
        self.incarnation = incarnation
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._ask = ask
        self.state = election.start(config.me, now, timing, incarnation)
        self.config = config
        self.group = Group(config.members)
        self._key = mac_key(config.group_private_key, config.network_id, config.group_id, config.key_version)
        self.record: Record | None = None
        self.role: Role = "standby"
        self.acted: Role = "standby"
        self.epoch = 0
        self.down: tuple[str, ...] = ()
        self.next_at = now
        self._claims: list[Claim] = []
        self._acks: list[Ack] = []
        self._asked_epoch = 0
        self._retry_at = -math.inf  # after a failed on_active, not before this
        self._seq = 0
        self._sent_endpoints: Mapping[str, str] | None = None
        self._endpoints_at = -math.inf
        self._learned: dict[str, str] = {}
        self._heard: dict[str, tuple[int, int]] = {}  # member → (incarnation, seq) of its endpoints

    # ----------------------------------------------------------------------------- inputs
    def configure(self, config: GroupConfig) -> None:
        """New members, addresses or key for the same group; the election's memory is kept."""
        if (config.network_id, config.group_id, config.me) != (self.config.network_id,
                                                               self.config.group_id, self.config.me):
            raise ValueError("configure() takes the same group on the same member; add it anew instead")
        if (config.group_private_key, config.key_version) != (self.config.group_private_key,
                                                              self.config.key_version):
            self._key = mac_key(config.group_private_key, config.network_id, config.group_id,
                                config.key_version)
        self.config, self.group = config, Group(config.members)

    def key(self) -> tuple[int, bytes]:
        return self.config.key_version, self._key

    def receive(self, message: Message, *, from_control_plane: bool = False) -> None:
        """An authenticated message of this group, or the control plane's answer (from the vote
        worker, never from the network: a datagram naming the control plane as its sender is not
        its vote), for the next tick."""
        me = self.config.me
        sender = message.voter if isinstance(message, Ack) else message.member
        if from_control_plane:
            ok = isinstance(message, Ack) and sender == CONTROL_PLANE
        else:
            ok = sender != me and sender in self.group.members
        if not ok:
            self.counters["not_member"] += 1
        elif isinstance(message, Claim):
            self._claims.append(message)
        elif isinstance(message, Ack):
            if message.claim.member != me:
                self.counters["not_ours"] += 1
            elif message.claim.incarnation != self.incarnation:
                self.counters["other_incarnation"] += 1
            else:
                self._acks.append(message)
        else:
            self._learn(message)

    def _learn(self, message: Endpoints) -> None:
        last = self._heard.get(message.member)
        if last is not None and last[0] == message.incarnation and message.seq <= last[1]:
            self.counters["stale_endpoints"] += 1
            return
        self._heard[message.member] = (message.incarnation, message.seq)
        if self.acted == "active":
            return  # the active member's own view is the one that counts
        merged = {**self._learned, **message.endpoints}
        if len(merged) > MAX_LEARNED:
            self.counters["endpoints_over_limit"] += 1
            return
        if merged != self._learned:
            self._learned = merged
            self._call("learn_endpoints", self.hooks.learn_endpoints, dict(merged))

    @property
    def pending(self) -> bool:
        return bool(self._claims or self._acks)

    # ------------------------------------------------------------------------------ a step
    def tick(self, clock: Callable[[], float], send: Send) -> None:
        """Step the election on what arrived, send what it says, act on the role."""
        now = clock()
        me, others = self.config.me, [m for m in self.group.members if m != self.config.me]
        try:
            up = frozenset(m for m in self.hooks.up() if m in others)
        except Exception:  # noqa: BLE001 - a failing input must not stop the election: nobody seen up
            log.exception("group %s: reading which members are up failed", self.config.group_id)
            up = frozenset()
        claims, acks = tuple(self._claims), tuple(self._acks)
        self._claims, self._acks = [], []
        self.state, out = election.step(self.group, self.timing, self.state,
                                        election.Inputs(now, up, claims, acks, self.record))
        self.role, self.epoch = out.role, out.epoch
        self.down = tuple(m for m in others if m not in up)
        self.next_at = min([now + min(TICK, self.timing.heartbeat / 2), *self._moments(now)])
        if out.role == "standby" and self.acted == "active":
            self.acted = "standby"  # withdraw first, whatever else this step does
            log.info("group %s: standby at epoch %d", self.config.group_id, out.epoch)
            self._call("on_standby", self.hooks.on_standby)
        gid, version = self.config.group_id, self.config.key_version
        if out.claim is not None:
            data = encode(out.claim, gid, version, self._key)
            for m in others:
                if m in self.config.peers:
                    send(data, self.config.peers[m])
            self.counters["claims_sent"] += 1
            if self._ask is not None and (out.claim.epoch != self._asked_epoch
                                          or not self.group.quorum(up | {me})):
                self._asked_epoch = out.claim.epoch
                self._ask(self.config.network_id, gid, out.claim)
        for ack in out.acks:
            if ack.claim.member in self.config.peers:
                send(encode(ack, gid, version, self._key), self.config.peers[ack.claim.member])
                self.counters["acks_sent"] += 1
        if (out.role == "active" and self.acted != "active" and now >= self._retry_at
                and election.is_active(self.state, clock(), self.timing)):
            self.acted = "active"
            log.info("group %s: ACTIVE at epoch %d", gid, out.epoch)
            if not self._call("on_active", self.hooks.on_active):
                self.acted = "standby"
                self._call("on_standby", self.hooks.on_standby)  # withdraw whatever it half did
                self._retry_at = now + RETRY_ACTIVATE
        if self.acted == "active":
            self._send_endpoints(now, send)

    def _moments(self, now: float) -> list[float]:
        """The coming moments at which a step may decide something new without a message, so the
        step runs right then rather than up to a tick later: the lease's end (a member that cannot
        renew withdraws on time), the next heartbeat of a claim (renewals every ``heartbeat``, so a
        lease of three outlives two lost ones), and the moments a free member of any rank may
        campaign (what it does then is ``election.step``'s to decide)."""
        s, t = self.state, self.timing
        out = []
        if s.lease_from is not None:
            out.append(s.lease_from + t.lease)
        if s.claim_epoch is not None and s.last_sent is not None:
            out.append(s.last_sent + t.heartbeat)  # renew on the heartbeat, not up to a tick after it
        if s.claim_epoch is None:
            free = max(s.promise.until if s.promise is not None else 0.0, s.quiet_until, s.heard_until)
            ranks = range(len(self.group.members))
            out += [start + k * t.stagger for start in (free, s.view_since) for k in ranks]
        return [m for m in out if m > now]

    def _send_endpoints(self, now: float, send: Send) -> None:
        try:
            current = dict(self.hooks.client_endpoints())
        except Exception:  # noqa: BLE001 - endpoints are a help for the next active member, not vital
            log.exception("group %s: reading the client endpoints failed", self.config.group_id)
            return
        if current == self._sent_endpoints and now - self._endpoints_at < ENDPOINTS_EVERY:
            return
        others = [m for m in self.group.members if m != self.config.me and m in self.config.peers]
        packets = encode_endpoints(self.config.me, self.incarnation, self._seq + 1, current,
                                   self.config.group_id, self.config.key_version, self._key)
        self._seq += len(packets)
        for data in packets:
            for m in others:
                send(data, self.config.peers[m])
        self.counters["endpoints_sent"] += len(packets)
        self._sent_endpoints, self._endpoints_at = current, now

    def _call(self, what: str, hook: Callable[..., None], *args: object) -> bool:
        try:
            hook(*args)
        except Exception:  # noqa: BLE001 - a failing hook is logged; the election goes on
            log.exception("group %s: %s failed", self.config.group_id, what)
            return False
        return True

    def close(self) -> None:
        """Withdraw if active (the group is gone from this member, or the loop stops)."""
        if self.acted == "active":
            self.acted = "standby"
            self._call("on_standby", self.hooks.on_standby)

    def status(self) -> GroupStatus:
        return GroupStatus(self.config.group_id, self.role, self.epoch, self.down)


# --------------------------------------------------------------------------- the control plane
class VoteWorker:
    """Asks the control plane for its vote off the step loop: one call at a time, the latest claim
    of each group waiting (an older one waiting is replaced: its answer could only be stale), every
    answer handed to ``deliver(group_id, ack)``. A call that fails is logged and forgotten."""

    def __init__(self, vote: Vote, deliver: Callable[[str, Ack], None]) -> None:
        self._vote = vote
        self._deliver = deliver
        self._cond = threading.Condition()
        self._waiting: dict[str, tuple[str, Claim]] = {}
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.calls = 0

    def ask(self, network_id: str, group_id: str, claim: Claim) -> None:
        with self._cond:
            self._waiting[group_id] = (network_id, claim)
            self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="skymesh-election-vote", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                group_id = next(iter(self._waiting))
                network_id, claim = self._waiting.pop(group_id)
            self.calls += 1
            try:
                granted, epoch = self._vote(network_id, group_id, claim)
            except Exception as e:  # noqa: BLE001 - unreachable, refused, malformed: no vote this time
                log.info("group %s: no vote from the control plane for epoch %d: %s",
                         group_id, claim.epoch, e)
                continue
            self._deliver(group_id, Ack(CONTROL_PLANE, claim, granted, epoch))


def control_plane_vote(claim_call: Callable[..., tuple[bool, int]]) -> Vote:
    """A :data:`Vote` from :meth:`agent.api.ApiClient.claim_gateway_group` (or anything shaped so)."""
    def vote(network_id: str, group_id: str, claim: Claim) -> tuple[bool, int]:
        return claim_call(network_id, group_id, member=claim.member, epoch=claim.epoch,
                          incarnation=claim.incarnation)
    return vote


# ------------------------------------------------------------------------------------ the loop
class ElectionLoop(UdpLoop):
    """Every gateway group of this member, on one UDP port, in one daemon thread.

    ``incarnation``: :func:`next_incarnation` at the agent's start. ``port``/``host``: where the
    socket listens (:data:`ELECTION_PORT` on every address by default; tests bind 127.0.0.1 and a
    port of their own). ``vote``: the control plane's vote (None: never asked). Thread-safe API;
    the hooks run in the loop's thread.
    """

    thread_name = "skymesh-election"
    what = "election"

    def __init__(self, incarnation: int, *, port: int = ELECTION_PORT, host: str | None = None,
                 timing: Timing = DEFAULT_TIMING, clock: Callable[[], float] = time.monotonic,
                 vote: Vote | None = None) -> None:
        super().__init__(log, port, host)
        self.incarnation = incarnation
        self.timing = timing
        self._clock = clock
        self._lock = threading.RLock()
        self._drivers: dict[str, GroupDriver] = {}
        self._due: set[str] = set()
        self._counters: Counter[str] = Counter()
        self._worker = VoteWorker(vote, self._deliver) if vote is not None else None

    # ----------------------------------------------------------------------------------- API
    def set_group(self, config: GroupConfig, hooks: Hooks) -> None:
        """Run (or go on running, with new members, addresses or key) ``config``'s election."""
        with self._lock:
            driver = self._drivers.get(config.group_id)
            same = driver is not None and (driver.config.me, driver.config.network_id) == (config.me,
                                                                                     config.network_id)
            if driver is None or not same:
                if driver is not None:
                    driver.close()
                self._drivers[config.group_id] = GroupDriver(
                    config, hooks, self.incarnation, self._clock(), self.timing, counters=self._counters,
                    ask=self._worker.ask if self._worker is not None else None)
            else:
                driver.configure(config)
                driver.hooks = hooks
            self._due.add(config.group_id)
        self._wake()

    def remove_group(self, group_id: str) -> None:
        """Stop taking part in ``group_id``'s election (withdrawing first if active)."""
        with self._lock:
            driver = self._drivers.pop(group_id, None)
            if driver is not None:
                driver.close()

    def set_record(self, group_id: str, active: str | None, epoch: int) -> None:
        """The control plane's record of the group (from the plan): who it says is active, at which epoch."""
        with self._lock:
            driver = self._drivers.get(group_id)
            if driver is not None:
                driver.record = Record(active, epoch)

    def status(self) -> tuple[GroupStatus, ...]:
        """One row per group (the status report's ``groups``), in group id order."""
        with self._lock:
            return tuple(d.status() for _, d in sorted(self._drivers.items()))

    def role(self, group_id: str) -> Role | None:
        """What this member does for ``group_id`` now (the hooks' last call), None for no such group."""
        with self._lock:
            driver = self._drivers.get(group_id)
            return driver.acted if driver is not None else None

    def counters(self) -> dict[str, int]:
        """Messages sent, and datagrams dropped by reason (``malformed``, ``unknown_group``,
        ``other_version``, ``bad_mac``, ``not_member``, ``not_ours``, ``other_incarnation``,
        ``stale_endpoints``)."""
        with self._lock:
            return dict(self._counters)

    def start(self) -> None:
        """Open the socket(s), then the thread (and the control plane's vote worker)."""
        self._open()
        if not self._socks:
            raise OSError(f"election: cannot listen on UDP port {self.port}")
        if self._worker is not None:
            self._worker.start()
        super().start()

    def stop(self, timeout: float = 2.0, *, withdraw: bool = True) -> None:
        """End the thread and close the socket; then withdraw every group this member is active in
        (``withdraw=False`` leaves the hooks alone: a test's stand-in for a crash)."""
        if self._worker is not None:
            self._worker.stop(timeout)
        super().stop(timeout)
        if withdraw:
            with self._lock:
                for driver in self._drivers.values():
                    driver.close()

    # ---------------------------------------------------------------------------------- loop
    def _deliver(self, group_id: str, ack: Ack) -> None:
        with self._lock:
            driver = self._drivers.get(group_id)
            if driver is None:
                return
            driver.receive(ack, from_control_plane=True)
            self._due.add(group_id)
        self._wake()

    def _keys(self, group_id: str) -> tuple[int, bytes] | None:
        driver = self._drivers.get(group_id)
        return driver.key() if driver is not None else None

    def _step(self) -> None:
        with self._lock:
            now = self._clock()
            wait = min((max(0.0, d.next_at - now) for d in self._drivers.values()), default=TICK)
            if self._due:
                wait = 0.0
        for r in self._ready(min(wait, TICK)):
            for data, _source in self._datagrams(r, MAX_SIZE + 1):
                with self._lock:
                    try:
                        group_id, message = decode(data, self._keys)
                    except DropError as e:
                        self._counters[e.reason] += 1
                        continue
                    self._drivers[group_id].receive(message)
                    self._due.add(group_id)
        with self._lock:
            now = self._clock()
            for group_id, driver in list(self._drivers.items()):
                if group_id in self._due or driver.next_at <= now:
                    driver.tick(self._clock, self._send)
            self._due.clear()


# ---------------------------------------------------------------------------------- incarnation
_INCARNATION_FILE = "election.json"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def next_incarnation(state_dir: Path, boot_id: str | None = None, wall: float | None = None) -> int:
    """This start's incarnation, never one an earlier start used: a 32-bit counter in
    ``state_dir/election.json``, raised past both its stored value and the wall clock's seconds,
    written durably (mode 0600) before it is returned, with 16 bits of the boot id above it. So a
    restart gets a new one; a counter file lost or restored from a backup still gives a new one unless
    the wall clock went back too (or it is the same second), and on a new boot the boot id differs
    anyway (the monotonic clock restarted with it, which is what the incarnation fences). Raises
    OSError when it cannot be written: a member that cannot promise a new incarnation must not take
    part. Below 2**48: an exact JSON number for the control plane."""
    path = Path(state_dir) / _INCARNATION_FILE
    try:
        stored = int(json.loads(path.read_text())["counter"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        stored = 0
    seconds = int(time.time() if wall is None else wall)
    counter = max(stored + 1, seconds) & 0xFFFFFFFF
    boot = _boot_id() if boot_id is None else boot_id
    write_private(path, json.dumps({"counter": counter, "boot_id": boot}))
    return (zlib.crc32(boot.encode()) & 0xFFFF) << 32 | counter
