"""Contract tests of what issue 11's Elastic IP and correction keep (every ``Store``): a group's
Elastic IP with every member's target, and each member's latest gateway-group rows with its status."""

from __future__ import annotations

from dataclasses import replace

from chalicelib.domain.ids import GroupId, HostId
from chalicelib.domain.models import ElasticIp, GroupReport, HostStatus
from chalicelib.service.ports import Store

from . import test_group_store_contract as groups
from .test_store_contract import NOW, _registered

store = groups.store  # fixture: one per backend, with the group's network


def test_a_groups_elastic_ip_is_stored_changed_and_removed(store: Store) -> None:  # noqa: F811
    groups._settle(store)
    eip = ElasticIp("eipalloc-0123456789abcdef0",
                    ((groups.A, "eni-0123456789abcdef0"), (groups.B, "i-0123456789abcdef0")))
    group = groups._group(aws=eip)
    store.create_group(group, change=groups._change(group))
    assert store.get_group(groups.NET, groups.GID) == group
    assert store.get_group(groups.NET, groups.GID).aws.target(groups.B) == "i-0123456789abcdef0"
    none = replace(group, aws=None, revision=1)
    store.update_group(group, none, change=groups._change(group))
    assert store.get_group(groups.NET, groups.GID) == none


def test_a_reports_group_rows_are_stored_read_in_batch_and_replaced_by_the_next(store: Store) -> None:  # noqa: F811
    first, _ = _registered(store)
    rows = (GroupReport(GroupId("grp_abc00001"), "standby", 7, (HostId("host_gw01"), HostId("host_gw02"))),
            GroupReport(GroupId("grp_abc00002"), "active", 2**62))
    status = HostStatus(online=True, last_seen=NOW, agent_version="1.2", groups=rows)
    assert store.record_host_status(first.id, status) is True
    assert store.get_host(first.id).status == status
    assert store.host_statuses([first.id]) == {first.id: status}
    assert store.record_host_status(first.id, replace(status, last_seen=NOW + 30, groups=())) is True
    assert store.host_statuses([first.id])[first.id].groups == ()
