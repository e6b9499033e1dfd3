"""The agent's state directory: identity, credentials and the last applied networks.

Everything is written atomically (temp file, fsync, rename) with mode 0600 in a
0700 directory, so a crash or power loss leaves either the old or the new file,
and the cache that brings the tunnels back at boot is never half written.

Layout of ``DIR`` (default ``/var/lib/skymesh``)::

    state.json   who we are: server, host id, host token, MQTT access, interface
    wg.key       WireGuard private key (base64)
    tls.key      TLS client private key (PEM)
    tls.crt      TLS client certificate, signed by the control plane
    ca.pem       CA that signs the broker's certificate (local mode)
    cache.json   the last applied snapshot of every network
    runtime.json what the running agent is doing (for ``status``)
    forwarding.json  on a gateway: that our nftables table exists, and the forwarding sysctls'
                 values before we turned them on (put back when the role ends, or on ``leave``)
    election.json  the gateway-group election's incarnation counter (agent/election_loop.py): raised
                 at every start, so a restarted member never reuses an incarnation
    group-<grp_id>.key  a gateway group's key this member opened (agent/groups.py): like wg.key,
                 never logged; removed when the host leaves the group
    run.lock     held (flock) by the one process that owns the device: ``run``, or ``leave``
                 while it removes everything; it names that process (``{"pid", "command"}``)
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chalicelib.domain import protocol
from chalicelib.fsutil import write_atomic

__all__ = ["AgentState", "StateDir", "NotJoinedError", "DEFAULT_STATE_DIR", "RunLock", "LockHolder",
           "GroupKey"]

DEFAULT_STATE_DIR = Path("/var/lib/skymesh")
STATE_VERSION = 1


class NotJoinedError(RuntimeError):
    """There is no state in the directory (``join`` was not run, or ``leave`` was)."""


@dataclass(frozen=True)
class LockHolder:
    """The process that holds a state directory's ``run.lock`` (``pid`` 0: it has not said yet)."""

    pid: int
    command: str


class RunLock:
    """This process's hold on ``run.lock``: one ``run`` (or ``leave``) per state directory.

    The kernel drops an flock when its holder dies, however it dies, so a held lock
    means a live holder, and the pid written in the file is that holder's (never a
    stale pid that another program may have taken over since).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class AgentState:
    server: str
    host_id: str
    name: str
    host_token: str
    interface: str
    backend: str
    listen_port: int
    mqtt_endpoint: str
    mqtt_port: int
    client_id: str
    endpoints: tuple[str, ...] = ()  # given with --endpoint; empty = discover local addresses
    auto_endpoints: tuple[str, ...] = ()  # the discovered ones last sent to the API
    status_topic: str = ""  # where to publish reports, as the API said (AWS: Basic Ingest)


@dataclass(frozen=True)
class GroupKey:
    """A gateway group's key as this member holds it (its private half never shown by ``repr``)."""

    network_id: str
    group_id: str
    version: int
    public_key: str
    private_key: str = field(repr=False)


def write_private(path: Path, data: str | bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600, durable on return."""
    write_atomic(path, data.encode() if isinstance(data, str) else data, 0o600)


class StateDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # paths handed to the MQTT client
    @property
    def tls_key_path(self) -> Path:
        return self.path / "tls.key"

    @property
    def tls_cert_path(self) -> Path:
        return self.path / "tls.crt"

    @property
    def ca_path(self) -> Path:
        return self.path / "ca.pem"

    @property
    def forwarding_memo(self) -> Path:
        return self.path / "forwarding.json"

    def exists(self) -> bool:
        return (self.path / "state.json").exists()

    def create(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)

    # ------------------------------------------------------------------ state
    def save(self, state: AgentState) -> None:
        d = asdict(state)
        d["endpoints"], d["auto_endpoints"] = list(state.endpoints), list(state.auto_endpoints)
        write_private(self.path / "state.json", json.dumps({"version": STATE_VERSION, **d}, indent=2))

    def load(self) -> AgentState:
        try:
            d = json.loads((self.path / "state.json").read_text())
        except FileNotFoundError:
            raise NotJoinedError(f"no skymesh state in {self.path}: run `skymesh-agent join` first") from None
        if d.pop("version", None) != STATE_VERSION:
            raise RuntimeError(f"{self.path}/state.json was written by another agent version")
        d["endpoints"], d["auto_endpoints"] = tuple(d["endpoints"]), tuple(d["auto_endpoints"])
        return AgentState(**d)

    def save_secrets(self, *, wg_key: str, tls_key: str) -> None:
        write_private(self.path / "wg.key", wg_key + "\n")
        write_private(self.tls_key_path, tls_key)

    def save_credentials(self, *, certificate_pem: str, ca_pem: str) -> None:
        write_private(self.tls_cert_path, certificate_pem)
        write_private(self.ca_path, ca_pem)

    def wg_key(self) -> str:
        return (self.path / "wg.key").read_text().strip()

    def tls_key(self) -> str:
        return self.tls_key_path.read_text()

    # ------------------------------------------------------------- group keys
    def _group_key_path(self, group_id: str) -> Path:
        if not re.fullmatch(r"grp_[A-Za-z0-9]{1,60}", group_id):
            raise ValueError(f"{group_id!r} is not a gateway group id")
        return self.path / f"group-{group_id}.key"

    def save_group_key(self, key: GroupKey) -> None:
        """Keep a group's key (mode 0600, atomic, durable), as ``wg.key`` is kept."""
        write_private(self._group_key_path(key.group_id), json.dumps(asdict(key)))

    def load_group_key(self, group_id: str) -> GroupKey | None:
        """The group's key kept here; None when there is none or the file is unreadable."""
        try:
            d = json.loads(self._group_key_path(group_id).read_text())
            return GroupKey(str(d["network_id"]), str(d["group_id"]), int(d["version"]), str(d["public_key"]),
                            str(d["private_key"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def remove_group_key(self, group_id: str) -> None:
        self._group_key_path(group_id).unlink(missing_ok=True)

    def group_key_ids(self) -> list[str]:
        """The groups whose key is kept here, sorted."""
        return sorted(p.name[len("group-"):-len(".key")] for p in self.path.glob("group-grp_*.key"))

    # ------------------------------------------------------------------ cache
    def save_cache(self, snapshots: list[protocol.Snapshot]) -> None:
        wire = {s.network.id: protocol.to_wire(s) for s in snapshots}
        write_private(self.path / "cache.json", json.dumps({"networks": wire}, separators=(",", ":")))

    def load_cache(self) -> list[protocol.Snapshot]:
        """The last applied snapshots; empty when there are none or the file is unreadable."""
        try:
            d = json.loads((self.path / "cache.json").read_text())
            out = [protocol.decode(w) for w in d["networks"].values()]
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            return []
        return [s for s in out if isinstance(s, protocol.Snapshot)]

    # ---------------------------------------------------------------- runtime
    def save_runtime(self, info: dict[str, Any]) -> None:
        write_private(self.path / "runtime.json", json.dumps(info))

    def load_runtime(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "runtime.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    # ------------------------------------------------------------------- lock
    @property
    def lock_path(self) -> Path:
        return self.path / "run.lock"

    def try_lock(self, command: str) -> RunLock | None:
        """Take ``run.lock`` for ``command`` without waiting; None when another process holds it."""
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # ``wipe`` unlinked the file we locked: a lock on it guards nothing
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command}).encode(), 0)
            return RunLock(self.lock_path, fd)

    def lock_holder(self) -> LockHolder | None:
        """Who holds ``run.lock`` now; None when nobody does (no agent runs for this directory)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: read who holds it
            else:
                return None
            try:
                d = json.loads(os.pread(fd, 4096, 0) or b"{}")
                return LockHolder(pid=int(d.get("pid", 0)), command=str(d.get("command", "")))
            except (ValueError, TypeError, AttributeError):
                return LockHolder(pid=0, command="")  # its holder is writing it right now
        finally:
            os.close(fd)

    def wipe(self) -> None:
        """Remove everything the agent wrote (after ``leave``)."""
        for name in ("state.json", "wg.key", "tls.key", "tls.crt", "ca.pem", "cache.json", "runtime.json",
                     "forwarding.json", "election.json", "run.lock"):
            (self.path / name).unlink(missing_ok=True)
        for group_id in self.group_key_ids():
            self.remove_group_key(group_id)
