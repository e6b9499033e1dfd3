"""Contract tests of the stored latency rows (issue 10: probes), for every ``Store``."""

from __future__ import annotations

from dataclasses import replace

from chalicelib.domain.ids import HostId
from chalicelib.domain.models import HostStatus, LatencyRow, PeerStatus
from chalicelib.service.ports import Store

from .test_store_contract import NOW, _host, _register, _registered, store  # noqa: F401 (fixture)

ROWS = (LatencyRow(HostId("host_gw01"), 12.3, 0, True), LatencyRow(HostId("host_gw02"), None, 100, False),
        LatencyRow(HostId("host_gw03"), 59999.9, 5, True))


def test_a_reports_latency_rows_are_stored_with_the_report_and_replaced_by_the_next(store: Store) -> None:  # noqa: F811
    first, _ = _registered(store)
    status = HostStatus(online=True, last_seen=NOW, agent_version="1.2",
                        peers=(PeerStatus("p" * 43 + "=", 5, 10, 20),), latency=ROWS)
    assert store.record_host_status(first.id, status) is True
    assert store.get_host(first.id).status == status
    later = HostStatus(online=True, last_seen=NOW + 60, agent_version="1.2")  # a report without latency
    assert store.record_host_status(first.id, later) is True
    assert store.get_host(first.id).status.latency == ()
    assert store.mark_offline(first.id, seen_before=NOW + 61) is True  # the rows keep their report's time
    store.record_host_status(first.id, status)
    store.mark_offline(first.id, seen_before=NOW + 61)
    assert store.get_host(first.id).status == replace(status, online=False)


def test_host_statuses_reads_many_hosts_status_without_their_peers(store: Store) -> None:  # noqa: F811
    first, key = _registered(store)
    second = _host(2)
    _register(store, second, key)
    status = HostStatus(online=True, last_seen=NOW, agent_version="1.2", reported_endpoints=("198.18.0.1:1",),
                        peers=(PeerStatus("p" * 43 + "=", 5, 10, 20),), latency=ROWS)
    store.record_host_status(first.id, status)
    got = store.host_statuses([first.id, second.id, "host_gone", first.id])
    assert got == {first.id: replace(status, peers=()), second.id: HostStatus()}
    assert store.host_statuses([]) == {}


def test_a_reports_direct_peers_are_stored_read_in_batch_and_replaced_by_the_next(store: Store) -> None:  # noqa: F811
    first, _ = _registered(store)
    status = HostStatus(online=True, last_seen=NOW, agent_version="1.2", latency=ROWS,
                        direct=(HostId("host_peer1"), HostId("host_peer2")))
    assert store.record_host_status(first.id, status) is True
    assert store.get_host(first.id).status == status
    assert store.host_statuses([first.id]) == {first.id: status}
    assert store.record_host_status(first.id, replace(status, last_seen=NOW + 30, direct=())) is True
    assert store.get_host(first.id).status.direct == ()
    assert store.host_statuses([first.id])[first.id].direct == ()
