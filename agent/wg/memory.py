"""An in-memory WireGuard device: for unit tests and for simulating many agents in one process.

It behaves like a real backend as far as the :class:`~agent.wg.base.Backend`
contract goes (keys checked, allowed IPs replaced, endpoints kept when not given)
and records every change, so a test can assert that one config change reached a
device as exactly one per-peer diff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from chalicelib.domain.device import PeerConfig, PeerDiff

from . import key_bytes, public_key_of
from .base import BackendError, DevicePeer

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """A device that lives in this object.

    ``applies`` holds one :class:`~chalicelib.domain.device.PeerDiff` per non-empty
    :meth:`apply_peers` call, in order; ``creations`` counts device creations.
    """

    name = "memory"

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.applies: list[PeerDiff] = []
        self.creations = 0
        self._exists = False
        self._private_key: str | None = None
        self._public_key: str | None = None
        self._listen_port: int | None = None
        self._fwmark = 0
        self._peers: dict[str, PeerConfig] = {}
        self._traffic: dict[str, tuple[int, int, int]] = {}  # key -> (handshake, rx, tx)

    def __repr__(self) -> str:
        return f"MemoryBackend({self.ifname}, {len(self._peers)} peers, {len(self.applies)} applies)"

    @property
    def apply_count(self) -> int:
        return len(self.applies)

    def _need(self) -> None:
        if not self._exists:
            raise BackendError(f"{self.ifname}: no WireGuard device; call ensure_device first")

    def exists(self) -> bool:
        return self._exists

    def ensure_device(self, private_key: str, listen_port: int) -> bool:
        """Like the real ones; ``listen_port`` 0 keeps the current port (51820 on a new device)."""
        key_bytes(private_key, "private key")
        created = not self._exists
        if created:
            self._exists = True
            self.creations += 1
            self._peers = {}
            self._listen_port = None
            self._fwmark = 0
        if private_key != self._private_key:
            self._private_key = private_key
            self._public_key = public_key_of(private_key)
        if listen_port or self._listen_port is None:
            self._listen_port = listen_port or 51820
        return created

    def public_key(self) -> str | None:
        self._need()
        return self._public_key

    def listen_port(self) -> int | None:
        self._need()
        return self._listen_port

    def fwmark(self) -> int:
        self._need()
        return self._fwmark

    def set_fwmark(self, mark: int) -> None:
        self._need()
        if not 0 <= mark < 2**32:
            raise ValueError(f"fwmark {mark} is not a 32-bit unsigned integer")
        self._fwmark = mark

    def peers(self) -> dict[str, PeerConfig]:
        self._need()
        return dict(self._peers)

    def apply_peers(self, upsert: Sequence[PeerConfig], remove: Sequence[str]) -> None:
        """Upserts then removals, all or nothing (like one UAPI ``set``)."""
        self._need()
        if not upsert and not remove:
            return
        both = {p.public_key for p in upsert} & set(remove)
        if both:
            raise ValueError(f"peers both to upsert and to remove: {sorted(both)}")
        for p in upsert:
            key_bytes(p.public_key, "peer public key")
        for key in remove:
            key_bytes(key, "peer public key")
        for p in upsert:
            old = self._peers.get(p.public_key)
            if p.endpoint is None and old is not None and old.endpoint is not None:
                p = replace(p, endpoint=old.endpoint)  # WireGuard keeps an endpoint it is not given
            self._peers[p.public_key] = p
        for key in remove:
            self._peers.pop(key, None)
        self.applies.append(PeerDiff(upsert=tuple(upsert), remove=tuple(remove)))

    def stats(self) -> dict[str, DevicePeer]:
        self._need()
        out = {}
        for k, p in self._peers.items():
            handshake, rx, tx = self._traffic.get(k, (0, 0, 0))
            out[k] = DevicePeer(public_key=k, endpoint=p.endpoint, keepalive=p.keepalive,
                                allowed_ips=list(p.allowed_ips), latest_handshake=handshake or None,
                                rx_bytes=rx, tx_bytes=tx)
        return out

    def record_traffic(self, public_key: str, handshake: int, rx_bytes: int, tx_bytes: int) -> None:
        """Pretend WireGuard did a handshake with this peer at ``handshake`` (unix seconds)."""
        self._traffic[public_key] = (handshake, rx_bytes, tx_bytes)

    def roam(self, public_key: str, endpoint: str) -> None:
        """Pretend WireGuard heard this peer from ``endpoint`` (it roamed, e.g. behind NAT)."""
        self._need()
        self._peers[public_key] = replace(self._peers[public_key], endpoint=endpoint)

    def delete(self) -> None:
        self._exists = False
        self._peers = {}
        self._listen_port = None
        self._fwmark = 0
        self._private_key = self._public_key = None
