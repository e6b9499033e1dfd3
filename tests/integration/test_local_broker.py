"""Mosquitto + LocalCaIdentity enforce what the AWS IoT policy enforces (real broker, real TLS)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from chalicelib.adapters.local_identity import LocalCaIdentity
from chalicelib.adapters.mqtt_publisher import MqttPublisher
from chalicelib.errors import UnavailableError
from skymesh.local.broker import MosquittoBroker, choose_run_as

from .conftest import ConnectRefused, enroll_host

NET_A, NET_B = "net_aaaa", "net_bbbb"


@pytest.fixture
def control(identity, mqtt_connect):
    return mqtt_connect(identity.issue_control_client("test"))


def test_host_reads_its_networks_only(identity, tmp_path, mqtt_connect, control):
    creds = enroll_host(identity, "host_a", tmp_path)
    identity.set_networks("host_a", [NET_A])
    host = mqtt_connect(creds)
    host.subscribe(f"sm/n/{NET_A}", f"sm/n/{NET_B}")  # the forbidden one is granted, not served

    control.publish(f"sm/n/{NET_B}", b"secret")
    control.publish(f"sm/n/{NET_A}", b"marker")

    assert host.expect(f"sm/n/{NET_A}", b"marker") == []
    host.barrier()
    assert host.drain() == []


def test_host_cannot_read_other_inbox_nor_write_other_status(identity, tmp_path, mqtt_connect,
                                                             control):
    a = mqtt_connect(enroll_host(identity, "host_a", tmp_path))
    b_creds = enroll_host(identity, "host_b", tmp_path)
    b = mqtt_connect(b_creds)
    a.subscribe("sm/h/host_a/in", "sm/h/host_b/in", "sm/h/+/in")
    b.subscribe("sm/h/host_b/in")
    control.subscribe("sm/h/+/status")

    control.publish("sm/h/host_b/in", b"for b")
    control.publish("sm/h/host_a/in", b"for a")
    assert a.expect("sm/h/host_a/in", b"for a") == []
    assert b.expect("sm/h/host_b/in", b"for b") == []
    a.barrier()  # overlapping filters may deliver "for a" twice, but nothing else
    assert set(a.drain()) <= {("sm/h/host_a/in", b"for a")}

    forged = a.publish("sm/h/host_b/status", b"forged")
    a.publish("sm/h/host_a/status", b"genuine")
    assert forged.is_failure  # MQTT 5: PUBACK "Not authorized"
    assert control.expect("sm/h/host_a/status", b"genuine") == []
    control.barrier()
    assert control.drain() == []
    # nor may a host publish to a network or to $aws topics
    assert a.publish(f"sm/n/{NET_A}", b"x").is_failure
    assert a.publish("$aws/things/host_a/shadow/update", b"x").is_failure


def test_revoked_certificate_is_refused_and_open_connection_goes_deaf(
    identity, tmp_path, mqtt_connect, control
):
    creds = enroll_host(identity, "host_a", tmp_path)
    other = enroll_host(identity, "host_b", tmp_path)
    identity.set_networks("host_a", [NET_A])
    identity.set_networks("host_b", [NET_A])
    live = mqtt_connect(creds)
    live.subscribe("sm/h/host_a/in", f"sm/n/{NET_A}")
    control.publish("sm/h/host_a/in", b"before")
    assert live.expect("sm/h/host_a/in", b"before") == []

    identity.revoke("host_a", creds.certificate_id)
    # Mosquitto applies the SIGHUP (ACL and CRL together) on its next loop turn.
    wait_for_acl_reload(control, live, "sm/h/host_a/in")

    # The connection opened before the revocation stays up but gets and sends nothing.
    control.publish(f"sm/n/{NET_A}", b"after")
    control.publish("sm/h/host_a/in", b"after")
    assert live.publish("sm/h/host_a/status", b"x").is_failure
    live.barrier()
    assert live.drain() == []
    # New connections with the revoked certificate fail the TLS handshake (CRL re-read).
    with pytest.raises(ConnectRefused):
        mqtt_connect(creds)
    mqtt_connect(other)  # other certificates of the same CA still connect


def test_removed_network_stops_delivery(identity, tmp_path, mqtt_connect, control):
    identity.set_networks("host_a", [NET_A, NET_B])
    host = mqtt_connect(enroll_host(identity, "host_a", tmp_path))
    host.subscribe(f"sm/n/{NET_A}", f"sm/n/{NET_B}")
    control.publish(f"sm/n/{NET_B}", b"b1")
    assert host.expect(f"sm/n/{NET_B}", b"b1") == []

    identity.set_networks("host_a", [NET_A])
    wait_for_acl_reload(control, host, f"sm/n/{NET_B}")
    control.publish(f"sm/n/{NET_B}", b"b2")
    control.publish(f"sm/n/{NET_A}", b"marker")
    assert host.expect(f"sm/n/{NET_A}", b"marker") == []
    host.barrier()
    assert host.drain() == []


def wait_for_acl_reload(control, host, topic: str, timeout: float = 5.0) -> None:
    """Mosquitto applies a SIGHUP asynchronously: probe ``topic`` until the host no
    longer receives it (bounded), swallowing the probes that still got through."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        control.publish(topic, f"probe-{n}".encode())
        host.barrier()
        if all(not p.startswith(b"probe-") for _t, p in host.drain()):
            return
    raise AssertionError(f"ACL change for {topic} not effective after {timeout}s")


def test_publisher_delivers_and_fails_fast_when_broker_down(identity, tmp_path, mqtt_connect,
                                                             broker: MosquittoBroker):
    host = mqtt_connect(enroll_host(identity, "host_a", tmp_path))
    host.subscribe("sm/h/host_a/in")
    creds = identity.issue_control_client("publisher")
    pub = MqttPublisher(broker.connect_host, broker.port, creds.ca_path, creds.cert_path,
                        creds.key_path, timeout=5.0)
    try:
        pub.publish("sm/h/host_a/in", b"hello")
        assert host.expect("sm/h/host_a/in", b"hello") == []
        # many threads share the one connection
        threads = [threading.Thread(target=pub.publish, args=("sm/h/host_a/in", b"%d" % i))
                   for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        got = {host.messages.get(timeout=5)[1] for _ in range(20)}
        assert got == {b"%d" % i for i in range(20)}

        broker.stop()
        started = time.monotonic()
        with pytest.raises(UnavailableError):
            pub.publish("sm/h/host_a/in", b"lost")
        assert time.monotonic() - started < 2.0  # refused at once, not the 5 s timeout

        broker.start()  # same port, same files: the next publish reconnects
        host2 = mqtt_connect(enroll_host(identity, "host_c", tmp_path))
        host2.subscribe("sm/h/host_c/in")
        pub.publish("sm/h/host_c/in", b"again")
        assert host2.expect("sm/h/host_c/in", b"again") == []
    finally:
        pub.close()


def test_publisher_unreachable_port_is_quick(identity, broker: MosquittoBroker):
    creds = identity.issue_control_client("publisher")
    from skymesh.local.proc import free_port

    pub = MqttPublisher("127.0.0.1", free_port(), creds.ca_path, creds.cert_path,
                        creds.key_path, timeout=5.0)
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="unreachable"):
        pub.publish("sm/x", b"x")
    assert time.monotonic() - started < 2.0


def test_concurrent_set_networks_threads(identity: LocalCaIdentity, broker: MosquittoBroker):
    n = 200
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def work(i: int) -> None:
        try:
            start.wait(10)
            identity.set_networks(f"host_{i:04d}", [f"net_{i:04d}", NET_A])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert_acl_complete(broker.dir / "acl", range(n))
    assert broker.alive()


def _set_networks_in_child(home: str, port: int, lo: int, hi: int) -> None:
    ident = LocalCaIdentity(Path(home), "127.0.0.1", port)
    for i in range(lo, hi):
        ident.set_networks(f"host_{i:04d}", [f"net_{i:04d}", NET_A])  # type: ignore[arg-type]


def test_concurrent_set_networks_processes(broker: MosquittoBroker):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_set_networks_in_child,
                         args=(str(broker.home), broker.port, k * 25, (k + 1) * 25))
             for k in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    assert_acl_complete(broker.dir / "acl", range(200))
    assert broker.alive()


def assert_acl_complete(acl: Path, ids: range) -> None:
    text = acl.read_text()
    for i in ids:
        reads = "".join(f"topic read sm/n/{n}\n" for n in sorted([NET_A, f"net_{i:04d}"]))
        assert f"user host_{i:04d}\n{reads}" in text
    assert text.count("\nuser host_") == len(ids)


def test_choose_run_as(tmp_path):
    import os
    import pwd
    import shutil
    import tempfile

    assert choose_run_as([tmp_path], euid=1000).user is None  # not root: no privilege drop
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto user here")
    base = Path(tempfile.mkdtemp(prefix="skymesh-runas-"))  # under /tmp, searchable by all
    try:
        os.chmod(base, 0o755)
        for name, mode in (("open", 0o755), ("closed", 0o700)):
            (base / name / "broker").mkdir(parents=True)
            os.chmod(base / name, mode)
        ok = choose_run_as([base / "open" / "broker"], euid=0)
        stuck = choose_run_as([base / "closed" / "broker"], euid=0)
    finally:
        shutil.rmtree(base)
    assert ok.user == "mosquitto" and ok.uid is not None and ok.warning is None
    assert stuck.user == "root" and stuck.warning and "cannot reach" in stuck.warning


def test_a_host_cannot_take_over_another_hosts_session(identity, tmp_path, mqtt_connect, control):
    """A host that connects with another host's client id does not displace that host.

    IoT Core refuses such a CONNECT (its policy allows only the thing's own client id);
    Mosquitto cannot refuse it, so ``use_username_as_clientid`` replaces the id by the
    certificate's CN: the connection is accepted as the connecting host's own (README,
    "Local mode"). Without that line this host would take host_b's session over.
    """
    b = mqtt_connect(enroll_host(identity, "host_b", tmp_path), client_id="host_b")
    b.subscribe("sm/h/host_b/in")
    a = mqtt_connect(enroll_host(identity, "host_a", tmp_path), client_id="host_b")
    a.subscribe("sm/h/host_b/in", "sm/h/host_a/in")

    control.publish("sm/h/host_b/in", b"for b")
    assert b.expect("sm/h/host_b/in", b"for b") == []
    b.barrier()  # b's connection still answers
    assert not b.disconnected.is_set()
    control.publish("sm/h/host_a/in", b"for a")
    assert a.expect("sm/h/host_a/in", b"for a") == []  # a is itself, and reads only its own inbox


@pytest.mark.root
@pytest.mark.parametrize("through_symlink", [False, True], ids=["under-0700-dir", "symlink-into-0700-dir"])
def test_a_home_under_a_0700_directory_works_and_says_how_to_drop_privileges(through_symlink):
    """As root, with --home under a directory user mosquitto cannot search (such as /root),
    the broker starts and serves mTLS, and the warning names that directory and the fix.
    Through a symlink the mode bits of the link's parents said "reachable": Mosquitto
    dropped privileges, could not open its files, and the stack did not start."""
    import os
    import pwd
    import shutil
    import tempfile

    from skymesh.local.proc import free_port

    if os.geteuid() != 0:
        pytest.skip("needs root (Mosquitto drops privileges only when started as root)")
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto user here")
    base = Path(tempfile.mkdtemp(prefix="skymesh-closed-"))
    os.chmod(base, 0o755)
    closed = base / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(closed, 0o700)
    home = closed / "home"
    if through_symlink:
        home.mkdir()
        (base / "link").symlink_to(home)
        home = base / "link"
    broker = MosquittoBroker(home, "127.0.0.1", free_port())
    try:
        broker.start()  # returns once a real mutual-TLS client is accepted
        assert broker.run_as is not None and broker.run_as.user == "root"
        assert f"{closed} is not searchable" in (broker.run_as.warning or "")
        assert f"chmod o+x {closed}" in (broker.run_as.warning or "")
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
