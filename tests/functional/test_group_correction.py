"""The failover functions correct what members cannot decide alone (issue 11, ``election.correct``), on
DynamoDB Local: each member's latest group rows are kept with its status, and the record of a group's
active member is corrected from them, event-driven on a report and in the scheduled pass."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.models import GroupReport, HostStatus
from chalicelib.service import Service

from . import test_groups as _g
from .conftest import Api
from .test_groups import _broadcasts, _create, _groups

net, hosts = _g.net, _g.hosts  # fixtures


def _claim(api: Api, service: Service, net: dict[str, Any], group: dict[str, Any], member: dict[str, Any],
           epoch: int) -> None:
    """``member`` won at ``epoch``: the control plane's vote, then the member's report that it is active
    (the record follows the report; a vote alone records nothing)."""
    assert api.ok("POST", f"{_groups(net)}/{group['id']}/claims",
                  {"member": member["id"], "epoch": epoch, "incarnation": 0}, token=member["token"],
                  status=200)["granted"]
    _report(service, member, group, "active", epoch, [])


def _report(service: Service, host: dict[str, Any], group: dict[str, Any], role: str, epoch: int,
            down: list[dict[str, Any]]) -> None:
    """What a member's agent reports (through the status topic and its rule)."""
    assert service.status.record(host["id"], {
        "v": 5, "type": "status", "agent_version": "0.2.0",
        "groups": [{"id": group["id"], "role": role, "epoch": epoch, "down": sorted(d["id"] for d in down)}]})


def _record(api: Api, net: dict[str, Any], group: dict[str, Any]) -> tuple[str, int]:
    g = api.ok("GET", f"{_groups(net)}/{group['id']}")
    return g["active"], g["epoch"]


def test_an_active_member_every_other_member_reports_down_is_replaced_by_the_first_live_one_at_once(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    g1, g2, g3 = hosts["g1"], hosts["g2"], hosts["g3"]
    group = _create(api, net, hosts)
    _claim(api, service, net, group, g1, 3)
    _report(service, g1, group, "active", 3, [])
    before = len(_broadcasts(service, net))
    _report(service, g3, group, "standby", 3, [g1])
    assert _record(api, net, group) == (g1["id"], 3), "g2 has not said so yet"
    _report(service, g2, group, "standby", 3, [g1])  # now every other member sees g1 down
    assert _record(api, net, group) == (g2["id"], 4), "the first live member by priority, a higher epoch"
    assert len(_broadcasts(service, net)) == before + 1
    assert _broadcasts(service, net)[-1].groups[0].active == g2["id"]
    assert service.failover.run() == 0 and len(_broadcasts(service, net)) == before + 1, "settled"


def test_the_scheduled_pass_corrects_from_the_stored_reports(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    g1, g2, g3 = hosts["g1"], hosts["g2"], hosts["g3"]
    group = _create(api, net, hosts)
    _claim(api, service, net, group, g2, 7)
    now = service.deps.clock.now()
    # reports stored without the event-driven path (a report handled while the group was written)
    for h, role, down in ((g1, "standby", [g2]), (g3, "standby", [g2]), (g2, "active", [])):
        service.deps.store.record_host_status(h["id"], HostStatus(
            online=True, last_seen=now,
            groups=(GroupReport(group["id"], role, 7, tuple(d["id"] for d in down)),)))
    before = len(_broadcasts(service, net))
    assert service.failover.run() == 1
    assert _record(api, net, group) == (g1["id"], 8)
    assert len(_broadcasts(service, net)) == before + 1


def test_a_live_active_member_is_never_moved_and_stale_reports_change_nothing(
        api: Api, net: dict[str, Any], hosts: dict[str, Any], service: Service) -> None:
    g1, g2, g3 = hosts["g1"], hosts["g2"], hosts["g3"]
    group = _create(api, net, hosts)
    _claim(api, service, net, group, g3, 2)  # not the first by priority: a live active member keeps it anyway
    before = len(_broadcasts(service, net))
    _report(service, g3, group, "active", 2, [])
    _report(service, g1, group, "standby", 2, [g3])  # one member's probes alone do not make it dead
    _report(service, g2, group, "standby", 2, [])
    assert service.failover.run() == 0
    assert _record(api, net, group) == (g3["id"], 2)
    # g1 and g2 both said g3 down, but long ago (their agents stopped reporting since)
    old = service.deps.clock.now() - service.deps.settings.group_report_fresh - 60
    for h in (g1, g2):
        service.deps.store.record_host_status(h["id"], HostStatus(
            online=True, last_seen=old, groups=(GroupReport(group["id"], "standby", 2, (g3["id"],)),)))
    assert service.failover.run() == 0
    _report(service, g1, group, "active", 1, [g2, g3])  # an outdated lease (epoch 1 < 2) claims nothing
    assert _record(api, net, group) == (g3["id"], 2)
    assert len(_broadcasts(service, net)) == before
