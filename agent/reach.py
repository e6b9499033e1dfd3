"""Which peers this host is trying to reach without a working WireGuard session: the pairs that may
need an automatic relay (issue 10, autorelay rule 1). Pure: the device's counters and the times
come in.

A peer counts as *trying* when the device sends to it and no session answers:

- it has sent bytes (handshake initiations, or data queued behind them) and never shook hands; or
- its last handshake is older than WireGuard's ``REJECT_AFTER_TIME`` (180 s: past it no session
  key may be used, and WireGuard re-keys after 120 s while it sends), and its transmit counter
  grew since the last read: the path broke after it had worked.

Such a peer is probed fast through the tunnel (:mod:`agent.probe`) from the read that found it,
but not declared down before :attr:`ReachSettings.bound` has passed since then: WireGuard's
handshake must get a fair chance first. The bound is one ``REKEY_TIMEOUT`` (5 s), the time
WireGuard waits for an answer before it sends its next initiation: within it the first
initiation (the one the first packet, or our first probe, triggered) completes on any path that
works, however slow (a handshake is one round trip; 5 s covers any terrestrial RTT many times
over), so a pair still silent after it has lost at least one whole handshake attempt. Shorter
would relay pairs whose peer was merely starting; each further ``REKEY_TIMEOUT`` waited adds 5 s
to the time a blocked host waits for its relay (the goal is every peer within 15 s of joining).

While a peer is undecided (trying, and its verdict not yet reached), the agent reads the device
about once a second (:attr:`ReachSettings.watch`), and also for a short while after peers were
added (:attr:`ReachSettings.settle`: a host that just joined starts sending to them); otherwise at
its ordinary status check. One wireguard-go UAPI read of 1,000 peers costs about 8 ms to parse
and 1 ms to observe here (measured on the build machine, under load): under 1 % of a core while
reading every second, and only while something is undecided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .wg.base import DevicePeer

__all__ = ["ReachSettings", "Attempts", "REKEY_TIMEOUT", "REJECT_AFTER_TIME"]

REKEY_TIMEOUT = 5.0  # WireGuard (whitepaper §6.1): seconds before a handshake initiation is retried
REJECT_AFTER_TIME = 180  # WireGuard: seconds after which a session's keys are no longer used


@dataclass(frozen=True)
class ReachSettings:
    """``bound``: seconds a peer may be tried without a session before its probes can say it is
    down (see the module docstring). ``watch``: seconds between device reads while a peer is
    undecided or peers were just added; ``decide``: how long after the bound a peer is still
    probed fast (its down verdict needs a few misses past the bound); ``settle``: how long after
    peers were added the device is read at ``watch``; ``stale``: a handshake older than this,
    while the peer is sent to, no longer counts as a session."""

    bound: float = REKEY_TIMEOUT
    watch: float = 1.0
    decide: float = 5.0
    settle: float = 30.0
    stale: int = REJECT_AFTER_TIME


class Attempts:
    """The peers (by WireGuard key) this host tries to reach without a session, and since when
    (the monotonic time of the device read that first found it trying)."""

    def __init__(self, settings: ReachSettings = ReachSettings()) -> None:
        self.settings = settings
        self._since: dict[str, float] = {}
        self._tx: dict[str, int] = {}  # each peer's transmit counter at the last read
        self._added_at = float("-inf")

    def observe(self, stats: Mapping[str, DevicePeer], wall: float, now: float) -> None:
        """Take one read of the device: ``wall`` is the unix time of the read (handshake times are
        unix seconds), ``now`` the monotonic time the verdicts are kept in."""
        since: dict[str, float] = {}
        for key, s in stats.items():
            grew = s.tx_bytes > self._tx.get(key, s.tx_bytes)
            old = s.latest_handshake is not None and wall - s.latest_handshake > self.settings.stale
            never = s.latest_handshake is None and s.tx_bytes > 0
            # a broken path: sent to past the last session; it stays tried until a new session
            if never or (old and (grew or key in self._since)):
                since[key] = self._since.get(key, now)
        self._since = since
        self._tx = {k: s.tx_bytes for k, s in stats.items()}

    def peers_added(self, now: float) -> None:
        """Peers came onto the device: read it at ``watch`` for ``settle`` seconds."""
        self._added_at = now

    def trying(self) -> dict[str, float]:
        """Each peer tried without a session → when it was first found trying."""
        return dict(self._since)

    def hold_until(self, key: str) -> float:
        """Before this (monotonic) time a probe of the peer may not say it is down."""
        return self._since[key] + self.settings.bound

    def undecided(self, key: str, now: float) -> bool:
        """Whether the peer is still within its bound or just past it (probe it fast)."""
        return now < self._since[key] + self.settings.bound + self.settings.decide

    def next_read(self, now: float, otherwise: float) -> float:
        """Seconds until the device should be read again: ``watch`` while a peer is undecided or
        peers were added less than ``settle`` ago, else ``otherwise``."""
        busy = now - self._added_at < self.settings.settle or any(self.undecided(k, now) for k in self._since)
        return self.settings.watch if busy else otherwise
