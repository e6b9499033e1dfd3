"""The lab's namespaces: a :class:`Lab` (a hub with a bridge, removed at exit) and its nodes (:class:`Node`).

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
end also on failure, and every wait bounded (:func:`~skymesh.lab.wait.wait_until`, timeouts
on every subprocess). A lab whose owner died (``kill -9``) is removed by
:func:`~skymesh.lab.cleanup.cleanup_stale`.

Calls into a namespace from this process (the shared REST client of
:class:`~skymesh.lab.control_plane.ControlPlane`, health checks) run in a short-lived thread
that joined the namespace with ``setns(2)`` (:meth:`Node.call`, :meth:`Node.urlopen`), so no
extra process is needed per request.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import ipaddress
import os
import re
import secrets
import string
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import urllib.response
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..client import send
from . import linux, processes
from .cleanup import cleanup_prefix, write_owner_marker
from .errors import LabError, LabTimeout
from .iproute import ip, list_netns, netns_pids
from .names import IFNAMSIZ, LAB_NETNS_RE, PREFIX_RE, UNDERLAY

__all__ = ["Lab", "Node"]

T = TypeVar("T")

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # lab traffic never via a proxy


def _exchange(request: urllib.request.Request, timeout: float) -> urllib.response.addinfourl:
    """The whole exchange, body read, so that no socket of the namespace is used outside it."""
    try:
        with _NO_PROXY.open(request, timeout=timeout) as resp:
            return urllib.response.addinfourl(io.BytesIO(resp.read()), resp.headers, resp.url, resp.status)
    except urllib.error.HTTPError as e:
        raw = e.read() if e.fp is not None else b""
        raise urllib.error.HTTPError(e.url, e.code, e.msg, e.headers, io.BytesIO(raw)) from None


class Node:
    """One namespace on the lab bridge. ``ip`` is its underlay address (198.18.x.y)."""

    def __init__(self, lab: Lab, name: str, index: int, netns: str, ip: str, prefixlen: int) -> None:
        self.lab, self.name, self.index = lab, name, index
        self.netns, self.ip, self.prefixlen = netns, ip, prefixlen
        self.router_ip: str | None = None  # a node behind another (Lab.add_node_behind): that side's address

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
        if die_with_parent and linux.can_die_with_parent() and "preexec_fn" not in kw:
            kw["preexec_fn"] = linux.die_with_parent
        proc = subprocess.Popen(self.argv(argv), **kw)
        self.lab._track(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 30.0, *, check: bool = False,
            input: str | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` here to completion (text output captured). :class:`LabTimeout` if it
        takes over ``timeout`` s (it is killed); :class:`LabError` on failure if ``check``."""
        return processes.run(self.argv(argv), timeout=timeout, check=check, input=input, env=env, cwd=cwd)

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
                linux.join_netns(self.netns)
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

    def urlopen(self, request: urllib.request.Request, timeout: float) -> urllib.response.addinfourl:
        """``urllib.request.urlopen`` from inside this namespace, never via a proxy, the answer read
        (the ``opener`` of :class:`~skymesh.client.ApiClient` and :func:`~skymesh.client.send`).

        Raises what urlopen raises (``HTTPError`` for an error status, ``OSError`` for no answer),
        or :class:`LabTimeout` if the thread has not returned 5 s after ``timeout``.
        """
        return self.call(_exchange, request, timeout, timeout=timeout + 5)

    def http(self, method: str, url: str, body: Any = None, token: str | None = None,
             timeout: float = 10.0) -> tuple[int, Any]:
        """One JSON request from inside this namespace → (status, decoded body, its text if it is
        not JSON, or None). No answer raises ``OSError``."""
        answer = send(method, url, body, token, timeout=timeout, opener=self.urlopen)
        try:
            return answer.status, answer.json()
        except ValueError:
            return answer.status, answer.raw.decode(errors="replace")

    def routes(self, family: int = 4) -> list[str]:
        """The routes of every table in this namespace (``ip -4|-6 route show table all``)."""
        res = ip(f"-{family}", "route", "show", "table", "all", ns=self.netns)
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
        atexit.register(self.close, False)
        write_owner_marker(self.prefix)
        try:
            self.root = Path(tempfile.mkdtemp(prefix=f"skymesh-lab-{self.prefix}-"))
            os.chmod(self.root, 0o755)  # Mosquitto (user mosquitto) must traverse it
            self.hub = self.netns_name("hub")
            processes.run(["ip", "netns", "add", self.hub])
            ip("link", "add", "br0", "type", "bridge", ns=self.hub)
            ip("link", "set", "br0", "up", ns=self.hub)
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
            atexit.unregister(self.close)
        left = cleanup_prefix(self.prefix, self._procs)
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
            address = next(a for i, a in enumerate(hosts) if i == index)  # .1 stays free
        except StopIteration:
            raise LabError(f"subnet {self.subnet} has no address left for node {index}") from None
        hub_if = self.ifname(f"v{index}")
        processes.run(["ip", "netns", "add", ns])
        ip("link", "set", "lo", "up", ns=ns)
        ip("link", "add", hub_if, "type", "veth", "peer", "name", "eth0", "netns", ns, ns=self.hub)
        ip("link", "set", hub_if, "master", "br0", "up", ns=self.hub)
        ip("addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        node = Node(self, name, index, ns, str(address), self.subnet.prefixlen)
        self.nodes[name] = node
        return node

    def add_node_behind(self, name: str, router: Node | Sequence[Node], subnet: str) -> Node:
        """A new namespace ``<prefix>-<name>`` that is NOT on the bridge: reached only through
        ``router`` (a LAN behind a gateway, or the "internet" behind its uplink), or through each
        of several routers (a LAN behind HA gateways, on a bridge of its own), in ``subnet``
        (inside 198.18.0.0/15): the new node is ``.1``, the routers ``.2``, ``.3``… It has no
        route beyond its subnet, so it answers only what comes from a router's address: what
        others send through a router reaches it only masqueraded (and its answer goes back
        through that router).

        Returns the new node: its ``ip`` is ``.1``, its ``router_ip`` the first router's ``.2``.
        """
        routers = [router] if isinstance(router, Node) else list(router)
        if not self._started or self._closed:
            raise LabError("add_node_behind() needs a started, open lab")
        if name in self.nodes or name == "hub":
            raise LabError(f"node name {name!r} is taken")
        net = ipaddress.ip_network(subnet)
        inside = isinstance(net, ipaddress.IPv4Network) and net.subnet_of(UNDERLAY)
        if not inside or net.overlaps(self.subnet):
            raise LabError(f"subnet {subnet} must lie in {UNDERLAY} outside the bridge's {self.subnet}")
        if not routers or len(routers) > 8:
            raise LabError("add_node_behind() takes 1 to 8 routers")
        ns = self.netns_name(name)
        index = len(self.nodes) + 1
        here, *theirs = (str(a) for a in list(net.hosts())[:1 + len(routers)])
        processes.run(["ip", "netns", "add", ns])
        ip("link", "set", "lo", "up", ns=ns)
        lan = "eth0"
        if len(routers) > 1:
            lan = "br0"
            ip("link", "add", lan, "type", "bridge", ns=ns)
        for n, (r, there) in enumerate(zip(routers, theirs, strict=True)):
            link = self.ifname(f"l{index}" if len(routers) == 1 else f"l{index}r{n}")
            end = "eth0" if len(routers) == 1 else f"eth{n}"
            ip("link", "add", link, "type", "veth", "peer", "name", end, "netns", ns, ns=r.netns)
            ip("addr", "add", f"{there}/{net.prefixlen}", "dev", link, ns=r.netns)
            ip("link", "set", link, "up", ns=r.netns)
            if end != lan:
                ip("link", "set", end, "master", lan, ns=ns)
            ip("link", "set", end, "up", ns=ns)
        ip("addr", "add", f"{here}/{net.prefixlen}", "dev", lan, ns=ns)
        ip("link", "set", lan, "up", ns=ns)
        node = Node(self, name, index, ns, here, net.prefixlen)
        node.router_ip = theirs[0]
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
