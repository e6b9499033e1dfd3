"""Mosquitto as the local IoT Core: mutual TLS, CN as username and client id, file ACL, CRL.

Files (under ``home/broker`` unless said otherwise)::

    mosquitto.conf      written by :meth:`MosquittoBroker.prepare`
    server.pem/.key     server certificate (SANs: bind address, 127.0.0.1, localhost)
    acl, acl.d/, control.d/, crl.pem, revoked.json   kept by LocalCaIdentity
    mosquitto.pid       written by Mosquitto (LocalCaIdentity SIGHUPs it)
    data/               persistence
    home/logs/mosquitto.log   its log (stderr)

Measured on Mosquitto 2.0.11: it opens the key, certificates, CRL, ACL, pid
file and persistence files *after* dropping privileges to user ``mosquitto``
(when started as root), and SIGHUP makes it re-read the ACL and the TLS files
including the CRL (new connections of a just-revoked certificate fail the
handshake; open connections stay, which the ACL handles).
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import shutil
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from chalicelib.adapters import local_ca
from chalicelib.adapters.local_identity import ControlCredentials, LocalCaIdentity, ensure_ca

from .proc import LocalStackError, ManagedProcess, check_port_free, require_executable, wait_until

__all__ = ["MosquittoBroker", "RunAs", "choose_run_as", "find_mosquitto", "mqtt_connect_ok"]

_MOSQUITTO_HINT = "Install it with `apt-get install mosquitto` (version 2.0 or later)."


@dataclass(frozen=True)
class RunAs:
    """Which user Mosquitto ends up as: ``user`` for the config, ``uid``/``gid`` to chown to."""

    user: str | None
    uid: int | None = None
    gid: int | None = None
    warning: str | None = None


def _unsearchable(path: Path, uid: int, gids: set[int]) -> Path | None:
    """The first directory on ``path``'s real path (symlinks resolved: Mosquitto opens the
    target) that ``uid``/``gids`` cannot search; ``None`` when it can reach ``path``."""
    real = path.resolve()
    for d in [*reversed(real.parents), real]:
        st = d.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return d
    return None


def choose_run_as(dirs: list[Path], euid: int | None = None, user: str = "mosquitto") -> RunAs:
    """Decide the user Mosquitto runs as.

    Not root: Mosquitto keeps our user (``user`` line omitted). Root: drop to
    ``mosquitto`` when it exists and can reach every directory in ``dirs``; else
    stay root, with a warning saying why.
    """
    if (os.geteuid() if euid is None else euid) != 0:
        return RunAs(user=None)
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return RunAs(user="root", warning=f"no user {user!r}; the broker runs as root")
    gids = set(os.getgrouplist(user, pw.pw_gid))
    for d in dirs:
        closed = _unsearchable(d, pw.pw_uid, gids)
        if closed is not None:
            return RunAs(
                user="root",
                warning=(
                    f"user {user!r} cannot reach {d}: {closed} is not searchable by it, so "
                    f"the broker keeps running as root. To let it drop privileges, use a --home "
                    f"outside {closed} (e.g. under /var/lib or /srv) or allow it through with "
                    f"`chmod o+x {closed}`."
                ),
            )
    return RunAs(user=user, uid=pw.pw_uid, gid=pw.pw_gid)


def find_mosquitto() -> str:
    """The mosquitto binary (PATH, then /usr/sbin which is often not on a user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access("/usr/sbin/mosquitto", os.X_OK):
        return "/usr/sbin/mosquitto"
    return require_executable("mosquitto", _MOSQUITTO_HINT)


def mqtt_connect_ok(
    host: str, port: int, creds: ControlCredentials, timeout: float = 2.0
) -> bool:
    """Whether an MQTT CONNECT over mutual TLS with ``creds`` is accepted right now."""
    import paho.mqtt.client as mqtt

    done = threading.Event()
    result: list[bool] = [False]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311,
                         reconnect_on_failure=False)

    def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        result[0] = not getattr(rc, "is_failure", True)
        done.set()

    def on_disconnect(*_a: object) -> None:
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect_timeout = timeout
    try:
        client.tls_set(ca_certs=str(creds.ca_path), certfile=str(creds.cert_path),
                       keyfile=str(creds.key_path))
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    try:
        done.wait(timeout)
        return result[0]
    finally:
        client.disconnect()
        client.loop_stop()


class MosquittoBroker:
    """The broker of one home: its files, its process, its readiness."""

    def __init__(self, home: Path, bind: str = "127.0.0.1", port: int = 8883) -> None:
        try:
            ipaddress.ip_address(bind)
        except ValueError:
            raise LocalStackError(f"--bind must be an IP address, not {bind!r}") from None
        self.home = Path(home).absolute()
        self.bind = bind
        self.port = port
        self.dir = self.home / "broker"
        self.conf_path = self.dir / "mosquitto.conf"
        self.cert_path = self.dir / "server.pem"
        self.key_path = self.dir / "server.key"
        self.pid_path = self.dir / "mosquitto.pid"
        self.data_dir = self.dir / "data"
        self.log_path = self.home / "logs" / "mosquitto.log"
        self.identity = LocalCaIdentity(self.home, self.connect_host, port)
        self.process: ManagedProcess | None = None
        self.run_as: RunAs | None = None
        self._probe: ControlCredentials | None = None

    @property
    def connect_host(self) -> str:
        """The address clients dial (the bind address; loopback when bound to any)."""
        return "127.0.0.1" if ipaddress.ip_address(self.bind).is_unspecified else self.bind

    # --- files --------------------------------------------------------------
    def prepare(self) -> None:
        """Create or refresh everything the broker reads. Idempotent.

        CA (kept), server certificate (re-issued when its SANs miss the bind
        address or it expires within 30 days), CRL and ACL (rewritten from
        ``revoked.json`` and the fragments), config, file ownership.
        """
        for d in (self.dir, self.data_dir, self.dir / "acl.d", self.dir / "control.d"):
            d.mkdir(parents=True, exist_ok=True)
        ca = ensure_ca(self.home)
        self._ensure_server_cert(ca)
        self.identity.refresh()
        self._probe = self.identity.issue_control_client("probe")
        self.run_as = choose_run_as([self.dir, self.home / "ca"])
        self._write_conf()
        self._fix_ownership()

    def _ensure_server_cert(self, ca: local_ca.CertificateAuthority) -> None:
        wanted = {ipaddress.ip_address(self.bind), ipaddress.ip_address("127.0.0.1")}
        wanted = {a for a in wanted if not a.is_unspecified}
        try:
            cert = local_ca.load_certificate(self.cert_path)
            local_ca.load_private_key(self.key_path)
            san = cert.extensions.get_extension_for_class(local_ca.x509.SubjectAlternativeName)
            have = set(san.value.get_values_for_type(local_ca.x509.IPAddress))
            fresh = cert.not_valid_after_utc.timestamp() - time.time() > 30 * 86400
            if wanted <= have and fresh and cert.issuer == ca.cert.subject:
                return
        except (OSError, ValueError, local_ca.x509.ExtensionNotFound):
            pass
        key = local_ca.generate_key()
        cert = local_ca.issue_server_certificate(
            ca, key.public_key(), ("localhost",), [str(a) for a in sorted(wanted, key=str)]
        )
        local_ca.write_private_key(self.key_path, key)
        local_ca.write_public_file(self.cert_path, local_ca.cert_pem(cert))

    def config_text(self) -> str:
        """The mosquitto.conf for this home (TLS lines after the ``listener`` line)."""
        assert self.run_as is not None
        lines = [
            "# Generated by skymesh local (skymesh/local/broker.py); rewritten at every start.",
            "per_listener_settings false",
            "allow_anonymous false",
        ]
        if self.run_as.user is not None:
            lines.append(f"user {self.run_as.user}")
        lines += [
            f"pid_file {self.pid_path}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            f"acl_file {self.dir / 'acl'}",
            "",
            f"listener {self.port} {self.bind}",
            f"cafile {self.home / 'ca' / 'ca.pem'}",
            f"certfile {self.cert_path}",
            f"keyfile {self.key_path}",
            f"crlfile {self.dir / 'crl.pem'}",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "set_tcp_nodelay true",
            "",
        ]
        return "\n".join(lines)

    def _write_conf(self) -> None:
        local_ca.write_public_file(self.conf_path, self.config_text())

    def _fix_ownership(self) -> None:
        ra = self.run_as
        if ra is None or ra.uid is None or ra.gid is None:
            return
        # Mosquitto opens these after dropping privileges; nothing else becomes writable.
        os.chown(self.key_path, ra.uid, ra.gid)
        os.chmod(self.key_path, 0o600)
        for path in (self.data_dir, *self.data_dir.rglob("*")):
            os.chown(path, ra.uid, ra.gid)
        os.chmod(self.data_dir, 0o700)
        self.pid_path.touch(exist_ok=True)
        os.chown(self.pid_path, ra.uid, ra.gid)
        os.chmod(self.pid_path, 0o644)

    # --- process ------------------------------------------------------------
    def _check_stale(self) -> None:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return
        if comm == "mosquitto" and str(self.conf_path) in cmdline:
            raise LocalStackError(
                f"a Mosquitto of this home from an earlier run is still running (pid {pid}). "
                f"Stop it with `kill {pid}` and start again."
            )

    def start(self, timeout: float = 20.0) -> None:
        """Prepare the files, start Mosquitto and return once a TLS client can connect."""
        binary = find_mosquitto()
        self._check_stale()
        check_port_free(self.bind, self.port, "MQTT broker", "--mqtt-port")
        self.prepare()
        assert self.run_as is not None
        if self.run_as.warning:
            print(f"warning: {self.run_as.warning}", file=sys.stderr)
        self.process = ManagedProcess("mosquitto", [binary, "-c", str(self.conf_path)],
                                      self.log_path)
        self.process.start()
        try:
            wait_until(self.ready, timeout, f"Mosquitto on {self.bind}:{self.port}",
                       alive=self.process.alive, interval=0.05)
        except LocalStackError as e:
            self.stop()
            raise LocalStackError(f"{e}\n--- {self.log_path} (tail):\n{self.log_tail()}") from None

    def ready(self) -> bool:
        """Whether the broker accepts a mutual-TLS MQTT connection right now."""
        assert self._probe is not None
        return mqtt_connect_ok(self.connect_host, self.port, self._probe, timeout=2.0)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
