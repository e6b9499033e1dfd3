"""The latency section of a status report (issue 10: probes): round trip, bounds, older reports."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain import protocol
from chalicelib.domain.ids import HostId
from chalicelib.domain.models import LatencyRow, PeerStatus
from chalicelib.domain.protocol import ProtocolError, StatusReport

KEY = base64.b64encode(bytes(range(1, 33))).decode()
host_ids = st.from_regex(r"host_[0-9a-z]{4,40}", fullmatch=True).map(HostId)
rows = st.builds(LatencyRow, target=host_ids,
                 rtt_ms=st.none() | st.integers(0, int(protocol.MAX_RTT_MS * 10)).map(lambda t: t / 10),
                 loss_pct=st.integers(0, 100), up=st.booleans())


def report(v: int = protocol.VERSION, **fields: Any) -> dict[str, Any]:
    return {"v": v, "type": "status", "agent_version": "0.1.0", **fields}


def row(**fields: Any) -> dict[str, Any]:
    return {"host": "host_gw01", "rtt": 12.3, "loss": 0, "up": True, **fields}


@given(st.lists(rows, max_size=protocol.MAX_REPORT_LATENCY, unique_by=lambda r: r.target).map(tuple),
       st.lists(host_ids, max_size=protocol.MAX_REPORT_LATENCY, unique=True).map(lambda d: tuple(sorted(d))))
def test_a_reports_latency_section_survives_encode_decode(latency: tuple[LatencyRow, ...],
                                                          direct: tuple[HostId, ...]) -> None:
    msg = StatusReport(agent_version="1.0", peers=(PeerStatus(KEY, 3),), latency=latency, direct=direct)
    assert protocol.decode_status(protocol.encode(msg)) == msg


def test_rtt_is_read_to_a_tenth_of_a_millisecond() -> None:
    msg = protocol.decode_status(report(latency=[row(rtt=12.3456), row(host="host_gw02", rtt=7, up=False,
                                                                       loss=100)]))
    assert msg.latency == (LatencyRow(HostId("host_gw01"), 12.3, 0, True),
                           LatencyRow(HostId("host_gw02"), 7.0, 100, False))


def test_a_report_without_probes_is_what_older_control_planes_read() -> None:
    """No latency: no field at all, so a control plane that does not know it reads the report."""
    wire = json.loads(protocol.encode(StatusReport(agent_version="1.0", endpoints=("198.18.0.5:51820",))))
    assert "latency" not in wire and set(wire) == {"v", "type", "agent_version", "endpoints", "peers"}


def test_the_direct_section_is_read_sorted() -> None:
    msg = protocol.decode_status(report(direct=["host_b0001", "host_a0001"]))
    assert msg.direct == (HostId("host_a0001"), HostId("host_b0001"))


@pytest.mark.parametrize("direct", [
    ["host_a0001"] * 2,
    [f"host_a{i:04d}" for i in range(protocol.MAX_REPORT_LATENCY + 1)],
    ["net_a0001"], [7], "host_a0001", [None],
])
def test_direct_sections_outside_the_bounds_are_refused(direct: Any) -> None:
    with pytest.raises(ProtocolError, match="direct"):
        protocol.decode_status(report(direct=direct))


@pytest.mark.parametrize("v", [1, 2])
def test_status_reports_of_versions_1_and_2_are_still_read_without_latency(v: int) -> None:
    msg = protocol.decode_status(report(v=v, endpoints=["198.18.0.5:51820"],
                                        peers=[{"key": KEY, "handshake_age": 3, "rx": 1, "tx": 2}]))
    assert msg.latency == () and msg.peers == (PeerStatus(KEY, 3, 1, 2),)


@pytest.mark.parametrize("wire", [
    report(latency=[row()] * 2),  # the same target twice
    report(latency=[row(host=f"host_gw{i:04d}") for i in range(protocol.MAX_REPORT_LATENCY + 1)]),
    report(latency=[row(host="gw01")]),  # not a host id
    report(latency=[row(host="net_gw01")]),
    report(latency=[row(host="host_GW01")]),
    report(latency=[row(host=7)]),
    report(latency=[row(host="host_" + "a" * 1000)]),
    report(latency=[row(rtt=-1)]),
    report(latency=[row(rtt=protocol.MAX_RTT_MS + 1)]),
    report(latency=[row(rtt="12")]),
    report(latency=[row(rtt=True)]),
    report(latency=[row(loss=101)]),
    report(latency=[row(loss=1.5)]),
    report(latency=[row(up=1)]),
    report(latency=[row(up=None)]),
    report(latency=[row(extra=1)]),
    report(latency=["host_gw01"]),
    report(latency={"host_gw01": row()}),
], ids=lambda w: json.dumps(w["latency"])[:40])
def test_latency_sections_outside_the_bounds_are_refused(wire: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode_status(wire)
    with pytest.raises(ProtocolError):
        protocol.decode_status(json.dumps(wire).encode())


def test_the_largest_valid_report_with_a_full_latency_section_fits_the_byte_bound() -> None:
    keys = [base64.b64encode(i.to_bytes(32, "big")).decode() for i in range(1, protocol.MAX_REPORT_PEERS + 1)]
    msg = StatusReport(
        agent_version="v" * protocol.MAX_AGENT_VERSION,
        endpoints=tuple(f"[fd00::{i:x}:ffff:ffff:ffff:ffff]:65535" for i in range(8)),
        peers=tuple(PeerStatus(k, protocol.MAX_HANDSHAKE_AGE, protocol.MAX_COUNTER, protocol.MAX_COUNTER,
                               endpoint="[fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535") for k in keys),
        latency=tuple(LatencyRow(HostId("host_" + f"{i:040d}"), protocol.MAX_RTT_MS - 0.1, 100, False)
                      for i in range(protocol.MAX_REPORT_LATENCY)),
        direct=tuple(HostId("host_" + f"{i:040d}") for i in range(protocol.MAX_REPORT_LATENCY)))
    payload = protocol.encode(msg)
    assert len(payload) <= protocol.MAX_REPORT_BYTES
    assert protocol.decode_status(payload) == msg
