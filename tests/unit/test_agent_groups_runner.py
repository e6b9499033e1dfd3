"""The runner's side of gateway groups (issue 11): what :mod:`agent.groups` gives it reaches the
status report and the forwarding, a role change (queued by the election's thread) is reported at
once, and a clean stop withdraws and forwards for no group any more. The groups themselves are a
recording stand-in here (tests/functional/test_group_membership.py runs the real component against
the control plane; tests/integration/test_agent_groups.py real agents)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace

from agent.mqtt import Connected
from agent.runner import GroupRoleChanged
from chalicelib.domain import protocol
from chalicelib.domain.ids import GroupId, HostId
from chalicelib.domain.models import Gateway, MemberRole

from .test_agent_runner import ScriptedApi, make_agent, member, snapshot


class RecordingForwarding:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def apply(self, forwards: tuple[str, ...], nat: tuple[str, ...], *, full_tunnel_mark: int = 0,
              addresses: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> bool:
        changed = not self.calls or self.calls[-1] != groups
        self.calls.append(groups)
        return changed


class StandInGroups:
    """What the runner calls of :class:`agent.groups.GroupMembership`, with a role set by the test."""

    def __init__(self) -> None:
        self.active = False
        self.synced = 0
        self.stopped = 0
        self.up: Callable[[], Iterable[str]] | None = None
        self.on_role: Callable[[], None] | None = None

    def bind(self, *, up: Callable[[], Iterable[str]], on_role: Callable[[], None]) -> None:
        self.up, self.on_role = up, on_role

    def sync(self, tracker: object) -> None:
        self.synced += 1

    def next_due(self) -> float | None:
        return None

    def forwarded_interfaces(self) -> tuple[str, ...]:
        return ("smg0123456789ab",) if self.active else ()

    def reports(self) -> tuple[protocol.GroupReport, ...]:
        role = "active" if self.active else "standby"
        return (protocol.GroupReport(GroupId("grp_g1abcdefgh"), role, 3 if self.active else 0,
                                     (HostId("host_3abcdefgh"),)),)

    def stop(self) -> None:
        self.stopped += 1
        self.active = False


def _agent(tmp_path):  # noqa: ANN001, ANN202
    me = replace(member(1), role=MemberRole(gateway=Gateway(remote_access=True)))
    agent, _, link = make_agent(tmp_path, ScriptedApi([snapshot(7, [me, member(2), member(3)])]))
    groups, forwarding = StandInGroups(), RecordingForwarding()
    agent.groups, agent.forwarding = groups, forwarding
    groups.bind(up=agent._members_up, on_role=lambda: agent.events.put(GroupRoleChanged()))
    return agent, link, groups, forwarding


def _reports(link) -> list[protocol.StatusReport]:  # noqa: ANN001
    return [m for _, p in link.published if isinstance(m := protocol.decode(p), protocol.StatusReport)]


def test_a_role_change_is_reported_at_once_and_the_active_group_interface_is_forwarded(tmp_path):
    agent, link, groups, forwarding = _agent(tmp_path)
    agent.boot()
    agent.handle(Connected())
    assert groups.synced >= 1, "the groups follow every apply"
    agent.report_status()
    assert [r.groups[0].role for r in _reports(link)] == ["standby"]
    assert forwarding.calls[-1] == ()

    groups.active = True  # the election's thread activated the data plane, then told the runner
    done = threading.Thread(target=groups.on_role)  # type: ignore[arg-type]
    done.start()
    done.join(2.0)
    agent.step(timeout=1.0)  # the queued event: no waiting for the status check
    assert forwarding.calls[-1] == ("smg0123456789ab",)
    reports = _reports(link)
    assert len(reports) == 2 and reports[-1].groups == (
        protocol.GroupReport(GroupId("grp_g1abcdefgh"), "active", 3, (HostId("host_3abcdefgh"),)),)


def test_a_clean_stop_withdraws_and_forwards_for_no_group_any_more(tmp_path):
    agent, _, groups, forwarding = _agent(tmp_path)
    groups.active = True
    agent.stop()  # the loop ends at once; its finally runs
    agent.run()
    assert groups.stopped == 1
    assert forwarding.calls[0] == ("smg0123456789ab",) and forwarding.calls[-1] == ()


def _rules(doc: dict) -> dict[str, list[list[dict]]]:
    out: dict[str, list[list[dict]]] = {}
    for c in doc["nftables"]:
        if "rule" in c.get("add", {}):
            out.setdefault(c["add"]["rule"]["chain"], []).append(c["add"]["rule"]["expr"])
    return out


def _names(expr: list[dict], key: str, op: str) -> list[str]:
    return [e["match"]["right"] for e in expr if "match" in e and e["match"]["op"] == op
            and e["match"]["left"] == {"meta": {"key": key}}]


def test_an_active_group_interface_is_forwarded_and_marked_like_the_tunnel_and_never_masqueraded_into():
    from agent.gateway import ruleset

    forwards, nat = ("100.64.0.0/16", "10.9.0.0/16"), ("10.9.0.0/16",)
    plain = _rules(ruleset("sm0", forwards, nat))
    grouped = _rules(ruleset("sm0", forwards, nat, groups=("smgA",)))
    for op, key in (("==", "iifname"), ("==", "oifname")):
        assert [_names(e, key, op) for e in grouped["forward"]].count(["smgA"]) == \
            [_names(e, key, op) for e in plain["forward"]].count(["sm0"]), "every rule of sm0, again for smgA"
    (masquerade,) = grouped["postrouting"]
    assert _names(masquerade, "oifname", "!=") == ["sm0", "smgA"]
    marks = [e for e in grouped["forward"] if any("mangle" in x for x in e)]
    assert sorted(_names(e, "iifname", "==")[0] for e in marks) == ["sm0", "smgA"]
    assert ruleset("sm0", forwards, nat, groups=()) == ruleset("sm0", forwards, nat)
