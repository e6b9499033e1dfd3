"""Real agents in a gateway group (issue 11): the control plane (``skymesh local up``: API, DynamoDB
Local, Mosquitto, rule bridge) and three member agents (``skymesh-agent run``, wireguard-go), each
in its own lab namespace on the lab bridge, do everything by themselves once an admin made the group:
one makes the key, the others open the copies sealed to them, each keeps it 0600 and nowhere in a
log or an API answer, exactly one becomes active (its floating address on its uplink) and the control
plane records it, and stopping that agent moves the record to another member.

Lab rules: underlay 198.18.0.0/24 (the floating address 198.18.0.200 on it), overlay 100.64.0.0/24,
no route out of the lab, everything removed at the end also on failure, every wait bounded.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agent.gateway import table_name
from agent.groups import group_ifname
from agent.state import StateDir
from skymesh.lab.control_plane import ControlPlane
from skymesh.lab.mesh import LabAgent, diagnose
from skymesh.lab.netns import Lab
from skymesh.lab.wait import wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("wireguard-go") is None or shutil.which("nft") is None
    or not os.path.exists("/dev/net/tun"), reason="needs root, wireguard-go, nft and /dev/net/tun")]

FLOATING_IP, FLOATING_PORT = "198.18.0.200", 51900
WAIT = 60.0  # the first key, interfaces and election on a loaded machine


@dataclass
class GroupLab:
    cp: ControlPlane
    net: dict[str, Any]
    group: dict[str, Any]
    members: dict[str, LabAgent]

    def details(self) -> str:
        return diagnose(self.members.values()) + "\n" + self.cp.log_tail()

    def record(self) -> dict[str, Any]:
        return self.cp.admin.get_group(self.net["id"], self.group["id"])

    def holding(self, agent: LabAgent) -> bool:
        """The member keeps the group's current key, and its group interface is up."""
        key = StateDir(agent.state_dir).load_group_key(self.group["id"])
        rec = self.record()
        ifname = group_ifname(self.group["id"], agent.interface)
        return key is not None and (key.version, key.public_key) == (rec["key_version"], rec["public_key"]) \
            and agent.node.run(["ip", "link", "show", ifname], timeout=10).returncode == 0

    def floating_on(self) -> list[str]:
        """The members whose uplink carries the floating address now."""
        return [name for name, a in self.members.items() if a.running and FLOATING_IP in
                a.node.run(["ip", "-o", "addr", "show"], timeout=10).stdout]


@pytest.fixture
def group_lab() -> Iterator[GroupLab]:
    with Lab() as lab:
        cp = ControlPlane(lab.add_node("cp"))
        cp.start()
        members = {f"g{i}": LabAgent(lab.add_node(f"g{i}"), run_args=("--probe-interval", "0.3"))
                   for i in (1, 2, 3)}
        try:
            net = cp.admin.create_network("groups", "100.64.0.0/24")
            key = cp.admin.create_enrollment_key([net["id"]], uses=3)
            for agent in members.values():
                agent.join(cp.api_url, key["token"])
                assert agent.host_id
                cp.admin.put_gateway(net["id"], agent.host_id, {"remote_access": True})
                agent.start()
            group = cp.admin.create_group(net["id"], {
                "name": "edge", "members": [members[n].host_id for n in ("g1", "g2", "g3")],
                "floating_endpoint": f"{FLOATING_IP}:{FLOATING_PORT}"})
            yield GroupLab(cp, net, group, members)
        finally:  # the lab kills what is left in its namespaces (wireguard-go of every interface)
            for agent in members.values():
                if agent.running:
                    agent.stop()
            cp.stop(check=False)


def _spellings(private_key: str) -> list[str]:
    raw = base64.b64decode(private_key)
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return [private_key, private_key.rstrip("="), urlsafe, raw.hex()]


def test_three_member_agents_share_the_key_elect_one_active_and_move_it_when_that_agent_stops(
        group_lab: GroupLab) -> None:
    lab = group_lab
    gid = lab.group["id"]
    wait_until(lambda: all(lab.holding(a) for a in lab.members.values()), WAIT,
               "every member to hold the group's key", details=lab.details)
    rec = lab.record()
    assert rec["key_version"] == 1 and sorted(rec["key"]["current"]) == sorted(
        a.host_id for a in lab.members.values())
    keys = {name: StateDir(a.state_dir).load_group_key(gid) for name, a in lab.members.items()}
    private = {k.private_key for k in keys.values() if k is not None}
    assert len(private) == 1, "one key, made once, opened by the others"
    (secret,) = private
    for a in lab.members.values():
        path = a.state_dir / f"group-{gid}.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    made = [name for name, a in lab.members.items() if "made key version 1" in a.log_tail(400)]
    opened = [name for name, a in lab.members.items() if "opened key version 1" in a.log_tail(400)]
    assert len(made) == 1 and sorted(made + opened) == ["g1", "g2", "g3"], lab.details()

    def one_active() -> str | None:
        rec = lab.record()
        on = lab.floating_on()
        return rec["active"] if rec["active"] and len(on) == 1 and \
            lab.members[on[0]].host_id == rec["active"] else None

    first = wait_until(one_active, WAIT, "exactly one active member, recorded by the control plane",
                       details=lab.details)
    by_id = {a.host_id: name for name, a in lab.members.items()}
    assert lab.floating_on() == [by_id[first]]

    def forwarded(name: str) -> bool:
        """Whether member ``name``'s nftables table forwards its group interface."""
        a = lab.members[name]
        out = a.node.run(["nft", "list", "table", "inet", table_name(a.interface)], timeout=10).stdout
        return f'iifname "{group_ifname(gid, a.interface)}"' in out

    # every member forwards its group interface before it may take over (a standby's carries nothing):
    # a new active member masquerades the clients' first packets to its LAN (conntrack keeps a flow as
    # it saw it first)
    wait_until(lambda: all(forwarded(n) for n in lab.members), 10.0,
               "every member to forward its group interface", details=lab.details)

    # nothing the control plane stores or answers, and no log line, holds the private key
    answers = repr([lab.cp.admin.list_groups(lab.net["id"]), lab.record()])
    logs = "\n".join(a.log_tail(100000) for a in lab.members.values()) + lab.cp.log_tail(100000)
    for spelling in _spellings(secret):
        assert spelling not in answers and spelling not in logs

    stopped_at = time.monotonic()
    lab.members[by_id[first]].stop()  # a clean stop withdraws: its floating address goes at once
    assert by_id[first] not in lab.floating_on()
    def moved() -> str | None:
        now = one_active()
        return now if now != first else None

    second = wait_until(moved, WAIT, "another member to become active and be recorded", details=lab.details)
    # what it took (-s shows it): the stop, the election among the two left, the record
    print(f"\nactive {by_id[first]} stopped; {by_id[second]} active and recorded after "
          f"{time.monotonic() - stopped_at:.2f} s")
    assert second != first and lab.record()["epoch"] > rec["epoch"]
