"""The interface every WireGuard backend implements.

A backend is bound to one interface name (and optionally a network namespace).
It creates the device when missing, reads its peers back, and applies peer
upserts and removals in place: it never recreates the device to apply a change.
Addresses, MTU and routes are not its business (see :mod:`agent.netconf`).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib.domain.device import PeerConfig

log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendError", "DevicePeer", "DeviceState", "ReadsDevice"]


class BackendError(RuntimeError):
    """The device could not be created, read or changed; the message says why."""


class Backend(Protocol):
    name: str  # "uapi", "netlink", "memory"
    ifname: str

    def exists(self) -> bool:
        """Whether the device is there now."""

    def ensure_device(self, private_key: str, listen_port: int) -> bool:
        """Create the device if missing; set key and port only where they differ.

        Returns True when the device had to be created.
        """

    def public_key(self) -> str | None:
        """The device's public key (base64), None when it has no private key."""

    def listen_port(self) -> int | None:
        """The port the device listens on now."""

    def fwmark(self) -> int:
        """The mark the device puts on its own UDP packets (0: none)."""

    def set_fwmark(self, mark: int) -> None:
        """Mark the device's own UDP packets with ``mark`` (0: no mark), if it differs.

        Full tunnel routing (wg-quick's way) keeps marked packets on the main table.
        """

    def peers(self) -> dict[str, PeerConfig]:
        """The peers as the device has them now (endpoint = current, after roaming)."""

    def apply_peers(self, upsert: Sequence[PeerConfig], remove: Sequence[str]) -> None:
        """Add or change ``upsert`` (endpoint, allowed IPs replaced, keepalive) and drop ``remove``.

        Peers not named are left alone; the handshake of a changed peer survives.
        """

    def stats(self) -> dict[str, DevicePeer]:
        """Each peer as the device reports it now: current endpoint, handshake time, byte counters."""

    def delete(self) -> None:
        """Remove the device (and stop what the backend started for it)."""


@dataclass
class DevicePeer:
    """One peer as a device reports it: its configuration and its traffic, read raw.

    The one backend read type: :meth:`Backend.stats` returns it, :meth:`Backend.peers`
    its configuration as a :class:`~chalicelib.domain.device.PeerConfig`. Mutable only
    because the UAPI and netlink parsers fill it in line by line (message by message).
    """

    public_key: str
    endpoint: str | None = None  # ip:port or [ip6]:port
    keepalive: int = 0
    allowed_ips: list[str] = field(default_factory=list)
    latest_handshake: int | None = None  # unix seconds, None if never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass
class DeviceState:
    """A device as it reports itself: key (base64), port and peers by public key."""

    private_key: str | None = None  # base64
    listen_port: int | None = None
    fwmark: int = 0
    peers: dict[str, DevicePeer] = field(default_factory=dict)

    def peer_configs(self) -> dict[str, PeerConfig]:
        return {k: PeerConfig(public_key=k, endpoint=p.endpoint, allowed_ips=tuple(p.allowed_ips),
                              keepalive=p.keepalive)
                for k, p in self.peers.items()}


class ReadsDevice:
    """The read side of a backend whose device reports itself as one :class:`DeviceState`."""

    def _read(self) -> DeviceState:
        raise NotImplementedError

    def public_key(self) -> str | None:
        from . import public_key_of

        key = self._read().private_key
        return public_key_of(key) if key else None

    def listen_port(self) -> int | None:
        return self._read().listen_port

    def fwmark(self) -> int:
        return self._read().fwmark

    def peers(self) -> dict[str, PeerConfig]:
        return self._read().peer_configs()

    def stats(self) -> dict[str, DevicePeer]:
        return self._read().peers


def delete_link(ipr: Any, ifname: str, kind: str) -> None:
    """Delete link ``ifname`` through an open pyroute2 ``IPRoute`` if it is of ``kind``.

    A missing link is fine; a link of another kind is not ours and is left alone.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        return
    found = ipr.get_links(idx[0])[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    if found != kind:
        log.warning("%s: not deleting the link: it is a %s link, not %s", ifname, found or "unknown", kind)
        return
    try:
        ipr.link("del", index=idx[0])
    except NetlinkError as e:
        if e.code != errno.ENODEV:
            raise BackendError(f"{ifname}: cannot delete the link: {e}") from None
