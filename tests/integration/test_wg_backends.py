"""Contract tests of the WireGuard backends, NetConf, and a real data path between two namespaces.

The same cases run against every backend: ``memory`` always, ``uapi`` (wireguard-go)
as root with wireguard-go and /dev/net/tun, ``netlink`` when the kernel has
WireGuard; a backend that cannot run here is skipped with the reason.

Lab rules: every namespace is ``smct-<random>`` and every interface ``smct<rand4><n>``
(the UAPI socket directory is shared by all namespaces); the underlay is
198.18.0.0/15 only and no lab namespace has a route out; everything made
(namespaces, links, wireguard-go processes, socket files) is removed in a
``finally``, also when a test fails; every wait is polled with a deadline.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from socket import AF_INET, AF_INET6, inet_pton

import pytest

from agent import keys
from agent.netconf import NetConf, NetConfError, local_addresses
from agent.wg import format_endpoint, make_backend, resolve_endpoint
from agent.wg.base import Backend, BackendError, DevicePeer
from agent.wg.memory import MemoryBackend
from chalicelib.domain.device import PeerConfig, PeerDiff, peer_diff

WAIT = 10.0
SOCKET_DIR = Path("/var/run/wireguard")


def _uapi_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, TUN devices)"
    if shutil.which("wireguard-go") is None:
        return "wireguard-go is not on PATH"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    return None


UAPI_UNAVAILABLE = _uapi_unavailable()
needs_root = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")]
needs_uapi = [pytest.mark.root, pytest.mark.skipif(UAPI_UNAVAILABLE is not None,
                                                   reason=UAPI_UNAVAILABLE or "")]


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


# --- keys and peers -------------------------------------------------------------------


def keypair() -> tuple[str, str]:
    """A WireGuard (X25519) key pair, base64: (private, public)."""
    priv = keys.new_wireguard_key()
    return priv, keys.wireguard_public_key(priv)


def make_peer(i: int) -> PeerConfig:
    """Peer number ``i``: an underlay endpoint in 198.18.0.0/15, one IPv4 and one IPv6 overlay address."""
    return PeerConfig(public_key=keypair()[1], endpoint=f"198.18.{i // 250}.{i % 250 + 1}:51820",
                      allowed_ips=(f"100.64.{i // 250}.{i % 250 + 1}/32", f"fd5a::{i + 1:x}/128"),
                      keepalive=25 if i % 2 else 0)


def make_peers(n: int, start: int = 0) -> dict[str, PeerConfig]:
    return {p.public_key: p for p in (make_peer(i) for i in range(start, start + n))}


# --- the lab --------------------------------------------------------------------------


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=WAIT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


class Lab:
    """Namespaces and interface names of one test, all removed by :meth:`cleanup`."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(2)
        self.namespaces: list[str] = []
        self.ifnames: list[str] = []

    def netns(self) -> str:
        """A fresh namespace with loopback up and nothing else (no route out)."""
        name = f"smct-{secrets.token_hex(4)}"
        self.namespaces.append(name)
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def ifname(self) -> str:
        name = f"smct{self.tag}{len(self.ifnames)}"
        self.ifnames.append(name)
        return name

    def veth(self, ns_a: str, addr_a: str, ns_b: str, addr_b: str) -> tuple[str, str]:
        """A veth pair between two namespaces with underlay addresses (198.18.0.0/15 only)."""
        for a in (addr_a, addr_b):
            assert ipaddress.ip_interface(a).network.subnet_of(ipaddress.ip_network("198.18.0.0/15")), a
        a, b = self.ifname(), self.ifname()
        sh("ip", "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b)
        sh("ip", "-n", ns_a, "addr", "add", addr_a, "dev", a)
        sh("ip", "-n", ns_b, "addr", "add", addr_b, "dev", b)
        sh("ip", "-n", ns_a, "link", "set", a, "up")
        sh("ip", "-n", ns_b, "link", "set", b, "up")
        return a, b

    def cleanup(self) -> list[str]:
        """Kill what runs in our namespaces, delete them, remove our sockets; what was left over."""
        leftovers = []
        for ns in self.namespaces:
            pids = netns_pids(ns)
            if pids:
                leftovers.append(f"processes {pids} in {ns}")
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in netns_pids(ns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + 5
                while any(_alive(p) for p in netns_pids(ns)) and time.monotonic() < deadline:
                    time.sleep(0.02)
            sh("ip", "netns", "del", ns, check=False)
        for name in self.ifnames:
            sock = SOCKET_DIR / f"{name}.sock"
            if sock.exists():
                leftovers.append(f"socket {sock}")
                with contextlib.suppress(FileNotFoundError):
                    sock.unlink()
        return leftovers


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        lab.cleanup()


# --- the backends under test ----------------------------------------------------------


@functools.cache
def kernel_wireguard() -> tuple[bool, str]:
    """:func:`agent.wg.netlink.kernel_wireguard_available`, asked once per session."""
    from agent.wg.netlink import kernel_wireguard_available

    return kernel_wireguard_available()


BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("uapi", id="uapi", marks=needs_uapi),
    pytest.param("netlink", id="netlink", marks=needs_root),
]


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A backend bound to a fresh interface name (in a fresh namespace for the real ones)."""
    kind = request.param
    if kind == "memory":
        yield MemoryBackend("smct-mem0")
        return
    if kind == "netlink":
        ok, reason = kernel_wireguard()
        if not ok:
            pytest.skip(reason)
    lab: Lab = request.getfixturevalue("lab")
    b = make_backend(kind, lab.ifname(), netns=lab.netns())
    try:
        yield b
    finally:
        b.delete()


def with_backends(fn: Callable[..., None]) -> Callable[..., None]:
    return pytest.mark.parametrize("backend", BACKENDS, indirect=True)(fn)


def uapi_pid(b: Backend) -> list[int]:
    """The wireguard-go processes serving a uapi backend's device (empty for other backends)."""
    return sorted(b._daemon_pids()) if b.name == "uapi" else []  # type: ignore[attr-defined]


def apply_desired(b: Backend, desired: dict[str, PeerConfig]) -> PeerDiff:
    """What the agent does: diff the device against ``desired`` and apply that diff."""
    diff = peer_diff(b.peers(), desired)
    b.apply_peers(diff.upsert, diff.remove)
    return diff


# --- the contract -----------------------------------------------------------------------


@with_backends
def test_full_apply_reads_back_what_was_set(backend: Backend) -> None:
    priv, pub = keypair()
    assert backend.ensure_device(priv, 51820) is True
    assert backend.exists()
    assert backend.public_key() == pub
    assert backend.listen_port() == 51820
    desired = make_peers(300)
    backend.apply_peers(list(desired.values()), [])
    assert backend.peers() == desired
    assert peer_diff(backend.peers(), desired) == PeerDiff()


@with_backends
def test_the_fwmark_is_set_read_back_and_removed_without_touching_the_peers(backend: Backend) -> None:
    backend.ensure_device(keypair()[0], 51820)
    desired = make_peers(3)
    backend.apply_peers(list(desired.values()), [])
    assert backend.fwmark() == 0
    backend.set_fwmark(51820)  # full tunnel: the tunnel's own packets carry the mark
    assert backend.fwmark() == 51820 and backend.peers() == desired
    backend.set_fwmark(0)
    assert backend.fwmark() == 0 and backend.peers() == desired
    with pytest.raises(ValueError):
        backend.set_fwmark(2**32)


@with_backends
def test_single_peer_changes_touch_only_that_peer(backend: Backend) -> None:
    backend.ensure_device(keypair()[0], 51820)
    desired = make_peers(20)
    apply_desired(backend, desired)
    keys = sorted(desired)

    def step(new_desired: dict[str, PeerConfig], expect: PeerDiff) -> None:
        before = backend.stats()
        diff = apply_desired(backend, new_desired)
        assert diff == expect, "the diff should name exactly one peer"
        got = backend.peers()
        assert got == new_desired
        touched = {p.public_key for p in expect.upsert} | set(expect.remove)
        after = backend.stats()
        for key in set(before) - touched:
            assert after[key] == before[key], f"peer {key} was not to be touched"
        if isinstance(backend, MemoryBackend):
            assert backend.applies[-1] == expect

    # add one
    added = make_peer(100)
    desired = {**desired, added.public_key: added}
    step(desired, PeerDiff(upsert=(added,)))
    # change the endpoint of one
    k = keys[3]
    desired = {**desired, k: replace(desired[k], endpoint="198.19.7.7:4500")}
    step(desired, PeerDiff(upsert=(desired[k],)))
    # replace its allowed IPs (the old ones must go, not be kept beside the new)
    desired = {**desired, k: replace(desired[k], allowed_ips=("100.64.9.0/24", "fd5a:9::/64"))}
    step(desired, PeerDiff(upsert=(desired[k],)))
    assert backend.peers()[k].allowed_ips == ("100.64.9.0/24", "fd5a:9::/64")
    # keepalive on, then off
    k2 = keys[4]
    desired = {**desired, k2: replace(desired[k2], keepalive=7)}
    step(desired, PeerDiff(upsert=(desired[k2],)))
    desired = {**desired, k2: replace(desired[k2], keepalive=0)}
    step(desired, PeerDiff(upsert=(desired[k2],)))
    # remove one
    gone = keys[5]
    desired = {key: p for key, p in desired.items() if key != gone}
    step(desired, PeerDiff(remove=(gone,)))
    assert gone not in backend.peers()


@with_backends
def test_reapply_is_idempotent_and_does_not_recreate(backend: Backend) -> None:
    priv, pub = keypair()
    assert backend.ensure_device(priv, 51820) is True
    pids = uapi_pid(backend)
    desired = make_peers(50)
    apply_desired(backend, desired)
    assert peer_diff(backend.peers(), desired) == PeerDiff(), "a second diff right after apply must be empty"
    assert backend.ensure_device(priv, 51820) is False, "ensure_device recreated a device that was there"
    assert backend.peers() == desired, "ensure_device on a live device lost its peers"
    assert uapi_pid(backend) == pids, "wireguard-go was restarted"
    if isinstance(backend, MemoryBackend):
        assert backend.creations == 1 and backend.apply_count == 1
    # a new key is set in place: same device, same peers
    priv2, pub2 = keypair()
    assert backend.ensure_device(priv2, 51821) is False
    assert (backend.public_key(), backend.listen_port()) == (pub2, 51821)
    assert backend.peers() == desired
    # port 0 = any: the current port stays
    assert backend.ensure_device(priv2, 0) is False
    assert backend.listen_port() == 51821
    backend.apply_peers([], [])  # an empty diff is a no-op


@with_backends
def test_ensure_device_recreates_after_delete(backend: Backend) -> None:
    priv, pub = keypair()
    backend.ensure_device(priv, 51820)
    backend.apply_peers(list(make_peers(5).values()), [])
    backend.delete()
    assert not backend.exists()
    if backend.name == "uapi":
        sock = SOCKET_DIR / f"{backend.ifname}.sock"
        assert not sock.exists(), f"{sock} is still there after delete()"
        assert uapi_pid(backend) == [], "wireguard-go still runs after delete()"
    with pytest.raises(BackendError):
        backend.peers()
    assert backend.ensure_device(priv, 51820) is True
    assert backend.exists()
    assert backend.public_key() == pub
    assert backend.peers() == {}, "a recreated device starts without peers"
    backend.delete()
    backend.delete()  # deleting what is gone is fine


@with_backends
def test_stats_shape(backend: Backend) -> None:
    backend.ensure_device(keypair()[0], 51820)
    desired = make_peers(10)
    backend.apply_peers(list(desired.values()), [])
    stats = backend.stats()
    assert set(stats) == set(desired)
    for key, s in stats.items():
        assert isinstance(s, DevicePeer)
        assert s.public_key == key
        assert s.endpoint == desired[key].endpoint
        assert s.latest_handshake is None, "no handshake can have happened"
        assert isinstance(s.rx_bytes, int) and isinstance(s.tx_bytes, int)
        assert s.rx_bytes == 0


@with_backends
def test_bad_input_is_refused_and_changes_nothing(backend: Backend) -> None:
    with pytest.raises(BackendError, match="ensure_device"):
        backend.peers()
    with pytest.raises(BackendError, match="not a WireGuard key"):
        backend.ensure_device("not-a-key", 51820)
    backend.ensure_device(keypair()[0], 51820)
    desired = make_peers(5)
    backend.apply_peers(list(desired.values()), [])
    bad = PeerConfig(public_key="AAAA", allowed_ips=("100.64.5.5/32",))
    with pytest.raises(BackendError, match="not a WireGuard key"):
        backend.apply_peers([make_peer(50), bad], [])
    assert backend.peers() == desired, "a refused apply must not half-apply"
    one = next(iter(desired.values()))
    with pytest.raises(ValueError, match="both"):
        backend.apply_peers([one], [one.public_key])


# --- uapi specifics ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", [pytest.param("uapi", marks=needs_uapi)], indirect=True)
def test_uapi_errno_becomes_backend_error(backend: Backend, lab: Lab) -> None:
    backend.ensure_device(keypair()[0], 51820)
    other = make_backend("uapi", lab.ifname(), netns=backend.netns)  # type: ignore[attr-defined]
    try:
        with pytest.raises(BackendError, match=r"listen port 51820: errno 98 \(EADDRINUSE"):
            other.ensure_device(keypair()[0], 51820)
    finally:
        other.delete()


@pytest.mark.parametrize("backend", [pytest.param("uapi", marks=needs_uapi)], indirect=True)
def test_uapi_replaces_a_stale_socket(backend: Backend) -> None:
    SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    sock_path = SOCKET_DIR / f"{backend.ifname}.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sock_path))
    s.close()  # the file stays, nobody listens: what a killed wireguard-go leaves
    assert not backend.exists()
    assert backend.ensure_device(keypair()[0], 51820) is True
    assert backend.exists()


@pytest.mark.parametrize("backend", [pytest.param("uapi", marks=needs_uapi)], indirect=True)
def test_uapi_device_outlives_its_backend_object(backend: Backend) -> None:
    """wireguard-go daemonizes: a new backend object (an agent restart) finds the device as it was."""
    priv, _ = keypair()
    backend.ensure_device(priv, 51820)
    desired = make_peers(3)
    backend.apply_peers(list(desired.values()), [])
    again = make_backend("uapi", backend.ifname, netns=backend.netns)  # type: ignore[attr-defined]
    assert again.ensure_device(priv, 51820) is False
    assert again.peers() == desired


@pytest.mark.root
@pytest.mark.skipif(UAPI_UNAVAILABLE is not None, reason=UAPI_UNAVAILABLE or "")
def test_uapi_leaves_a_foreign_link_of_its_name_alone(lab: Lab) -> None:
    ns, name = lab.netns(), lab.ifname()
    sh("ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", lab.ifname())
    wg = make_backend("uapi", name, netns=ns)
    with pytest.raises(BackendError, match=rf"{name}: ip netns exec {ns} wireguard-go {name} failed.*TUN"):
        wg.ensure_device(keypair()[0], 51820)
    wg.delete()
    assert link_of(ns, name)["ifname"] == name, "delete() removed a link that is not wireguard-go's"


@pytest.mark.root
@pytest.mark.skipif(UAPI_UNAVAILABLE is not None, reason=UAPI_UNAVAILABLE or "")
def test_auto_keeps_a_device_wireguard_go_serves(lab: Lab) -> None:
    ns = lab.netns()
    served = make_backend("uapi", lab.ifname(), netns=ns)
    served.ensure_device(keypair()[0], 51820)
    try:
        assert make_backend("auto", served.ifname, netns=ns).name == "uapi"
        expected = "netlink" if kernel_wireguard()[0] else "uapi"
        assert make_backend("auto", lab.ifname(), netns=ns).name == expected, kernel_wireguard()[1]
    finally:
        served.delete()


def test_make_backend_kinds() -> None:
    assert isinstance(make_backend("memory", "x0"), MemoryBackend)
    assert make_backend("uapi", "x0").name == "uapi"
    assert make_backend("netlink", "x0").name == "netlink"
    with pytest.raises(ValueError, match="unknown WireGuard backend"):
        make_backend("kernel", "x0")


def test_endpoints_are_resolved_and_formatted() -> None:
    assert resolve_endpoint("198.18.0.1:51820") == ("198.18.0.1", 51820)
    assert resolve_endpoint("[2001:DB8::7]:51820") == ("2001:db8::7", 51820)
    assert format_endpoint("2001:db8::7", 1) == "[2001:db8::7]:1"
    assert resolve_endpoint("localhost:1")[1] == 1
    with pytest.raises(BackendError, match="host:port"):
        resolve_endpoint("198.18.0.1")


def test_netlink_dump_parsing_merges_continued_peers() -> None:
    """The kernel splits a big dump over messages, continuing a peer with only its key and IPs."""
    from pyroute2.netlink.generic.wireguard import wgmsg

    from agent.wg.netlink import parse_dump, peer_message

    priv, _ = keypair()
    p1, p2 = keypair()[1], keypair()[1]

    def allowed(ip: str) -> dict:
        iface = ipaddress.ip_interface(ip)
        fam = AF_INET if iface.version == 4 else AF_INET6
        return {"attrs": [["WGALLOWEDIP_A_FAMILY", fam],
                          ["WGALLOWEDIP_A_IPADDR", inet_pton(fam, str(iface.ip))],
                          ["WGALLOWEDIP_A_CIDR_MASK", iface.network.prefixlen]]}

    def msg(attrs: list) -> wgmsg:
        m = wgmsg()
        m["cmd"], m["version"], m["attrs"] = 0, 1, attrs
        m.encode()
        out = wgmsg(m.data)
        out.decode()
        return out

    first = msg([["WGDEVICE_A_IFNAME", "wg0"], ["WGDEVICE_A_PRIVATE_KEY", priv],
                 ["WGDEVICE_A_LISTEN_PORT", 51820],
                 ["WGDEVICE_A_PEERS", [
                     {"attrs": [["WGPEER_A_PUBLIC_KEY", p1],
                                ["WGPEER_A_ENDPOINT", {"addr": "198.18.0.9", "port": 51820}],
                                ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 25],
                                ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 1700000000, "tv_nsec": 0}],
                                ["WGPEER_A_RX_BYTES", 10], ["WGPEER_A_TX_BYTES", 20],
                                ["WGPEER_A_ALLOWEDIPS", [allowed("100.64.0.9/32")]]]},
                     {"attrs": [["WGPEER_A_PUBLIC_KEY", p2],
                                ["WGPEER_A_ENDPOINT", {"addr": "fd00::9", "port": 4500}],
                                ["WGPEER_A_ALLOWEDIPS", [allowed("100.64.0.10/32")]]]}]]])
    second = msg([["WGDEVICE_A_IFNAME", "wg0"], ["WGDEVICE_A_PRIVATE_KEY", priv],
                  ["WGDEVICE_A_LISTEN_PORT", 51820],
                  ["WGDEVICE_A_PEERS", [{"attrs": [["WGPEER_A_PUBLIC_KEY", p2],
                                                   ["WGPEER_A_ALLOWEDIPS", [allowed("fd5a::10/128")]]]}]]])
    dev = parse_dump([first, second])
    assert (dev.private_key, dev.listen_port) == (priv, 51820)
    assert dev.peer_configs() == {
        p1: PeerConfig(p1, "198.18.0.9:51820", ("100.64.0.9/32",), 25),
        p2: PeerConfig(p2, "[fd00::9]:4500", ("100.64.0.10/32", "fd5a::10/128"), 0),
    }
    assert dev.peers[p1] == DevicePeer(p1, "198.18.0.9:51820", 25, ["100.64.0.9/32"], 1700000000, 10, 20)
    assert dev.peers[p2].latest_handshake is None
    assert peer_message(PeerConfig(p2, "[fd00::9]:4500", ("fd5a::10/128",), 0)) == {
        "public_key": p2, "persistent_keepalive": 0, "replace_allowed_ips": True,
        "allowed_ips": ["fd5a::10/128"], "endpoint_addr": "fd00::9", "endpoint_port": 4500}


# --- NetConf ----------------------------------------------------------------------------


def ip_json(ns: str, *args: str) -> list[dict]:
    return json.loads(sh("ip", "-j", "-n", ns, *args).stdout or "[]")


def addrs_of(ns: str, ifname: str) -> set[str]:
    out = set()
    for link in ip_json(ns, "addr", "show", "dev", ifname):
        for a in link.get("addr_info", []):
            if a.get("scope") != "link":
                out.add(f"{a['local']}/{a['prefixlen']}")
    return out


def routes_of(ns: str, ifname: str, proto: str = "static") -> set[str]:
    out = set()
    for fam in ("-4", "-6"):
        for r in json.loads(sh("ip", "-j", fam, "-n", ns, "route", "show", "dev", ifname,
                               "proto", proto).stdout or "[]"):
            out.add(str(ipaddress.ip_network(r["dst"])))
    return out


def link_of(ns: str, ifname: str) -> dict:
    return ip_json(ns, "link", "show", "dev", ifname)[0]


@pytest.fixture
def netconf_link(lab: Lab) -> tuple[str, str]:
    """(namespace, link): one end of a veth pair (both ends up) to configure."""
    ns = lab.netns()
    a, b = lab.ifname(), lab.ifname()
    sh("ip", "-n", ns, "link", "add", a, "type", "veth", "peer", "name", b)
    sh("ip", "-n", ns, "link", "set", b, "up")
    return ns, a


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_netconf_applies_changes_and_clears(netconf_link: tuple[str, str]) -> None:
    ns, ifname = netconf_link
    nc = NetConf(ifname, netns=ns)
    changes = nc.apply(("100.64.0.7/32", "fd5a::7/128"), ("100.64.0.0/16", "fd5a::/64"), 1380)
    assert changes.addresses_added == ("100.64.0.7/32", "fd5a::7/128") and changes.brought_up
    assert addrs_of(ns, ifname) == {"100.64.0.7/32", "fd5a::7/128"}
    assert routes_of(ns, ifname) == {"100.64.0.0/16", "fd5a::/64"}
    link = link_of(ns, ifname)
    assert link["mtu"] == 1380 and "UP" in link["flags"]
    assert not nc.apply(("100.64.0.7/32", "fd5a::7/128"), ("100.64.0.0/16", "fd5a::/64"), 1380), \
        "a second apply of the same config changed something"

    # someone else's route on our link (another proto) is never ours to remove
    sh("ip", "-n", ns, "route", "add", "198.19.99.0/24", "dev", ifname, "proto", "boot")
    changes = nc.apply(("100.64.0.8/32", "fd5a::7/128"), ("100.64.0.0/15", "fd5a::/48"), 1420)
    assert changes.addresses_removed == ("100.64.0.7/32",) and changes.addresses_added == ("100.64.0.8/32",)
    assert set(changes.routes_removed) == {"100.64.0.0/16", "fd5a::/64"}
    assert addrs_of(ns, ifname) == {"100.64.0.8/32", "fd5a::7/128"}
    assert routes_of(ns, ifname) == {"100.64.0.0/15", "fd5a::/48"}
    assert routes_of(ns, ifname, proto="boot") == {"198.19.99.0/24"}
    assert link_of(ns, ifname)["mtu"] == 1420

    # an address added by hand is not wanted: apply removes it
    sh("ip", "-n", ns, "addr", "add", "100.64.3.3/32", "dev", ifname)
    assert nc.apply(("100.64.0.8/32", "fd5a::7/128"), ("100.64.0.0/15", "fd5a::/48"), 1420) \
        .addresses_removed == ("100.64.3.3/32",)

    # the same addresses with other prefix lengths
    changes = nc.apply(("100.64.0.8/24", "fd5a::7/64"), ("100.64.0.0/15", "fd5a::/48"), 1420)
    assert changes.addresses_added == ("100.64.0.8/24", "fd5a::7/64")
    assert addrs_of(ns, ifname) == {"100.64.0.8/24", "fd5a::7/64"}
    assert routes_of(ns, ifname) == {"100.64.0.0/15", "fd5a::/48"}

    cleared = nc.clear()
    assert set(cleared.routes_removed) == {"100.64.0.0/15", "fd5a::/48"}
    assert addrs_of(ns, ifname) == set()
    assert routes_of(ns, ifname) == set()
    # (the kernel itself then drops the other IPv4 routes via the link: its last IPv4 address went)
    assert link_of(ns, ifname)["ifname"] == ifname, "clear() keeps the link"
    assert not nc.clear()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_netconf_reports_what_it_cannot_do(lab: Lab, netconf_link: tuple[str, str]) -> None:
    ns, ifname = netconf_link
    with pytest.raises(NetConfError, match="does not exist in network namespace"):
        NetConf("smctnone", netns=ns).apply((), (), 1420)
    assert not NetConf("smctnone", netns=ns).clear()
    # the range is already routed into another link
    other = lab.ifname()
    other_peer = lab.ifname()
    sh("ip", "-n", ns, "link", "add", other, "type", "veth", "peer", "name", other_peer)
    sh("ip", "-n", ns, "link", "set", other, "up")
    sh("ip", "-n", ns, "route", "add", "100.64.0.0/16", "dev", other, "proto", "static")
    with pytest.raises(NetConfError, match="100.64.0.0/16.*already exists on another interface"):
        NetConf(ifname, netns=ns).apply(("100.64.0.7/32",), ("100.64.0.0/16",), 1420)
    assert addrs_of(ns, ifname) == {"100.64.0.7/32"}, "the rest of the config is still applied"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_local_addresses(lab: Lab) -> None:
    a_ns, b_ns = lab.netns(), lab.netns()
    a, _ = lab.veth(a_ns, "198.18.10.1/24", b_ns, "198.18.10.2/24")
    down = lab.ifname()
    sh("ip", "-n", a_ns, "link", "add", down, "type", "veth", "peer", "name", lab.ifname())
    sh("ip", "-n", a_ns, "addr", "add", "198.18.11.1/24", "dev", down)
    assert local_addresses(netns=a_ns) == ["198.18.10.1"]
    assert local_addresses([a], netns=a_ns) == []


# --- the data path ------------------------------------------------------------------------


def ping(ns: str, addr: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W1", addr], capture_output=True,
                          timeout=WAIT).returncode == 0


@pytest.mark.root
@pytest.mark.skipif(UAPI_UNAVAILABLE is not None, reason=UAPI_UNAVAILABLE or "")
def test_two_namespaces_ping_over_wireguard_go(lab: Lab) -> None:
    ns = {"a": lab.netns(), "b": lab.netns()}
    lab.veth(ns["a"], "198.18.10.1/24", ns["b"], "198.18.10.2/24")
    underlay = {"a": "198.18.10.1", "b": "198.18.10.2"}
    overlay = {"a": ("100.64.0.1", "fd5a:5a::1"), "b": ("100.64.0.2", "fd5a:5a::2")}
    keys = {"a": keypair(), "b": keypair()}
    devices = {}
    try:
        for side in ("a", "b"):
            wg = make_backend("uapi", lab.ifname(), netns=ns[side])
            devices[side] = wg
            wg.ensure_device(keys[side][0], 51820)
            v4, v6 = overlay[side]
            NetConf(wg.ifname, netns=ns[side]).apply((f"{v4}/32", f"{v6}/128"),
                                                     ("100.64.0.0/16", "fd5a:5a::/64"), 1420)
        for side, other in (("a", "b"), ("b", "a")):
            v4, v6 = overlay[other]
            peer = PeerConfig(keys[other][1], endpoint=f"{underlay[other]}:51820",
                              allowed_ips=(f"{v4}/32", f"{v6}/128"))
            devices[side].apply_peers([peer, *make_peers(10, start=300).values()], [])

        wait_until(lambda: ping(ns["a"], overlay["b"][0]), what=f"ping {overlay['b'][0]} from a")
        wait_until(lambda: ping(ns["a"], overlay["b"][1]), what=f"ping {overlay['b'][1]} from a")
        assert ping(ns["b"], overlay["a"][0])
        a, b_key = devices["a"], keys["b"][1]
        before = a.stats()[b_key]
        assert before.latest_handshake is not None and before.rx_bytes > 0
        assert before.endpoint == "198.18.10.2:51820"

        # changing another peer leaves b's session alone
        other = next(p for p in a.peers().values() if p.public_key != b_key)
        a.apply_peers([replace(other, endpoint="198.18.99.9:51820")], [])
        untouched = a.stats()[b_key]
        assert (untouched.latest_handshake, untouched.endpoint) == (before.latest_handshake, before.endpoint)
        assert untouched.rx_bytes >= before.rx_bytes

        # changing b itself (allowed IPs, keepalive) keeps its handshake: no remove + add
        changed = replace(a.peers()[b_key], allowed_ips=("100.64.0.2/32", "100.64.0.22/32", "fd5a:5a::2/128"),
                          keepalive=25)
        a.apply_peers([changed], [])
        after = a.stats()[b_key]
        assert after.latest_handshake == before.latest_handshake, "the changed peer lost its handshake"
        assert after.rx_bytes >= before.rx_bytes
        assert a.peers()[b_key] == changed
        wait_until(lambda: ping(ns["a"], overlay["b"][0]), what="ping after the change")

        # removing b cuts the path
        a.apply_peers([], [b_key])
        assert not ping(ns["a"], overlay["b"][0])
    finally:
        for wg in devices.values():
            wg.delete()
    for side in ("a", "b"):
        assert netns_pids(ns[side]) == [], f"processes left in {ns[side]} after delete()"
