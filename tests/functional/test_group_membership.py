"""A member's part in its gateway groups (:mod:`agent.groups`) against the real control plane.

The API is the app on DynamoDB Local, called through the agent's own :class:`agent.api.ApiClient`
(only its transport is routed into the app); each member's view is the Tracker of its own
``/config``. The data plane and the election loop (root, real sockets: tests/integration and
tests/e2e run them) are recording fakes under the same protocols.
"""

from __future__ import annotations

import base64
import logging
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.api import ApiClient, ApiError, Unreachable
from agent.converge import Tracker
from agent.election_loop import GroupConfig, GroupStatus, Hooks
from agent.groups import GroupMembership, group_ifname
from agent.state import StateDir
from chalicelib.domain import protocol

from .conftest import Api
from .test_groups import FLOATING, _create, _groups, hosts, net  # noqa: F401 (fixtures)


class RoutedApi(ApiClient):
    """The agent's API client with its transport routed into the app under test."""

    def __init__(self, api: Api, token: str) -> None:
        super().__init__("http://control-plane.test", token)
        self._app = api
        self.calls: list[tuple[str, str]] = []
        self.answers: list[Any] = []

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None,
              timeout: float | None = None) -> dict[str, Any] | None:
        self.calls.append((method, path))
        code, out = self._app.call(method, path, body, token=token or self._token)
        self.answers.append(out)
        if code >= 400:
            raise ApiError(code, out["error"]["code"], out["error"]["message"])
        return out


@dataclass
class FakePlane:
    ifname: str
    ensured: list[tuple[str, dict[str, tuple[str, ...]], int, str]] = field(default_factory=list)
    is_active: bool = False
    closed: bool = False

    def ensure(self, group_private_key: str, clients: Mapping[str, Iterable[str]], listen_port: int,
               floating_ip: str) -> None:
        self.ensured.append((group_private_key, {k: tuple(v) for k, v in clients.items()}, listen_port,
                             floating_ip))

    def activate(self) -> None:
        self.is_active = True

    def deactivate(self) -> None:
        self.is_active = False

    def close(self) -> None:
        self.is_active, self.closed = False, True

    def client_endpoints(self) -> dict[str, str]:
        return {}

    def learn_endpoints(self, endpoints: Mapping[str, str]) -> None:
        pass


@dataclass
class FakeElection:
    groups: dict[str, tuple[GroupConfig, Hooks]] = field(default_factory=dict)
    records: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    started: int = 0
    stopped: int = 0

    def start(self) -> None:
        self.started += 1

    def stop(self, timeout: float = 2.0, *, withdraw: bool = True) -> None:
        self.stopped += 1
        for _, hooks in self.groups.values():
            hooks.on_standby()

    def set_group(self, config: GroupConfig, hooks: Hooks) -> None:
        self.groups[config.group_id] = (config, hooks)

    def remove_group(self, group_id: str) -> None:
        self.removed.append(group_id)
        if (found := self.groups.pop(group_id, None)) is not None:
            found[1].on_standby()

    def set_record(self, group_id: str, active: str | None, epoch: int) -> None:
        self.records[group_id] = (active, epoch)

    def status(self) -> tuple[GroupStatus, ...]:
        return tuple(GroupStatus(gid, "standby", 0, ()) for gid in sorted(self.groups))


@dataclass
class Member:
    name: str
    host_id: str
    api: RoutedApi
    dir: StateDir
    tracker: Tracker
    groups: GroupMembership
    planes: dict[str, FakePlane]
    election: FakeElection
    roles: list[int]

    def sync(self) -> None:
        """What the runner does after a resync: take the full config, then converge the groups."""
        self.tracker.replace(self.api.config(self.host_id).snapshots)
        self.groups.sync(self.tracker)


@pytest.fixture
def agents(api: Api, hosts: dict[str, Any], tmp_path: Any) -> dict[str, Member]:  # noqa: F811
    out = {}
    for name, h in hosts.items():
        sd = StateDir(tmp_path / name)
        sd.create()
        planes: dict[str, FakePlane] = {}
        election = FakeElection()
        roles: list[int] = []

        def plane(ifname: str, planes: dict[str, FakePlane] = planes) -> FakePlane:
            planes[ifname] = FakePlane(ifname)
            return planes[ifname]

        routed = RoutedApi(api, h["token"])
        membership = GroupMembership(sd, h["id"], h["pair"].private_key, routed, planes=plane,
                                     election=lambda e=election: e,  # type: ignore[misc]
                                     on_role=lambda r=roles: r.append(1))
        out[name] = Member(name, h["id"], routed, sd, Tracker(h["id"]), membership, planes, election, roles)
    return out


def _spellings(private_key: str) -> list[str]:
    raw = base64.b64decode(private_key)
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return [private_key, private_key.rstrip("="), urlsafe, raw.hex()]


def test_one_member_makes_the_key_the_others_open_their_copies_and_each_serves_only_once_it_holds_it(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], agents: dict[str, Member],  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    group = _create(api, net, hosts)
    gid, ifname = group["id"], group_ifname(group["id"])
    g1, g2, g3 = agents["g1"], agents["g2"], agents["g3"]

    g2.sync()  # not the member asked to make the key: waits, serves nothing
    assert g2.groups.held(gid) is None and g2.planes == {} and g2.election.groups == {}
    assert g2.groups.next_due() is not None, "it reads the key again soon"

    g1.sync()  # the first by priority makes version 1, seals it to every member, keeps it
    made = g1.groups.held(gid)
    assert made is not None and made.version == 1
    shown = api.ok("GET", f"{_groups(net)}/{gid}")
    assert (shown["public_key"], shown["key_version"]) == (made.public_key, 1)
    assert shown["key"]["current"] == sorted(h["id"] for n, h in hosts.items() if n != "a")

    assert g1.planes == {}, "it serves once the group's record names its key (the broadcast)"
    for m in (g1, g2, g3):
        m.sync()  # the broadcast of the new key: each opens its own copy
    for m in (g1, g2, g3):
        held = m.groups.held(gid)
        assert held is not None and (held.public_key, held.private_key) == (made.public_key, made.private_key)
        path = m.dir.path / f"group-{gid}.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        plane = m.planes[ifname]
        assert plane.ensured[-1] == (made.private_key, {}, 51900, FLOATING.rpartition(":")[0])
        config, _ = m.election.groups[gid]
        assert config.members == tuple(hosts[n]["id"] for n in ("g1", "g2", "g3"))
        overlay = {h: mm.ipv4 for h, mm in m.tracker.records(net["id"]).members.items()}
        assert config.peers == {hosts[n]["id"]: (overlay[hosts[n]["id"]], 51829) for n in ("g1", "g2", "g3")
                                if hosts[n]["id"] != m.host_id}
        assert (config.key_version, config.me) == (1, m.host_id)
        assert m.election.records[gid] == (None, 0) and m.election.started == 1
        assert m.groups.reports() == (protocol.GroupReport(gid, "standby", 0, ()),)
    assert agents["a"].groups.held(gid) is None

    # a client of the group becomes a peer of every member's group interface, with its addresses
    client = api.ok("POST", f"/v1/networks/{net['id']}/clients", {"name": "phone", "gateway": gid})["client"]
    g2.sync()
    assert g2.planes[ifname].ensured[-1][1] == {
        client["public_key"]: (f"{client['ipv4']}/32", f"{client['ipv6']}/128")}

    # the hooks drive the data plane and tell the runner; active interfaces are what it forwards
    _, hooks = g2.election.groups[gid]
    hooks.on_active()
    assert g2.groups.active_interfaces() == (ifname,) and g2.roles == [1]
    g2.groups.stop()  # a clean stop withdraws
    assert g2.groups.active_interfaces() == () and g2.election.stopped == 1

    # the private key is in no answer the API gave and no log line
    answers = repr([m.api.answers for m in agents.values()]) + repr(api.ok("GET", _groups(net)))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for spelling in _spellings(made.private_key):
        assert spelling not in answers and spelling not in logged


def test_a_copy_from_a_host_that_is_not_a_member_is_refused(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], agents: dict[str, Member],  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    group = _create(api, net, hosts)
    gid = group["id"]
    agents["g1"].sync()
    g2 = agents["g2"]
    real = g2.api.group_key

    def forged(network_id: str, group_id: str, timeout: float = 5.0) -> dict[str, Any]:
        out = real(network_id, group_id)
        for entry in out["record"]["entries"]:
            entry["sender"] = hosts["a"]["id"]  # as a control plane that slipped a copy in would
        return out

    g2.api.group_key = forged  # type: ignore[method-assign]
    g2.sync()
    assert g2.groups.held(gid) is None and g2.planes == {}
    assert not (g2.dir.path / f"group-{gid}.key").exists()
    assert any("refusing the copy" in r.getMessage() and hosts["a"]["id"] in r.getMessage()
               for r in caplog.records)


def test_leaving_the_group_or_its_deletion_removes_the_interface_the_election_and_the_key(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], agents: dict[str, Member]) -> None:  # noqa: F811
    group = _create(api, net, hosts)
    gid, ifname = group["id"], group_ifname(group["id"])
    for name in ("g1", "g2", "g3", "g1"):  # g1 makes the key, then serves once it hears of it
        agents[name].sync()
    g3 = agents["g3"]
    g3.election.groups[gid][1].on_active()
    assert g3.planes[ifname].is_active

    removed = api.ok("DELETE", f"{_groups(net)}/{gid}/members/{hosts['g3']['id']}", status=200)
    assert removed["still_knows_key"] is True
    g3.sync()
    assert g3.election.removed == [gid] and g3.planes[ifname].closed and not g3.planes[ifname].is_active
    assert g3.groups.held(gid) is None and not (g3.dir.path / f"group-{gid}.key").exists()
    assert g3.groups.reports() == () and g3.groups.active_interfaces() == ()

    api.ok("DELETE", f"{_groups(net)}/{gid}")
    for name in ("g1", "g2"):
        m = agents[name]
        m.sync()
        assert m.election.removed == [gid] and m.planes[ifname].closed
        assert m.dir.group_key_ids() == []


def test_rotate_key_the_asked_member_makes_the_next_version_and_the_others_switch_once_they_open_it(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], agents: dict[str, Member]) -> None:  # noqa: F811
    group = _create(api, net, hosts)
    gid = group["id"]
    g1, g2, g3 = agents["g1"], agents["g2"], agents["g3"]
    for m in (g1, g2, g3, g1):
        m.sync()
    first = g1.groups.held(gid)
    assert first is not None
    asked = api.ok("POST", f"{_groups(net)}/{gid}/rotate-key", status=202)
    assert asked["maker"] == hosts["g1"]["id"]
    g1.sync()  # the rotation's broadcast: the maker reads the key again and makes version 2
    second = g1.groups.held(gid)
    assert second is not None and second.version == 2 and second.public_key != first.public_key
    for m in (g1, g2, g3):
        m.sync()
        held = m.groups.held(gid)
        assert held is not None and (held.version, held.private_key) == (2, second.private_key)
        assert m.election.groups[gid][0].key_version == 2
        assert m.planes[group_ifname(gid)].ensured[-1][0] == second.private_key


class DownApi:
    """The control plane unreachable (a restart during an outage)."""

    def group_key(self, network_id: str, group_id: str) -> dict[str, Any]:
        raise Unreachable("cannot reach http://control-plane.test: connection refused")

    def put_group_key(self, network_id: str, group_id: str, upload: Mapping[str, Any]) -> dict[str, Any]:
        raise Unreachable("cannot reach http://control-plane.test: connection refused")


def test_a_restarted_member_serves_at_once_from_the_key_it_kept_with_the_control_plane_down(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], agents: dict[str, Member]) -> None:  # noqa: F811
    group = _create(api, net, hosts)
    gid, ifname = group["id"], group_ifname(group["id"])
    for name in ("g1", "g2"):
        agents[name].sync()
    g2 = agents["g2"]
    kept = g2.groups.held(gid)
    assert kept is not None
    cached = g2.tracker.snapshots  # what the agent's cache brings back at boot
    planes: dict[str, FakePlane] = {}
    election = FakeElection()
    reborn = GroupMembership(g2.dir, g2.host_id, hosts["g2"]["pair"].private_key, DownApi(),
                             planes=lambda n: planes.setdefault(n, FakePlane(n)), election=lambda: election)
    reborn.sync(Tracker(g2.host_id, cached))
    assert reborn.held(gid) == kept and planes[ifname].ensured[-1][0] == kept.private_key
    assert election.groups[gid][0].key_version == 1
    assert reborn.next_due() is not None, "it reads the key again once the control plane answers"
