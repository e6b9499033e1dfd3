"""Kernel WireGuard through generic netlink (pyroute2).

The link is made with rtnetlink (``IPRoute.link("add", kind="wireguard")``) and
configured with the ``wireguard`` generic netlink family (``pyroute2.WireGuard``).
pyroute2's ``WireGuard.set`` carries one peer per message, so
:meth:`NetlinkBackend.apply_peers` sends one message per peer: unlike the UAPI
backend it is not one transaction. pyroute2 is imported on first use.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from chalicelib.domain.device import PeerConfig

from . import key_bytes, resolve_endpoint
from .base import BackendError, DevicePeer, DeviceState, ReadsDevice, delete_link

__all__ = ["NetlinkBackend", "kernel_wireguard_available", "parse_dump"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0

def _text(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def parse_dump(messages: Iterable[Any]) -> DeviceState:
    """The device in the messages of a ``WG_CMD_GET_DEVICE`` dump.

    A big device spans several messages; a peer whose allowed IPs did not fit
    is continued in the next message with only its public key and the rest of
    its allowed IPs, so peers are merged by key.
    """
    dev = DeviceState()
    for msg in messages:
        key = msg.get_attr("WGDEVICE_A_PRIVATE_KEY")
        if key is not None and dev.private_key is None:
            dev.private_key = _text(key)
        port = msg.get_attr("WGDEVICE_A_LISTEN_PORT")
        if port is not None and dev.listen_port is None:
            dev.listen_port = int(port)
        mark = msg.get_attr("WGDEVICE_A_FWMARK")
        if mark is not None and not dev.fwmark:
            dev.fwmark = int(mark)
        for p in msg.get_attr("WGDEVICE_A_PEERS") or ():
            pub = _text(p.get_attr("WGPEER_A_PUBLIC_KEY"))
            peer = dev.peers.get(pub)
            if peer is None:
                peer = dev.peers[pub] = DevicePeer(pub)
                ep = p.get_attr("WGPEER_A_ENDPOINT")
                if ep is not None and ep.get("port"):
                    addr = ep["addr"]
                    peer.endpoint = f"[{addr}]:{ep['port']}" if ":" in addr else f"{addr}:{ep['port']}"
                peer.keepalive = int(p.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0)
                hs = p.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
                peer.latest_handshake = (int(hs["tv_sec"]) or None) if hs is not None else None
                peer.rx_bytes = int(p.get_attr("WGPEER_A_RX_BYTES") or 0)
                peer.tx_bytes = int(p.get_attr("WGPEER_A_TX_BYTES") or 0)
            for ip in p.get_attr("WGPEER_A_ALLOWEDIPS") or ():
                if ip.get("addr"):
                    peer.allowed_ips.append(ip["addr"])
    return dev


def peer_message(p: PeerConfig) -> dict[str, Any]:
    """The ``peer`` argument of ``pyroute2.WireGuard.set`` that makes ``p`` so (in place)."""
    key_bytes(p.public_key, "peer public key")
    peer: dict[str, Any] = {"public_key": p.public_key, "persistent_keepalive": p.keepalive,
                            "replace_allowed_ips": True}
    if p.allowed_ips:
        peer["allowed_ips"] = list(p.allowed_ips)
    if p.endpoint is not None:
        peer["endpoint_addr"], peer["endpoint_port"] = resolve_endpoint(p.endpoint)
    return peer


class NetlinkBackend(ReadsDevice):
    """A kernel WireGuard link ``ifname`` (in network namespace ``netns`` when given)."""

    name = "netlink"

    def __init__(self, ifname: str, netns: str | None = None) -> None:
        if not ifname or len(ifname) > 15 or "/" in ifname:
            raise ValueError(f"interface name {ifname!r} must be 1-15 characters without '/'")
        self.ifname = ifname
        self.netns = netns

    def __repr__(self) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        return f"NetlinkBackend({self.ifname}{where})"

    def _ipr(self) -> Any:
        from pyroute2 import IPRoute

        try:
            return IPRoute(netns=self.netns, flags=0) if self.netns else IPRoute()
        except FileNotFoundError:
            raise BackendError(f"{self.ifname}: network namespace {self.netns!r} does not exist") from None

    def _wg(self) -> Any:
        from pyroute2 import WireGuard
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            return WireGuard(netns=self.netns, flags=0) if self.netns else WireGuard()
        except FileNotFoundError:
            raise BackendError(f"{self.ifname}: network namespace {self.netns!r} does not exist") from None
        except NetlinkError as e:
            raise BackendError(f"{self.ifname}: the kernel has no 'wireguard' generic netlink family "
                               f"({e}); is the wireguard module loaded?") from None

    def _kind(self) -> str | None:
        """The link kind of ``ifname``, None when there is no such link."""
        with self._ipr() as ipr:
            idx = ipr.link_lookup(ifname=self.ifname)
            if not idx:
                return None
            link = ipr.get_links(idx[0])[0]
            return link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or "unknown"

    def _read(self) -> DeviceState:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            sock = self._wg()
        except BackendError:
            if self._kind() is None:  # the module loads with the first link; say what is missing
                raise BackendError(f"{self.ifname}: no WireGuard device; call ensure_device first") from None
            raise
        with sock as wg:
            try:
                return parse_dump(list(wg.info(self.ifname)))
            except NetlinkError as e:
                if e.code in (errno.ENODEV, errno.ENOENT):
                    raise BackendError(f"{self.ifname}: no WireGuard device; call ensure_device first") \
                        from None
                raise BackendError(f"{self.ifname}: reading the device failed: {e}") from None

    def _set(self, what: str, **kwargs: Any) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        with self._wg() as wg:
            try:
                wg.set(self.ifname, **kwargs)
            except (NetlinkError, ValueError) as e:
                raise BackendError(f"{self.ifname}: the kernel refused {what}: {e}") from None

    def exists(self) -> bool:
        return self._kind() == "wireguard"

    def ensure_device(self, private_key: str, listen_port: int) -> bool:
        """Add the wireguard link if missing; set key and port where they differ (port 0 = any)."""
        from pyroute2.netlink.exceptions import NetlinkError

        raw = key_bytes(private_key, "private key")
        kind = self._kind()
        created = False
        if kind is None:
            with self._ipr() as ipr:
                try:
                    ipr.link("add", ifname=self.ifname, kind="wireguard")
                except NetlinkError as e:
                    hint = " (the kernel has no WireGuard)" if e.code == errno.EOPNOTSUPP else ""
                    raise BackendError(f"{self.ifname}: cannot add a wireguard link: {e}{hint}") from None
            created = True
        elif kind != "wireguard":
            raise BackendError(f"{self.ifname}: a {kind} link of that name exists; it is not WireGuard")
        dev = self._read()
        changes: dict[str, Any] = {}
        if dev.private_key is None or key_bytes(dev.private_key, "device key") != raw:
            changes["private_key"] = private_key
        if listen_port and dev.listen_port != listen_port:
            changes["listen_port"] = listen_port
        if changes:
            self._set(" and ".join(k.replace("_", " ") for k in changes), **changes)
        return created

    def set_fwmark(self, mark: int) -> None:
        """``WGDEVICE_A_FWMARK`` when it differs (0 removes the mark)."""
        if not 0 <= mark < 2**32:
            raise ValueError(f"fwmark {mark} is not a 32-bit unsigned integer")
        if self._read().fwmark != mark:
            self._set(f"fwmark {mark}", fwmark=mark)

    def apply_peers(self, upsert: Sequence[PeerConfig], remove: Sequence[str]) -> None:
        """One netlink message per peer (pyroute2's ``set`` takes one peer); changes are in place.

        Not atomic: on an error the peers before it are applied and the message says how many.
        """
        both = {p.public_key for p in upsert} & set(remove)
        if both:
            raise ValueError(f"peers both to upsert and to remove: {sorted(both)}")
        messages = [peer_message(p) for p in upsert]
        for key in remove:
            key_bytes(key, "peer public key")
            messages.append({"public_key": key, "remove": True})
        if not messages:
            return
        from pyroute2.netlink.exceptions import NetlinkError

        with self._wg() as wg:
            for done, peer in enumerate(messages):
                try:
                    wg.set(self.ifname, peer=peer)
                except (NetlinkError, ValueError) as e:
                    action = "removing" if peer.get("remove") else "setting"
                    raise BackendError(f"{self.ifname}: the kernel refused {action} peer {peer['public_key']}"
                                       f": {e} ({done} of {len(messages)} peer changes applied)") from None

    def delete(self) -> None:
        """Delete the wireguard link; a missing link or namespace is fine, another kind is left alone."""
        try:
            ipr = self._ipr()
        except BackendError:
            return  # the namespace is gone, and the link with it
        with ipr:
            delete_link(ipr, self.ifname, "wireguard")


# A child process in a new, unnamed network namespace tries to make a wireguard link;
# the namespace (and the link) vanish with it.
_PROBE = r"""
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
    print("cannot make a scratch network namespace:", os.strerror(ctypes.get_errno()))
    sys.exit(2)
from pyroute2 import IPRoute, WireGuard
def why(e):
    code = getattr(e, "code", None)
    if code == errno.EOPNOTSUPP:
        return "the kernel does not know the link kind (no wireguard module)"
    return os.strerror(code) if isinstance(code, int) else str(e)
with IPRoute() as ipr:
    try:
        ipr.link("add", ifname="wgprobe0", kind="wireguard")
    except Exception as e:
        print("creating a wireguard link failed:", why(e))
        sys.exit(1)
try:
    with WireGuard() as wg:
        list(wg.info("wgprobe0"))
except Exception as e:
    print("a wireguard link was made but reading it over generic netlink failed:", why(e))
    sys.exit(1)
print("made and read a wireguard link in a scratch network namespace")
"""


def kernel_wireguard_available() -> tuple[bool, str]:
    """Whether kernel WireGuard can be used here, and why (or why not).

    As root: a child process makes a wireguard link in a scratch network namespace
    (which loads the module on demand) and reads it over generic netlink; nothing
    outlives the child. Without the rights for that: whether the ``wireguard``
    generic netlink family is registered.
    """
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return False, "pyroute2 is not installed"
    if os.geteuid() == 0:
        try:
            proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            return False, f"the kernel WireGuard probe did not finish within {PROBE_TIMEOUT:g} s"
        out = (proc.stdout.strip().splitlines() or [""])[-1]
        if proc.returncode == 0:
            return True, f"kernel WireGuard: {out}"
        if proc.returncode != 2:
            reason = out or proc.stderr.strip()[-300:] or f"probe exited {proc.returncode}"
            return False, f"kernel WireGuard unavailable: {reason}"
    from pyroute2 import WireGuard
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        WireGuard().close()
    except (NetlinkError, OSError) as e:
        return False, f"kernel WireGuard unavailable: no 'wireguard' generic netlink family ({e})"
    return True, "the 'wireguard' generic netlink family is registered (no test link made)"
