"""A throw-away lab of network namespaces: nodes on one bridge, the control plane in one of them.

Layout of one lab (``prefix`` is ``sml`` + 4 random characters, unique per run)::

    <prefix>-hub     namespace holding the bridge ``br0`` (no address, no route)
    <prefix>-<name>  one namespace per node: ``lo`` up, ``eth0`` = veth into br0
                     (the hub side is ``<prefix>v<index>``), address 198.18.0.<index+1>/24,
                     NO default route, so nothing in the lab can reach the outside

Every name the lab makes (namespaces, links, WireGuard interfaces such as
``<prefix>w1``, temp dirs) starts with the prefix, so labs running in parallel
and leftovers of a crashed run never clash and can always be found again.

>>> with Lab() as lab:                                     # doctest: +SKIP
...     cp_node, a = lab.add_node("cp"), lab.add_node("a")
...     cp = ControlPlane(cp_node)
...     cp.start(via=a)                         # bounded wait for GET /v1/health from a
...     net = cp.admin.create_network("office", "100.64.0.0/24")
...     assert a.ping(cp_node.ip)
... # leaving the block (also on error or Ctrl-C): processes killed, namespaces,
... # links, /var/run/wireguard/<prefix>*.sock and temp dirs removed

Rules this module keeps (see "Lab rules" in DESIGN.md): underlay addresses only from
198.18.0.0/15, no route from a lab namespace to the outside, everything removed at the
end also on failure, and every wait bounded (:func:`wait_until`, timeouts on every
subprocess). A lab whose owner died (``kill -9``) is removed by :func:`cleanup_stale`;
each lab records its owner in ``/run/skymesh-lab/<prefix>.json``.

Calls into a namespace from this process (the admin REST client, health checks) run
in a short-lived thread that joined the namespace with ``setns(2)``
(:meth:`Node.call`), so no extra process is needed per request.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..admin import list_all

__all__ = [
    "AdminClient",
    "ApiError",
    "ControlPlane",
    "Lab",
    "LabError",
    "LabTimeout",
    "Node",
    "UNDERLAY",
    "cleanup_stale",
    "http_json",
    "leftovers",
    "missing_requirements",
    "wait_until",
]

UNDERLAY = ipaddress.IPv4Network("198.18.0.0/15")
"""The only range lab underlay addresses come from (RFC 2544 benchmarking range)."""

PREFIX_RE = re.compile(r"^sml[a-z0-9]{4}$")
LAB_NETNS_RE = re.compile(r"^(sml[a-z0-9]{4})-")
IFNAMSIZ = 15
WG_RUN_DIR = Path("/var/run/wireguard")
MARKER_DIR = Path("/run/skymesh-lab")
REPO_ROOT = Path(__file__).resolve().parents[2]

_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_TERM_GRACE = 10.0  # seconds between SIGTERM and SIGKILL at cleanup
_KILL_GRACE = 5.0

T = TypeVar("T")


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says what and why."""


class LabTimeout(LabError):
    """A bounded wait ran out; the message names what was awaited."""


# --- small helpers ------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    details: Callable[[], str] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    Raises :class:`LabTimeout` after ``timeout`` seconds with a message naming ``what``
    was awaited, plus ``details()`` (e.g. logs, status) when given. Exceptions of the
    types in ``ignore`` count as "not yet" (the last one is quoted on timeout); any
    other exception propagates at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as e:
            value, last_error = None, e  # type: ignore[assignment]
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            msg = f"timed out after {timeout:g}s waiting for {what}"
            if last_error is not None:
                msg += f" (last error: {type(last_error).__name__}: {last_error})"
            if details is not None:
                try:
                    msg += "\n" + details()
                except Exception as e:  # diagnostics must not hide the timeout
                    msg += f"\n(collecting details failed: {e!r})"
            raise LabTimeout(msg)
        time.sleep(min(interval, remaining))


def missing_requirements(*, control_plane: bool = True, wireguard: bool = True) -> list[str]:
    """What this machine lacks for a lab (empty list: all there). For test skip reasons."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    tools = ["ip", "ping"]
    if wireguard:
        tools += ["wireguard-go", "wg"]
    if control_plane:
        tools += ["java"]
    missing += [f"`{t}` on PATH" for t in tools if shutil.which(t) is None]
    if control_plane and not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        missing.append("`mosquitto`")
    if wireguard and not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun")
    return missing


def _run(argv: Sequence[str], timeout: float = 15.0, check: bool = True, input: str | None = None,
         env: dict[str, str] | None = None, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                             input=input, stdin=None if input is not None else subprocess.DEVNULL,
                             env=env, cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        raise LabTimeout(f"`{' '.join(argv)}` did not finish within {timeout:g}s") from None
    except FileNotFoundError:
        raise LabError(f"`{argv[0]}` not found on PATH") from None
    if check and res.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed ({res.returncode}): "
                       f"{(res.stderr or res.stdout).strip()}")
    return res


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *(["-n", ns] if ns else []), *args], check=check)


def list_netns() -> list[str]:
    """Names of every named network namespace (``ip netns list``)."""
    res = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    """Pids of the processes in namespace ``ns`` (``ip netns pids``); [] if it is gone."""
    res = _run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def _alive(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, their children, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None:
                children.setdefault(st[1], []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return [p for p in out if _alive(p)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def terminate(pids: Iterable[int], procs: Iterable[subprocess.Popen[Any]] = (),
              grace: float = _TERM_GRACE) -> list[int]:
    """SIGTERM ``pids``, wait up to ``grace`` s, SIGKILL the rest, wait again (bounded).

    ``procs`` are our own children among them: they are reaped so no zombie stays.
    Returns the pids still alive at the end (normally none).
    """
    procs = list(procs)
    pids = set(pids) | {p.pid for p in procs if p.poll() is None}

    def gone() -> bool:
        for p in procs:
            p.poll()
        return not any(_alive(pid) for pid in pids)

    if not pids:
        return []
    _signal_all(pids, signal.SIGTERM)
    try:
        wait_until(gone, grace, "processes to exit after SIGTERM", interval=0.05)
    except LabTimeout:
        _signal_all([p for p in pids if _alive(p)], signal.SIGKILL)
        with contextlib.suppress(LabTimeout):
            wait_until(gone, _KILL_GRACE, "processes to exit after SIGKILL", interval=0.05)
    return sorted(p for p in pids if _alive(p))


_libc: Any = None
_PRCTL: Any = None
if sys.platform.startswith("linux"):
    _libc_name = ctypes.util.find_library("c")
    if _libc_name:
        _libc = ctypes.CDLL(_libc_name, use_errno=True)
        _PRCTL = _libc.prctl  # resolved here: the child must not dlopen between fork and exec


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


# --- HTTP ---------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def http_json(method: str, url: str, body: Any = None, token: str | None = None,
              timeout: float = 10.0) -> tuple[int, Any]:
    """One JSON request → (status, decoded body or None). Network errors raise ``OSError``."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class ApiError(LabError):
    """The API answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        self.status, self.code, self.body = status, err.get("code", f"http_{status}"), body
        super().__init__(f"{method} {path} → {status} {self.code}: {err.get('message', body)}")


# --- nodes and the lab --------------------------------------------------------------


class Node:
    """One namespace on the lab bridge. ``ip`` is its underlay address (198.18.x.y)."""

    def __init__(self, lab: Lab, name: str, index: int, netns: str, ip: str, prefixlen: int) -> None:
        self.lab, self.name, self.index = lab, name, index
        self.netns, self.ip, self.prefixlen = netns, ip, prefixlen

    def __repr__(self) -> str:
        return f"Node({self.name!r}, netns={self.netns!r}, ip={self.ip!r})"

    def wg_ifname(self, n: int | None = None) -> str:
        """A WireGuard interface name for this node: ``<prefix>w<index>`` (unique machine-wide,
        since wireguard-go's socket ``/var/run/wireguard/<if>.sock`` is shared by all namespaces)."""
        return self.lab.ifname(f"w{self.index if n is None else n}")

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this node's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: Sequence[str], *, die_with_parent: bool = True,
              **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in this namespace (``ip netns exec`` execs it: the pid is the program's).

        It gets its own session (a terminal's Ctrl-C reaches only us; the lab stops it) and,
        unless ``die_with_parent=False``, SIGTERM when the *calling thread* exits (Linux
        ``PR_SET_PDEATHSIG``), so call this from a long-lived thread. The lab kills it at exit.
        """
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        if die_with_parent and _PRCTL is not None and "preexec_fn" not in kw:
            kw["preexec_fn"] = _die_with_parent
        proc = subprocess.Popen(self.argv(argv), **kw)
        self.lab._track(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 30.0, *, check: bool = False,
            input: str | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` here to completion (text output captured). :class:`LabTimeout` if it
        takes over ``timeout`` s (it is killed); :class:`LabError` on failure if ``check``."""
        return _run(self.argv(argv), timeout=timeout, check=check, input=input, env=env, cwd=cwd)

    def ping(self, addr: str, count: int = 1, wait: float = 1) -> bool:
        """Whether ``addr`` (IPv4 or IPv6) answers ``count`` pings, each awaited ``wait`` s."""
        family = "-6" if ":" in addr else "-4"
        res = self.run(["ping", family, "-n", "-q", "-c", str(count), "-W", f"{wait:g}", addr],
                       timeout=count * (wait + 1) + 5)
        return res.returncode == 0

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
        """Run ``fn(*args)`` in a fresh thread that joined this namespace; return its result.

        Sockets made by ``fn`` belong to the namespace. ``fn`` must bound its own waits;
        :class:`LabTimeout` if it has not returned after ``timeout`` s.
        """
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                fd = os.open(f"/var/run/netns/{self.netns}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc is None or _libc.setns(fd, _CLONE_NEWNET) != 0:
                        err = ctypes.get_errno() if _libc is not None else 0
                        raise OSError(err, f"setns into {self.netns}: {os.strerror(err)}")
                finally:
                    os.close(fd)
                box["value"] = fn(*args)
            except BaseException as e:  # handed to the caller
                box["error"] = e

        t = threading.Thread(target=target, name=f"in-{self.netns}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise LabTimeout(f"call in {self.netns} did not return within {timeout:g}s")
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def http(self, method: str, url: str, body: Any = None, token: str | None = None,
             timeout: float = 10.0) -> tuple[int, Any]:
        """:func:`http_json` from inside this namespace."""
        return self.call(http_json, method, url, body, token, timeout, timeout=timeout + 5)

    def routes(self, family: int = 4) -> list[str]:
        """The routes of every table in this namespace (``ip -4|-6 route show table all``)."""
        res = _ip(f"-{family}", "route", "show", "table", "all", ns=self.netns)
        return [line for line in res.stdout.splitlines() if line.strip()]

    def default_routes(self) -> list[str]:
        """Default routes (IPv4 and IPv6, any table): a lab node must have none."""
        return [r for fam in (4, 6) for r in self.routes(fam)
                if r.startswith("default") or r.split()[:1] in (["0.0.0.0/0"], ["::/0"])]

    def pids(self) -> list[int]:
        return netns_pids(self.netns)


class Lab:
    """A set of namespaces on one bridge; a context manager that removes all of it at exit.

    ``subnet`` must lie in 198.18.0.0/15. ``prefix`` defaults to a fresh ``sml<4 chars>``.
    """

    def __init__(self, prefix: str | None = None, subnet: str = "198.18.0.0/24") -> None:
        net = ipaddress.ip_network(subnet)
        if not (isinstance(net, ipaddress.IPv4Network) and net.subnet_of(UNDERLAY)):
            raise LabError(f"lab subnet {subnet} is outside the underlay range {UNDERLAY}")
        if prefix is not None and not PREFIX_RE.match(prefix):
            raise LabError(f"lab prefix {prefix!r} must look like sml + 4 of [a-z0-9]")
        self.prefix = prefix or ""
        self.subnet = net
        self.hub = ""
        self.nodes: dict[str, Node] = {}
        self.root: Path | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self._started = self._closed = False

    # --- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(raise_errors=exc_type is None)

    def start(self) -> Lab:
        """Create the hub namespace with its bridge (and the owner marker, first)."""
        if self._started:
            return self
        if os.geteuid() != 0:
            raise LabError("a lab needs root (network namespaces)")
        existing = {m.group(1) for ns in list_netns() if (m := LAB_NETNS_RE.match(ns))}
        while not self.prefix or self.prefix in existing:
            self.prefix = "sml" + "".join(secrets.choice(string.ascii_lowercase + string.digits)
                                          for _ in range(4))
        self._started = True
        import atexit
        atexit.register(self.close, False)
        MARKER_DIR.mkdir(parents=True, exist_ok=True)
        st = _proc_stat(os.getpid())
        (MARKER_DIR / f"{self.prefix}.json").write_text(json.dumps(
            {"pid": os.getpid(), "starttime": st[2] if st else None, "argv": sys.argv}))
        try:
            self.root = Path(tempfile.mkdtemp(prefix=f"skymesh-lab-{self.prefix}-"))
            os.chmod(self.root, 0o755)  # Mosquitto (user mosquitto) must traverse it
            self.hub = self.netns_name("hub")
            _run(["ip", "netns", "add", self.hub])
            _ip("link", "add", "br0", "type", "bridge", ns=self.hub)
            _ip("link", "set", "br0", "up", ns=self.hub)
        except BaseException:
            self.close(raise_errors=False)
            raise
        return self

    def close(self, raise_errors: bool = True) -> None:
        """Kill every process in the lab's namespaces, delete the namespaces (and so their
        links), WireGuard sockets of ``<prefix>*`` interfaces and temp dirs. Idempotent."""
        if self._closed or not self._started:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            import atexit
            atexit.unregister(self.close)
        left = _cleanup_prefix(self.prefix, self._procs)
        if left and raise_errors:
            raise LabError(f"lab {self.prefix} left behind: " + "; ".join(left))
        if left:
            print(f"warning: lab {self.prefix} left behind: " + "; ".join(left), file=sys.stderr)

    # --- names ---------------------------------------------------------------------
    def netns_name(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        if not re.fullmatch(r"[a-z0-9]+", name) or len(full) > IFNAMSIZ:
            raise LabError(f"node name {name!r}: use 1-{IFNAMSIZ - len(self.prefix) - 1} "
                           "characters of [a-z0-9]")
        return full

    def ifname(self, suffix: str) -> str:
        """An interface name unique to this lab: ``<prefix><suffix>`` (at most 15 characters)."""
        name = self.prefix + suffix
        if len(name) > IFNAMSIZ or not re.fullmatch(r"[a-z0-9]+", suffix):
            raise LabError(f"interface name {name!r} is not 1-15 characters of [a-z0-9]")
        return name

    # --- nodes -----------------------------------------------------------------------
    def add_node(self, name: str) -> Node:
        """A new namespace ``<prefix>-<name>`` on the bridge with the next underlay address."""
        if not self._started or self._closed:
            raise LabError("add_node() needs a started, open lab (use `with Lab() as lab`)")
        if name in self.nodes or name == "hub":
            raise LabError(f"node name {name!r} is taken")
        ns = self.netns_name(name)
        index = len(self.nodes) + 1
        hosts = self.subnet.hosts()
        try:
            ip = next(a for i, a in enumerate(hosts) if i == index)  # .1 stays free
        except StopIteration:
            raise LabError(f"subnet {self.subnet} has no address left for node {index}") from None
        hub_if = self.ifname(f"v{index}")
        _run(["ip", "netns", "add", ns])
        _ip("link", "set", "lo", "up", ns=ns)
        _ip("link", "add", hub_if, "type", "veth", "peer", "name", "eth0", "netns", ns, ns=self.hub)
        _ip("link", "set", hub_if, "master", "br0", "up", ns=self.hub)
        _ip("addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0", ns=ns)
        _ip("link", "set", "eth0", "up", ns=ns)
        node = Node(self, name, index, ns, str(ip), self.subnet.prefixlen)
        self.nodes[name] = node
        return node

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def namespaces(self) -> list[str]:
        """This lab's namespaces that exist now (hub included)."""
        return [ns for ns in list_netns() if ns.startswith(self.prefix + "-")] if self.prefix else []

    def tempdir(self, name: str) -> Path:
        """A fresh directory inside the lab's temp root (removed at exit), mode 0755."""
        if self.root is None:
            raise LabError("the lab is not started")
        d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        os.chmod(d, 0o755)
        return d

    def _track(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock:
            self._procs = [p for p in self._procs if p.poll() is None]
            self._procs.append(proc)


# --- cleanup -------------------------------------------------------------------------


def _root_links(prefix: str) -> list[str]:
    res = _run(["ip", "-o", "link", "show"], check=False)
    names = [line.split(":")[1].strip().split("@")[0] for line in res.stdout.splitlines()
             if line.count(":") >= 2]
    return [n for n in names if n.startswith(prefix)]


def _prefix_processes(prefix: str) -> list[int]:
    """Live processes (not us) whose command line mentions ``prefix``: anything a lab started
    names its namespace, interface or temp dir."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and prefix in _cmdline(int(entry)) \
                and _alive(int(entry)):
            out.append(int(entry))
    return out


def leftovers(prefix: str) -> list[str]:
    """What of lab ``prefix`` still exists: namespaces, processes, sockets, links, temp dirs."""
    found = []
    nss = [ns for ns in list_netns() if ns.startswith(prefix + "-")]
    if nss:
        found.append(f"namespaces {nss}")
    for ns in nss:
        pids = netns_pids(ns)
        if pids:
            found.append(f"processes in {ns}: " + ", ".join(f"{p} ({_cmdline(p)[:80]})" for p in pids))
    procs = _prefix_processes(prefix)
    if procs:
        found.append("processes naming the lab: " + ", ".join(f"{p} ({_cmdline(p)[:80]})" for p in procs))
    socks = sorted(glob.glob(str(WG_RUN_DIR / f"{prefix}*.sock")))
    if socks:
        found.append(f"sockets {socks}")
    links = _root_links(prefix)
    if links:
        found.append(f"links in the root namespace {links}")
    dirs = sorted(glob.glob(os.path.join(tempfile.gettempdir(), f"skymesh-lab-{prefix}-*")))
    if dirs:
        found.append(f"temp dirs {dirs}")
    return found


def _cleanup_prefix(prefix: str, procs: Iterable[subprocess.Popen[Any]] = ()) -> list[str]:
    """Remove everything of lab ``prefix``; return :func:`leftovers` afterwards."""
    nss = [ns for ns in list_netns() if ns.startswith(prefix + "-")]
    pids = {p for ns in nss for p in netns_pids(ns)}
    pids |= set(_prefix_processes(prefix))
    terminate(pids, procs)
    for ns in nss:
        _run(["ip", "netns", "del", ns], check=False)
    for link in _root_links(prefix):  # none normally: nothing of a lab lives in the root ns
        _ip("link", "del", link, check=False)
    for sock in glob.glob(str(WG_RUN_DIR / f"{prefix}*.sock")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
    for d in glob.glob(os.path.join(tempfile.gettempdir(), f"skymesh-lab-{prefix}-*")):
        shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (MARKER_DIR / f"{prefix}.json").unlink()
    return leftovers(prefix)


def _owner_alive(prefix: str) -> bool:
    try:
        info = json.loads((MARKER_DIR / f"{prefix}.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    st = _proc_stat(int(info.get("pid", 0)))
    return st is not None and st[0] not in ("Z", "X") and st[2] == info.get("starttime")


def cleanup_stale(prefix: str | None = None) -> dict[str, list[str]]:
    """Remove leftovers of crashed labs; returns ``{prefix: what is still left}``.

    With ``prefix``: that lab, whoever owns it. Without: every lab (namespace
    ``sml????-*``, marker, WireGuard socket or temp dir) whose owning process is gone;
    labs of live processes (parallel runs) are left alone.
    """
    if prefix is not None:
        if not PREFIX_RE.match(prefix):
            raise LabError(f"{prefix!r} is not a lab prefix (sml + 4 of [a-z0-9])")
        return {prefix: _cleanup_prefix(prefix)}
    candidates = {m.group(1) for ns in list_netns() if (m := LAB_NETNS_RE.match(ns))}
    candidates |= {p.stem for p in MARKER_DIR.glob("sml*.json")} if MARKER_DIR.exists() else set()
    candidates |= {m.group(1) for s in glob.glob(str(WG_RUN_DIR / "sml*.sock"))
                   if (m := re.match(r"(sml[a-z0-9]{4})", Path(s).name))}
    candidates |= {m.group(1) for d in glob.glob(os.path.join(tempfile.gettempdir(), "skymesh-lab-sml*"))
                   if (m := re.match(r"skymesh-lab-(sml[a-z0-9]{4})-", Path(d).name))}
    return {p: _cleanup_prefix(p) for p in sorted(candidates)
            if PREFIX_RE.match(p) and not _owner_alive(p)}


# --- the control plane ------------------------------------------------------------------


class AdminClient:
    """Admin REST calls (``Authorization: Bearer <admin key>``) made from inside ``node``."""

    def __init__(self, node: Node, api_url: str, admin_key: str, timeout: float = 15.0) -> None:
        self.node, self.api_url, self.admin_key, self.timeout = node, api_url, admin_key, timeout

    def request(self, method: str, path: str, body: Any = None, ok: Iterable[int] = (200, 201, 204)) -> Any:
        status, payload = self.node.http(method, self.api_url + path, body, self.admin_key, self.timeout)
        if status not in set(ok):
            raise ApiError(method, path, status, payload)
        return payload

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/v1/health")  # type: ignore[no-any-return]

    def create_network(self, name: str, ipv4_cidr: str = "100.64.0.0/24", ipv6_cidr: str | None = None,
                       **extra: Any) -> dict[str, Any]:
        body = {"name": name, "ipv4_cidr": ipv4_cidr, **extra}
        if ipv6_cidr is not None:
            body["ipv6_cidr"] = ipv6_cidr
        return self.request("POST", "/v1/networks", body)  # type: ignore[no-any-return]

    def _list(self, resource: str, key: str) -> list[dict[str, Any]]:
        """Every record of ``GET /v1/<resource>``, page by page."""
        return list_all(lambda query: self.request(
            "GET", f"/v1/{resource}" + (f"?{urllib.parse.urlencode(query)}" if query else "")), key)

    def list_networks(self) -> list[dict[str, Any]]:
        return self._list("networks", "networks")

    def get_network(self, network_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/networks/{network_id}")  # type: ignore[no-any-return]

    def create_enrollment_key(self, networks: Sequence[str], uses: int | None = None,
                              unlimited: bool = False) -> dict[str, Any]:
        """The created key; its one-time ``token`` is in the answer."""
        body: dict[str, Any] = {"networks": list(networks)}
        if unlimited:
            body["unlimited"] = True
        else:
            body["uses"] = uses if uses is not None else 10
        return self.request("POST", "/v1/enrollment-keys", body)  # type: ignore[no-any-return]

    def list_hosts(self) -> list[dict[str, Any]]:
        return self._list("hosts", "hosts")

    def get_host(self, host_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/hosts/{host_id}")  # type: ignore[no-any-return]

    def delete_host(self, host_id: str) -> None:
        self.request("DELETE", f"/v1/hosts/{host_id}")

    def host_addresses(self, host_id: str) -> list[dict[str, str]]:
        """``[{network_id, ipv4, ipv6}]`` of a host (overlay addresses, without prefix length)."""
        return self.get_host(host_id)["addresses"]  # type: ignore[no-any-return]


class ControlPlane:
    """``skymesh local up`` (API, DynamoDB Local, Mosquitto, scheduler, bridge) in ``node``.

    Everything it keeps is in ``home`` (default: a lab temp dir), so :meth:`stop` then
    :meth:`start` loses nothing. Its output goes to ``<home>/../stack-<n>.out``; the
    children's logs are in ``<home>/logs``.
    """

    READY_LINE = "skymesh local stack is up"

    def __init__(self, node: Node, home: Path | None = None, *, api_port: int = 8787,
                 mqtt_port: int = 8883, dynamodb_port: int = 8000) -> None:
        self.node = node
        self.home = (home or node.lab.tempdir("control") / "home").absolute()
        self.api_port, self.mqtt_port, self.dynamodb_port = api_port, mqtt_port, dynamodb_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.out: Path | None = None
        self.info: dict[str, Any] = {}
        self._starts = 0
        self._admin: AdminClient | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.node.ip}:{self.api_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def admin(self) -> AdminClient:
        """Admin REST client (from the control plane's own namespace); needs a start first."""
        if self._admin is None:
            raise LabError("the control plane has not been started yet (no admin key)")
        return self._admin

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "skymesh.cli", "local", "up", "--home", str(self.home),
                "--bind", self.node.ip, "--api-port", str(self.api_port),
                "--mqtt-port", str(self.mqtt_port), "--dynamodb-port", str(self.dynamodb_port)]

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out and self.out.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        """The supervisor's output and the tail of each child's log, for failure messages."""
        parts = [f"--- {self.out}:\n{self.output()[-4000:]}"]
        for log in sorted((self.home / "logs").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log}:\n" + "\n".join(text))
        return "\n".join(parts)

    def start(self, timeout: float = 120.0, via: Node | None = None) -> dict[str, Any]:
        """Start it and wait (bounded) until it is fully up and ``GET /v1/health`` answers
        from ``via`` (default: its own node). Returns ``local.json``."""
        if self.running:
            raise LabError("the control plane is already running")
        self.home.parent.mkdir(parents=True, exist_ok=True)
        self._starts += 1
        self.out = self.home.parent / f"stack-{self._starts}.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYMESH_", "AWS_"))}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        with self.out.open("wb") as f:
            self.proc = self.node.popen(self.argv(), stdout=f, stderr=subprocess.STDOUT,
                                        env=env, cwd=str(self.home.parent))
        probe = via or self.node

        def up() -> bool:
            if not self.running:
                raise LabError(f"`skymesh local up` exited with {self.proc.returncode if self.proc else None}"
                               f" while starting\n{self.log_tail()}")
            if self.READY_LINE not in self.output():
                return False
            status, body = probe.http("GET", self.api_url + "/v1/health", timeout=3)
            return status == 200 and isinstance(body, dict) and body.get("ok") is True

        try:
            wait_until(up, timeout, f"the control plane in {self.node.netns} ({self.api_url}/v1/health"
                       f" from {probe.netns})", interval=0.2, details=self.log_tail, ignore=(OSError,))
        except BaseException:
            self.stop(check=False)
            raise
        self.info = json.loads((self.home / "local.json").read_text())
        self._admin = AdminClient(self.node, self.info["api_url"], self.info["admin_key"])
        return self.info

    def stop(self, timeout: float = 60.0, check: bool = True) -> int | None:
        """SIGTERM the supervisor and wait (bounded) until it AND every child it had
        (DynamoDB Local, Mosquitto, API, scheduler, bridge) are gone. Children still
        alive are killed and, if ``check``, reported with :class:`LabError`."""
        p = self.proc
        if p is None:
            return None
        children = descendants(p.pid) if p.poll() is None else []
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                terminate([p.pid, *children], [p], grace=2.0)
                if check:
                    raise LabError(f"`skymesh local up` ignored SIGTERM for {timeout:g}s; killed it\n"
                                   f"{self.log_tail()}") from None
        try:
            wait_until(lambda: not any(_alive(c) for c in children), 20.0,
                       "the control plane's children to exit after the supervisor")
        except LabTimeout:
            stuck = [f"{c} ({_cmdline(c)[:80]})" for c in children if _alive(c)]
            terminate(children, grace=2.0)
            if check:
                raise LabError(f"children of `skymesh local up` outlived it: {stuck}") from None
        return p.returncode
