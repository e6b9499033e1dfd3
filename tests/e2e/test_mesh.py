"""The host agent end to end: real agents (``python -m agent``, wireguard-go over UAPI) in
network namespaces against the local control plane in another namespace.

The steps build on each other and run in order on one lab (starting the control plane
costs seconds): a step whose predecessors did not pass is skipped with that reason, so
run the whole module (``pytest tests/e2e/test_mesh.py``). Failures carry every agent's
``status --json``, ``wg show`` and log tail, and the control plane's logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.runner import EXIT_HOST_DELETED
from skymesh.lab import ControlPlane, Lab, wait_until
from skymesh.lab.mesh import LabAgent, diagnose, plain

from .conftest import lab_with_control_plane

pytestmark = [pytest.mark.root, pytest.mark.slow]

CONVERGE = 45.0  # seconds for a change to reach running agents (broadcast or resync)
RECONNECT = 90.0  # after a broker outage: the MQTT client's backoff grows up to 30 s (jittered)
NETWORK_V4 = "100.64.0.0/24"


@dataclass
class Mesh:
    lab: Lab
    cp: ControlPlane
    network: dict[str, Any]
    token: str
    agents: dict[str, LabAgent] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    done: set[int] = field(default_factory=set)

    def need(self, *steps: int) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"needs step(s) {missing} of this module, which did not pass (or did not run)")

    def live(self) -> list[LabAgent]:
        return [a for n, a in self.agents.items() if n not in self.removed]

    def add(self, name: str, start: bool = True) -> LabAgent:
        agent = LabAgent(self.lab.add_node(name))
        self.agents[name] = agent
        agent.join(self.cp.api_url, self.token)
        if start:
            agent.start()
        return agent

    def addresses(self, agent: LabAgent) -> list[str]:
        """The overlay addresses the API assigned (IPv4 and IPv6), from ``GET /v1/hosts/{id}``."""
        assert agent.host_id
        return self._addresses[agent.host_id]

    def remember_addresses(self) -> None:
        for a in self.agents.values():
            if a.host_id and a.host_id not in self._addresses:
                addrs = self.cp.admin.host_addresses(a.host_id)
                self._addresses[a.host_id] = [plain(x[k]) for x in addrs for k in ("ipv4", "ipv6")]

    def details(self, *names: str) -> str:
        agents = [self.agents[n] for n in names] if names else list(self.agents.values())
        text = diagnose(agents)
        if self.cp.out is not None:
            text += "\n===== control plane\n" + self.cp.log_tail(15)
        return text

    def __post_init__(self) -> None:
        self._addresses: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with lab_with_control_plane() as (lab, cp):
        net = cp.admin.create_network("e2e", NETWORK_V4)  # IPv6: a random ULA /64
        key = cp.admin.create_enrollment_key([net["id"]], uses=20)
        yield Mesh(lab, cp, net, key["token"])


# --- helpers -------------------------------------------------------------------------------


def converge(mesh: Mesh, agents: list[LabAgent], expected: dict[str, set[str]], timeout: float,
             what: str) -> None:
    """Wait until each agent's ``status --json`` lists exactly ``expected[name]`` as peers."""
    def ok() -> bool:
        return all(a.peer_ids() == expected[a.name] for a in agents)

    wait_until(ok, timeout, what, interval=0.5, details=mesh.details)


def full_mesh_peers(agents: list[LabAgent]) -> dict[str, set[str]]:
    return {a.name: {b.host_id for b in agents if b is not a} for a in agents}  # type: ignore[misc]


def reach(mesh: Mesh, src: LabAgent, dst: LabAgent, timeout: float = 20.0) -> None:
    """Bounded wait until ``src`` pings every overlay address (IPv4 and IPv6) of ``dst``."""
    for addr in mesh.addresses(dst):
        wait_until(lambda a=addr: src.node.ping(a, wait=1), timeout,
                   f"{src.name} to ping {dst.name} at {addr} over the overlay",
                   interval=0.2, details=lambda: mesh.details(src.name, dst.name))


def reach_all(mesh: Mesh, agents: list[LabAgent], timeout: float = 20.0) -> None:
    for s in agents:
        for d in agents:
            if s is not d:
                reach(mesh, s, d, timeout)


def unreachable(mesh: Mesh, src: LabAgent, dst: LabAgent) -> list[str]:
    """The addresses of ``dst`` that ``src`` can still ping (2 pings each)."""
    return [addr for addr in mesh.addresses(dst) if src.node.ping(addr, count=2, wait=1)]


# --- the scenario, in order --------------------------------------------------------------


def test_1_three_hosts_join_and_every_pair_pings_over_ipv4_and_ipv6(mesh: Mesh) -> None:
    agents = [mesh.add(n) for n in ("a", "b", "c")]
    mesh.remember_addresses()
    for a in agents:
        addrs = mesh.addresses(a)
        assert len(addrs) == 2 and ":" in addrs[1] and addrs[0].startswith("100.64."), addrs
        st = a.status()
        assert (st["host_id"], st["interface"], st["backend"]) == (a.host_id, a.interface, "uapi"), st
        assert sorted(a.addresses(st)) == sorted(addrs), (st, addrs)
    converge(mesh, agents, full_mesh_peers(agents), CONVERGE, "a, b and c to list each other as peers")
    reach_all(mesh, agents)
    mesh.done.add(1)


def test_2_a_fourth_host_is_reached_without_restarting_the_others(mesh: Mesh) -> None:
    mesh.need(1)
    before = {n: a.proc.pid for n, a in mesh.agents.items() if a.proc}  # type: ignore[union-attr]
    d = mesh.add("d")
    mesh.remember_addresses()
    agents = mesh.live()
    converge(mesh, agents, full_mesh_peers(agents), CONVERGE, "a, b, c to add d (and d to list them)")
    for name in ("a", "b", "c"):
        reach(mesh, mesh.agents[name], d)
        reach(mesh, d, mesh.agents[name])
    for name, pid in before.items():
        a = mesh.agents[name]
        assert a.running and a.proc.pid == pid, f"the agent of {name} was restarted\n{mesh.details(name)}"  # type: ignore[union-attr]
    mesh.done.add(2)


def test_3_a_deleted_host_is_dropped_and_cut_off(mesh: Mesh) -> None:
    mesh.need(2)
    c = mesh.agents["c"]
    assert c.host_id
    mesh.cp.admin.delete_host(c.host_id)
    mesh.removed.add("c")
    others = mesh.live()
    converge(mesh, others, full_mesh_peers(others), CONVERGE, "a, b and d to drop the deleted host c")
    for other in others:  # once they dropped it, its tunnel to them is dead
        still = unreachable(mesh, c, other)
        assert not still, f"deleted host c still reaches {other.name} at {still}\n{mesh.details()}"
    reach_all(mesh, others)  # and the rest of the mesh is unaffected
    mesh.done.add(3)


def test_3b_a_deleted_host_stops_its_agent_and_can_still_leave_cleanly(mesh: Mesh) -> None:
    mesh.need(3)
    c = mesh.agents["c"]
    # The deletion told c's agent on its inbox to resync (its open MQTT connection goes deaf
    # once the ACL is gone, so it would not hear anything later). /config answers 401, and the
    # agent stops by itself, once, with the status systemd does not restart.
    wait_until(lambda: not c.running, CONVERGE, "c's agent to stop: its host was deleted",
               interval=0.5, details=lambda: mesh.details("c"))
    assert c.stop() == EXIT_HOST_DELETED, mesh.details("c")
    assert c.log_tail(400).count("this host was deleted from the control plane") == 1, mesh.details("c")
    # Started again (a reboot), it stops the same way instead of retrying every minute.
    c.start()
    wait_until(lambda: not c.running, CONVERGE, "c's agent to stop again after a restart",
               interval=0.5, details=lambda: mesh.details("c"))
    assert c.stop() == EXIT_HOST_DELETED, mesh.details("c")
    assert c.peer_ids() == set(), mesh.details("c")
    st = c.status()
    assert st["agent"]["host_deleted"] and not st["agent"]["running"], st
    res = c.leave()
    assert res.returncode == 0, f"`leave` of a host the admin deleted:\n{res.stdout}{res.stderr}"
    assert not c.has_interface(), f"`leave` kept {c.interface}\n{mesh.details('c')}"


def test_4_tunnels_survive_a_control_plane_outage_and_a_reboot(mesh: Mesh) -> None:
    mesh.need(3)
    agents = mesh.live()  # a, b, d
    assert mesh.cp.stop() == 0, mesh.cp.log_tail()  # raises if the API, DynamoDB Local or broker outlives it
    assert mesh.cp.node.pids() == [], "something of the control plane still runs"
    reach_all(mesh, agents, timeout=10)

    a = mesh.agents["a"]
    assert a.stop() == 0, mesh.details("a")
    assert a.has_interface(), f"stopping the agent removed {a.interface}\n{mesh.details('a')}"
    reach(mesh, a, mesh.agents["b"], timeout=10)  # the tunnel stays up without its agent
    a.delete_interface()  # as a reboot would
    assert not a.has_interface()
    a.start()
    for other in agents:
        if other is not a:
            reach(mesh, a, other, timeout=CONVERGE)
            reach(mesh, other, a, timeout=CONVERGE)
    assert not mesh.cp.running, "the control plane came back by itself?"
    for ag in agents:
        assert ag.running, f"{ag.name}'s agent exited during the outage\n{mesh.details(ag.name)}"
    mesh.done.add(4)


def test_5_changes_made_while_an_agent_was_away_arrive_by_resync(mesh: Mesh) -> None:
    mesh.need(4)
    mesh.cp.start()
    a = mesh.agents["a"]
    assert a.stop() == 0, mesh.details("a")
    e = mesh.add("e")  # joins while a is not running: a misses the broadcast
    mesh.remember_addresses()
    a.start()
    reach(mesh, a, e, timeout=CONVERGE)
    reach(mesh, e, a, timeout=CONVERGE)
    agents = mesh.live()
    # The agents that stayed up through the outage must have reconnected and learnt of e too.
    converge(mesh, agents, full_mesh_peers(agents), RECONNECT,
             "every live agent (after the broker came back) to list e, and e to list them")
    for other in agents:
        if other is not e:
            reach(mesh, other, e)
    mesh.done.add(5)


def test_6_leave_while_run_is_active_leaves_no_interface_and_no_running_agent(mesh: Mesh) -> None:
    mesh.need(1)
    b = mesh.agents["b"]
    assert b.running, mesh.details("b")
    pid = b.proc.pid  # type: ignore[union-attr]
    res = b.leave()
    assert res.returncode == 0, f"`leave` while `run` is active:\n{res.stdout}{res.stderr}"
    # `leave` returned only after the agent let go of its state directory: nothing is left to
    # "repair" the interface it removed. The agent either got leave's SIGTERM (0) or, told on
    # its inbox that its host was deleted, had already stopped by itself.
    stopped_by_leave = f"stopping the running agent (pid {pid}" in res.stdout
    code = b.proc.wait(timeout=5)  # type: ignore[union-attr]
    assert code == (0 if stopped_by_leave else EXIT_HOST_DELETED), f"{res.stdout}\n{mesh.details('b')}"
    assert not b.has_interface(), f"`leave` kept {b.interface}\n{mesh.details('b')}"
    mesh.removed.add("b")
    others = mesh.live()
    converge(mesh, others, full_mesh_peers(others), CONVERGE, "the others to drop b, which left")
    assert not b.has_interface(), f"{b.interface} came back\n{mesh.details('b')}"
