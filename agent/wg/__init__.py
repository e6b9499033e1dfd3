"""WireGuard backends behind one interface (:class:`agent.wg.base.Backend`)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import shutil
import socket
from pathlib import Path

from .base import Backend, BackendError

__all__ = ["make_backend", "BACKEND_KINDS", "key_bytes", "public_key_of", "resolve_endpoint",
           "format_endpoint"]

BACKEND_KINDS = ("auto", "uapi", "netlink", "memory")


def make_backend(kind: str, ifname: str, netns: str | None = None) -> Backend:
    """The backend ``kind`` for ``ifname`` (in network namespace ``netns`` when given).

    ``"auto"`` keeps a device wireguard-go already serves (its UAPI socket exists),
    else takes kernel WireGuard when the kernel has it, else wireguard-go; it raises
    :class:`BackendError` when neither is there.
    """
    if kind == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(ifname)
    if kind == "netlink":
        from .netlink import NetlinkBackend

        return NetlinkBackend(ifname, netns=netns)
    if kind == "uapi":
        from .uapi import UapiBackend

        return UapiBackend(ifname, netns=netns)
    if kind != "auto":
        raise ValueError(f"unknown WireGuard backend {kind!r}: use one of {', '.join(BACKEND_KINDS)}")

    from .netlink import NetlinkBackend, kernel_wireguard_available
    from .uapi import DEFAULT_SOCKET_DIR, UapiBackend

    if (Path(DEFAULT_SOCKET_DIR) / f"{ifname}.sock").exists():
        return UapiBackend(ifname, netns=netns)
    ok, reason = kernel_wireguard_available()
    if ok:
        return NetlinkBackend(ifname, netns=netns)
    if shutil.which("wireguard-go") is None:
        raise BackendError(f"no WireGuard on this host: {reason}, and wireguard-go is not on PATH "
                           "(install the wireguard kernel module or wireguard-go)")
    return UapiBackend(ifname, netns=netns)


# --- helpers the backends share ------------------------------------------------------


def key_bytes(key: str, what: str = "WireGuard key") -> bytes:
    """The 32 raw bytes of a base64 WireGuard key; :class:`BackendError` when it is not one."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise BackendError(f"{what} {key!r} is not a WireGuard key (base64 of 32 bytes)")
    return raw


def public_key_of(private_key: str) -> str:
    """The base64 public key of a base64 X25519 private key; :class:`BackendError` when it is
    not one."""
    from chalicelib import wgkeys

    key_bytes(private_key, "private key")
    return wgkeys.public_key_of(private_key)


def format_endpoint(ip: str, port: int) -> str:
    """``1.2.3.4:51820`` or ``[2001:db8::7]:51820`` (the form WireGuard reports)."""
    addr = ipaddress.ip_address(ip)
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def resolve_endpoint(endpoint: str) -> tuple[str, int]:
    """``(ip, port)`` of ``host:port``, ``[v6]:port`` or ``name:port`` (resolved, first answer).

    Raises :class:`BackendError` when it is malformed or the name does not resolve.
    """
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BackendError(f"endpoint {endpoint!r} is not host:port")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as e:
        raise BackendError(f"endpoint {endpoint!r}: cannot resolve {host!r}: {e}") from None
    if not infos:
        raise BackendError(f"endpoint {endpoint!r}: {host!r} has no address")
    return str(ipaddress.ip_address(str(infos[0][4][0]).split("%")[0])), port
