"""The lab harness itself: namespaces, underlay, control plane in a namespace, cleanup."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from skymesh.lab import ControlPlane, Lab, LabError, LabTimeout, cleanup_stale, leftovers, wait_until
from skymesh.lab.names import IFNAMSIZ, WG_RUN_DIR
from skymesh.lab.processes import alive as _alive
from skymesh.lab.processes import descendants

from .conftest import require_dynamodb_local, require_lab

# --- without root -------------------------------------------------------------------


def test_wait_until_names_what_it_waited_for() -> None:
    assert wait_until(lambda: 42, 1, "an answer") == 42
    with pytest.raises(LabTimeout, match=r"waiting for the moon to rise.*\nstate: dark"):
        wait_until(lambda: False, 0.2, "the moon to rise", interval=0.05, details=lambda: "state: dark")


def test_wait_until_quotes_the_last_ignored_error() -> None:
    def boom() -> bool:
        raise ConnectionRefusedError("refused")

    with pytest.raises(LabTimeout, match="last error: ConnectionRefusedError: refused"):
        wait_until(boom, 0.2, "a server", interval=0.05, ignore=(OSError,))
    with pytest.raises(ZeroDivisionError):  # not ignored: propagates at once
        wait_until(lambda: 1 / 0, 5, "nothing")


def test_lab_refuses_addresses_outside_the_underlay_range() -> None:
    with pytest.raises(LabError, match="outside the underlay range"):
        Lab(subnet="10.0.0.0/24")
    with pytest.raises(LabError, match="prefix"):
        Lab(prefix="lab-1")
    Lab(subnet="198.19.7.0/24")  # inside 198.18.0.0/15: fine (nothing created before start)


# --- with root --------------------------------------------------------------------------


@pytest.mark.root
def test_nodes_names_routes_and_cleanup_also_on_interrupt() -> None:
    require_lab(control_plane=False)
    with pytest.raises(KeyboardInterrupt), Lab() as lab:
        prefix = lab.prefix
        a, b = lab.add_node("a"), lab.add_node("bbbbbbb")
        assert all(len(ns) <= IFNAMSIZ for ns in lab.namespaces())
        with pytest.raises(LabError, match="node name"):
            lab.add_node("toolong12")
        assert a.ip.startswith("198.18.") and b.ip.startswith("198.18.")
        assert a.ping(b.ip) and b.ping(a.ip)
        assert not a.ping("192.0.2.1"), "a lab node reached an address outside the lab"
        for ns_node in lab.nodes.values():
            assert ns_node.default_routes() == [], ns_node.routes(4) + ns_node.routes(6)
        # A WireGuard interface (its UAPI socket is machine-wide) and a long-running process.
        ifname = a.wg_ifname()
        assert ifname.startswith(prefix) and len(ifname) <= IFNAMSIZ
        a.run(["wireguard-go", ifname], timeout=10, check=True)
        wait_until(lambda: (WG_RUN_DIR / f"{ifname}.sock").exists(), 10, f"the UAPI socket of {ifname}")
        sleeper = b.popen(["sleep", "600"])
        assert a.pids() and sleeper.pid in b.pids()
        raise KeyboardInterrupt  # as Ctrl-C would
    assert leftovers(prefix) == []
    assert sleeper.poll() is not None


@pytest.mark.root
def test_cleanup_stale_removes_a_crashed_lab_and_spares_live_ones() -> None:
    require_lab(control_plane=False, wireguard=False)
    with Lab() as live, Lab() as crashed:
        live.add_node("x")
        n = crashed.add_node("n")
        n.popen(["sleep", "600"], die_with_parent=False)
        # Pretend its owner died: cleanup_stale() (no prefix) must spare `live` (owner alive)
        # and only an explicit prefix removes a lab whose owner lives.
        assert live.prefix not in cleanup_stale() and live.namespaces()
        assert cleanup_stale(crashed.prefix) == {crashed.prefix: []}
        assert leftovers(crashed.prefix) == []
        assert len(live.namespaces()) == 2


@pytest.mark.root
@pytest.mark.slow
def test_control_plane_in_a_namespace_reachable_over_the_underlay() -> None:
    require_lab(wireguard=False)
    require_dynamodb_local()
    with Lab() as lab:
        prefix = lab.prefix
        cp = ControlPlane(lab.add_node("cp"))
        client = lab.add_node("client")
        cp.start(via=client)
        status, body = client.http("GET", cp.api_url + "/v1/health")
        assert (status, body.get("ok")) == (200, True), body
        assert cp.info["api_url"] == cp.api_url and cp.info["mqtt_endpoint"] == cp.node.ip
        for node in lab.nodes.values():
            assert node.default_routes() == []
        hub_routes = subprocess.run(["ip", "-n", lab.hub, "route", "show", "table", "all"],
                                    capture_output=True, text=True, timeout=10).stdout
        assert "default" not in hub_routes
        children = descendants(cp.proc.pid)  # type: ignore[union-attr]
        assert len(children) >= 5, children  # DynamoDB Local, Mosquitto, API, scheduler, bridge
        # Network from client: the admin key works over the underlay too.
        net = cp.admin.create_network("lab", "100.64.0.0/24")
        assert net["name"] == "lab"
    assert leftovers(prefix) == []
    assert not [c for c in children if _alive(c)]


@pytest.mark.root
@pytest.mark.slow
def test_control_plane_stop_and_start_keeps_its_data() -> None:
    require_lab(wireguard=False)
    require_dynamodb_local()
    with Lab() as lab:
        cp = ControlPlane(lab.add_node("cp"))
        cp.start()
        net = cp.admin.create_network("office", "100.64.0.0/24")
        key_before = cp.info["admin_key"]
        children = descendants(cp.proc.pid)  # type: ignore[union-attr]
        assert cp.stop() == 0, cp.log_tail()
        assert not [c for c in children if _alive(c)], "a child of the stack outlived it"
        assert cp.node.pids() == [], "something still runs in the control plane's namespace"
        with pytest.raises(OSError):
            cp.node.http("GET", cp.api_url + "/v1/health", timeout=2)
        cp.start()
        assert cp.info["admin_key"] == key_before
        assert net["id"] in {n["id"] for n in cp.admin.list_networks()}


@pytest.mark.root
def test_popen_children_get_sigterm_when_the_lab_exits(tmp_path: Path) -> None:
    require_lab(control_plane=False, wireguard=False)
    marker = tmp_path / "got-term"
    script = f"trap 'touch {marker}; exit 0' TERM; while :; do sleep 0.1; done"
    with Lab() as lab:
        n = lab.add_node("n")
        p = n.popen(["sh", "-c", script])
        wait_until(lambda: p.pid in n.pids(), 5, "the shell in the namespace")
    assert marker.exists(), "the lab killed its processes without SIGTERM first"
    assert p.returncode == 0
