"""WireGuard through the cross-platform UAPI socket of wireguard-go.

wireguard-go serves ``/var/run/wireguard/<ifname>.sock`` with a line protocol:
``get=1\\n\\n`` dumps the device, ``set=1\\n<key=value lines>\\n\\n`` changes it;
every reply ends with ``errno=N\\n\\n``. Keys are hex on the wire, base64 here.
A ``set`` is one transaction, so :meth:`UapiBackend.apply_peers` sends all its
upserts and removals as one message.

wireguard-go daemonizes itself, so the device outlives the agent that started it.
The socket directory is shared by every network namespace (it is a path, not a
network resource): interface names must be unique across namespaces.
"""

from __future__ import annotations

import base64
import contextlib
import errno as errno_mod
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from chalicelib.domain.device import PeerConfig

from . import format_endpoint, key_bytes, resolve_endpoint
from .base import BackendError, DevicePeer, DeviceState, ReadsDevice, delete_link

__all__ = ["UapiBackend", "DEFAULT_SOCKET_DIR", "parse_get"]

log = logging.getLogger(__name__)

DEFAULT_SOCKET_DIR = "/var/run/wireguard"  # compiled into wireguard-go (and wg)
START_TIMEOUT = 5.0  # seconds for a new wireguard-go to serve its socket
STOP_TIMEOUT = 5.0  # seconds for it to exit once its link is gone
IO_TIMEOUT = 10.0  # seconds for one UAPI request (a 1,000-peer set takes ~50 ms)
POLL = 0.01

# Variables that would make wireguard-go stay in the foreground or keep our pipes open.
_CHILD_ENV_DROP = ("LOG_LEVEL", "WG_PROCESS_FOREGROUND", "WG_TUN_FD", "WG_UAPI_FD", "WG_TUN_NAME")


def _hex(key: str, what: str) -> str:
    return key_bytes(key, what).hex()


def _b64(hex_key: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_key)).decode()


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def parse_get(text: str) -> DeviceState:
    """The device in a ``get=1`` reply (without the trailing ``errno`` line)."""
    dev = DeviceState()
    peer: DevicePeer | None = None
    for line in text.splitlines():
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise BackendError(f"UAPI reply line {line!r} is not key=value")
        if key == "public_key":
            peer = DevicePeer(_b64(value))
            dev.peers[peer.public_key] = peer
        elif peer is None:
            if key == "private_key":
                dev.private_key = _b64(value)
            elif key == "listen_port":
                dev.listen_port = int(value)
            elif key == "fwmark":
                dev.fwmark = int(value)
        elif key == "endpoint":
            peer.endpoint = value  # already ip:port or [ip6]:port, canonical
        elif key == "allowed_ip":
            peer.allowed_ips.append(value)
        elif key == "persistent_keepalive_interval":
            peer.keepalive = int(value)
        elif key == "last_handshake_time_sec":
            peer.latest_handshake = int(value) or None
        elif key == "rx_bytes":
            peer.rx_bytes = int(value)
        elif key == "tx_bytes":
            peer.tx_bytes = int(value)
    return dev


class UapiBackend(ReadsDevice):
    """A wireguard-go device driven over its UAPI socket.

    ``netns`` is the network namespace wireguard-go (and so the interface and its
    UDP socket) lives in; the UAPI socket itself is reached by path from anywhere.
    ``socket_dir`` is where to look for the socket; wireguard-go always creates it
    in ``/var/run/wireguard``.
    """

    name = "uapi"

    def __init__(self, ifname: str, netns: str | None = None, socket_dir: str = DEFAULT_SOCKET_DIR,
                 wireguard_go: str = "wireguard-go") -> None:
        if not ifname or len(ifname) > 15 or "/" in ifname or ifname.strip() != ifname:
            raise ValueError(f"interface name {ifname!r} must be 1-15 characters without '/' or spaces")
        self.ifname = ifname
        self.netns = netns
        self.socket_path = Path(socket_dir) / f"{ifname}.sock"
        self.wireguard_go = wireguard_go

    def __repr__(self) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        return f"UapiBackend({self.ifname}{where})"

    # --- the socket -----------------------------------------------------------------

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(IO_TIMEOUT)
        try:
            s.connect(str(self.socket_path))
        except OSError:
            s.close()
            raise
        return s

    def _alive(self) -> bool:
        try:
            self._connect().close()
            return True
        except OSError:
            return False

    def _request(self, payload: bytes, what: str) -> str:
        """Send one UAPI request; the reply's lines before ``errno=``; raise on errno != 0."""
        try:
            s = self._connect()
        except FileNotFoundError:
            raise BackendError(f"{self.ifname}: no WireGuard device (no UAPI socket {self.socket_path}); "
                               "call ensure_device first") from None
        except OSError as e:
            raise BackendError(f"{self.ifname}: cannot connect to {self.socket_path}: {e.strerror or e}"
                               " (is wireguard-go running?)") from None
        chunks: list[bytes] = []
        try:
            with s:
                s.sendall(payload)
                tail = b""
                while not tail.endswith(b"\n\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    tail = (tail + chunk)[-2:]
        except TimeoutError:
            raise BackendError(f"{self.ifname}: no UAPI reply to {what} within {IO_TIMEOUT:g} s") from None
        except OSError as e:
            raise BackendError(f"{self.ifname}: UAPI {what} failed: {e.strerror or e}") from None
        reply = b"".join(chunks).decode("utf-8", "replace")
        body, sep, status = reply.rstrip("\n").rpartition("errno=")
        if not sep or not status.strip().lstrip("-").isdigit():
            raise BackendError(f"{self.ifname}: UAPI {what}: reply without errno (connection closed?): "
                               f"{reply[-200:]!r}")
        code = abs(int(status))
        if code:
            name = errno_mod.errorcode.get(code, "?")
            raise BackendError(f"{self.ifname}: wireguard-go refused {what}: errno {code} ({name}: "
                               f"{os.strerror(code)}); its log says more (LOG_LEVEL=verbose)")
        return body

    def _read(self) -> DeviceState:
        """The device as it is now (one ``get``)."""
        return parse_get(self._request(b"get=1\n\n", "get"))

    def _set(self, lines: list[str], what: str) -> None:
        payload = "set=1\n" + "".join(line + "\n" for line in lines) + "\n"
        self._request(payload.encode(), what)

    # --- the process ----------------------------------------------------------------

    def _start(self) -> None:
        """Start wireguard-go (it daemonizes) and wait for its socket."""
        if self.socket_path.exists():  # a stale socket from a process that died
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        cmd = [self.wireguard_go, self.ifname]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
        try:
            proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=START_TIMEOUT)
        except FileNotFoundError:
            raise BackendError(f"{self.ifname}: cannot start {cmd[0]!r}: not found") from None
        except subprocess.TimeoutExpired:
            raise BackendError(f"{self.ifname}: {' '.join(cmd)} did not return within "
                               f"{START_TIMEOUT:g} s") from None
        if proc.returncode != 0:
            out = " ".join(line.strip() for line in (proc.stderr + proc.stdout).splitlines()
                           if line.strip() and not line.lstrip().startswith(("┌", "│", "└")))
            raise BackendError(f"{self.ifname}: {' '.join(cmd)} failed (exit {proc.returncode}): "
                               f"{out or 'no output'}")
        if not _wait_for(self._alive, START_TIMEOUT):
            raise BackendError(f"{self.ifname}: wireguard-go started but {self.socket_path} did not "
                               f"answer within {START_TIMEOUT:g} s")

    def _daemon_pids(self) -> list[int]:
        """Running (not zombie) wireguard-go processes serving ``ifname``."""
        exe = os.path.basename(self.wireguard_go).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if (state not in ("Z", "X") and argv and os.path.basename(argv[0]) == exe
                    and self.ifname.encode() in argv[1:]):
                pids.append(int(entry.name))
        return pids

    # --- Backend ----------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether wireguard-go answers on the device's UAPI socket."""
        return self._alive()

    def ensure_device(self, private_key: str, listen_port: int) -> bool:
        """Start wireguard-go for the device if it does not answer; set key and port where they differ.

        ``listen_port`` 0 means any port (the current one is kept).
        """
        key_hex = _hex(private_key, "private key")
        created = False
        if not self._alive():
            self._start()
            created = True
        dev = self._read()
        lines, changes = [], []
        if dev.private_key is None or _hex(dev.private_key, "device key") != key_hex:
            lines.append(f"private_key={key_hex}")
            changes.append("the private key")
        if listen_port and dev.listen_port != listen_port:
            lines.append(f"listen_port={listen_port}")
            changes.append(f"listen port {listen_port}")
        if lines:
            self._set(lines, "setting " + " and ".join(changes))
        return created

    def set_fwmark(self, mark: int) -> None:
        """``fwmark=`` over UAPI when it differs (0 removes the mark)."""
        if not 0 <= mark < 2**32:
            raise ValueError(f"fwmark {mark} is not a 32-bit unsigned integer")
        if self._read().fwmark != mark:
            self._set([f"fwmark={mark}"], f"setting fwmark {mark}")

    def apply_peers(self, upsert: Sequence[PeerConfig], remove: Sequence[str]) -> None:
        """All upserts and removals as one UAPI ``set`` (one transaction).

        A changed peer is updated in place (allowed IPs replaced), so its session and
        handshake survive. An endpoint whose name does not resolve is left out (the
        peer keeps the endpoint it has) and logged; a ``None`` endpoint is left alone.
        """
        if not upsert and not remove:
            return
        both = {p.public_key for p in upsert} & set(remove)
        if both:
            raise ValueError(f"peers both to upsert and to remove: {sorted(both)}")
        lines: list[str] = []
        for p in upsert:
            lines.append(f"public_key={_hex(p.public_key, 'peer public key')}")
            if p.endpoint is not None:
                try:
                    lines.append("endpoint=" + format_endpoint(*resolve_endpoint(p.endpoint)))
                except BackendError as e:
                    log.warning("%s: peer %s: %s; endpoint left unchanged", self.ifname, p.public_key, e)
            lines.append(f"persistent_keepalive_interval={p.keepalive}")
            lines.append("replace_allowed_ips=true")
            lines.extend(f"allowed_ip={ip}" for ip in p.allowed_ips)
        for key in remove:
            lines.append(f"public_key={_hex(key, 'peer public key')}")
            lines.append("remove=true")
        self._set(lines, f"set of {len(upsert)} peer(s) and removal of {len(remove)}")

    def delete(self) -> None:
        """Delete the link (wireguard-go then exits and removes its socket); wait for both.

        A wireguard-go that does not exit within the bound is sent SIGTERM, then
        SIGKILL; a socket file left behind is removed.
        """
        pids = self._daemon_pids()
        self._delete_link()
        if not _wait_for(lambda: not self._daemon_pids() and not self._alive(), STOP_TIMEOUT):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in self._daemon_pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                if _wait_for(lambda: not self._daemon_pids(), STOP_TIMEOUT):
                    break
            else:
                raise BackendError(f"{self.ifname}: wireguard-go {self._daemon_pids()} did not exit "
                                   "after SIGKILL")
        if not self._alive():
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        for pid in pids:  # reap it if we are its (sub)reaper; harmless otherwise
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)

    def _delete_link(self) -> None:
        """Delete the TUN link ``ifname`` (in ``netns``); a missing link or namespace is fine."""
        from pyroute2 import IPRoute

        try:
            ipr = IPRoute(netns=self.netns, flags=0) if self.netns else IPRoute()
        except FileNotFoundError:
            return  # the namespace is gone, and the link with it
        with ipr:
            delete_link(ipr, self.ifname, "tun")  # wireguard-go's device is a TUN
