"""Host status reports, which any host can send: bounded, never an exception, guarded writes.

Everything here runs the real handler and store on DynamoDB Local; the guards are the
conditions DynamoDB evaluates, so they are tested by racing real writes.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import boto3
import pytest

import app as app_module
from chalicelib.adapters.dynamodb.size import item_size
from chalicelib.domain import protocol
from chalicelib.service import Service
from chalicelib.service.ports import PAGE_CURSOR_MAX, PAGE_LIMIT_MAX, every_item

from .conftest import host_body


@pytest.fixture
def host_id(api: Any) -> str:
    net = api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/24"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 5})
    return str(api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])["host"]["id"])


def raw_host_item(stage: dict[str, str], host_id: str) -> dict[str, Any] | None:
    """The host's item as DynamoDB stores it (None when there is none)."""
    table = boto3.resource("dynamodb", endpoint_url=stage["SKYMESH_DYNAMODB_ENDPOINT"],
                           region_name="us-east-1", aws_access_key_id="local",
                           aws_secret_access_key="local").Table(stage["SKYMESH_TABLE"])
    item: dict[str, Any] | None = table.get_item(Key={"pk": f"HOST#{host_id}", "sk": "META"},
                                                 ConsistentRead=True).get("Item")
    return item


def wg_key(i: int) -> str:
    return base64.b64encode(i.to_bytes(32, "big")).decode()


def report(**fields: Any) -> dict[str, Any]:
    return {"v": 1, "type": "status", "agent_version": "0.1.0", **fields}


def nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = {"a": [value]}
    return value


def peers(n: int) -> list[dict[str, Any]]:
    return [{"key": wg_key(i), "handshake_age": 1, "rx": 1, "tx": 1} for i in range(1, n + 1)]


HOSTILE: list[tuple[str, Any]] = [
    ("deep nesting in a field", report(agent_version=nested(100_000))),
    ("deep nesting in an unknown key", report(x=nested(100_000))),
    ("a key of megabytes", report(**{"k" * 2_000_000: 1})),
    ("a version of megabytes", report(agent_version="1" * 2_000_000)),
    ("thousands of peers", report(peers=peers(5_000))),
    ("long peer keys", report(peers=[{"key": "k" * 100_000}] * 3)),
    ("an endpoint of megabytes", report(endpoints=["a" * 1_000_000 + ":1"])),
    ("a counter past 64 bits", report(peers=[{"key": wg_key(1), "rx": 2**70}])),
    ("a boolean counter", report(peers=[{"key": wg_key(1), "tx": True}])),
]


@pytest.mark.parametrize("payload", [p for _, p in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_a_hostile_report_is_dropped_with_one_log_line_and_the_next_one_is_recorded(
        api: Any, stage: dict[str, str], host_id: str, payload: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    before = raw_host_item(stage, host_id)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert app_module.host_report({**payload, "host_id": host_id}, None) == {"recorded": False}
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and len(lines[0]) < 300, lines
    assert raw_host_item(stage, host_id) == before

    assert app_module.host_report({**report(), "host_id": host_id}, None) == {"recorded": True}
    assert api.ok("GET", f"/v1/hosts/{host_id}")["status"]["online"] is True


@pytest.mark.parametrize("event", [None, [], "sm/h/x/status", {"host_id": "x" * 1_000_000, **report()}],
                         ids=["none", "list", "string", "huge-host"])
def test_events_without_a_known_host_are_not_recorded_and_do_not_raise(api: Any, event: Any) -> None:
    assert app_module.host_report(event, None) == {"recorded": False}


def test_the_most_hostile_valid_report_keeps_the_host_record_bounded(
        api: Any, stage: dict[str, str], host_id: str) -> None:
    plain = item_size(raw_host_item(stage, host_id) or {})
    worst = report(
        agent_version="v" * protocol.MAX_AGENT_VERSION,
        endpoints=[f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 57}{i}:65535"
                   for i in range(8)],  # 253-character names, the longest an endpoint can be
        peers=[{"key": wg_key(2**255 - i), "handshake_age": protocol.MAX_HANDSHAKE_AGE,
                "rx": protocol.MAX_COUNTER - i, "tx": protocol.MAX_COUNTER - i,
                "endpoint": f"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:{i:04x}]:65535"}  # the longest
               for i in range(protocol.MAX_REPORT_PEERS)])
    assert app_module.host_report({**worst, "host_id": host_id}, None) == {"recorded": True}
    item = raw_host_item(stage, host_id)
    assert item is not None and len(item["peers"]) == protocol.MAX_REPORT_PEERS
    assert item_size(item) - plain <= protocol.MAX_STORED_REPORT_BYTES



LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024  # bytes of a synchronous Lambda response (API Gateway: 10 MB)


def test_a_full_page_of_the_largest_hosts_fits_in_a_lambda_response(
        api: Any, stage: dict[str, str], host_id: str) -> None:
    """Whatever the fleet, ``GET /v1/hosts`` stays under the payload limit: a page holds at most
    PAGE_LIMIT_MAX hosts, each as large as a host record can be made."""
    api.ok("PATCH", f"/v1/hosts/{host_id}", {
        "name": "n" * 63,
        "endpoints": [f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 57}{i}:65535" for i in range(8)],
        "tags": [f"{i:02d}" + "t" * 61 for i in range(32)]})
    worst = report(
        agent_version="v" * protocol.MAX_AGENT_VERSION,
        endpoints=[f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 57}{i}:65535" for i in range(8)],
        peers=[{"key": wg_key(2**255 - i), "handshake_age": protocol.MAX_HANDSHAKE_AGE,
                "rx": protocol.MAX_COUNTER - i, "tx": protocol.MAX_COUNTER - i,
                "endpoint": f"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:{i:04x}]:65535"}  # the longest
               for i in range(protocol.MAX_REPORT_PEERS)])
    assert app_module.host_report({**worst, "host_id": host_id}, None) == {"recorded": True}
    page = api.ok("GET", "/v1/hosts?limit=1")
    (host,) = page["hosts"]
    full = json.dumps({"hosts": [host] * PAGE_LIMIT_MAX, "next_cursor": "c" * PAGE_CURSOR_MAX},
                      separators=(",", ":"))
    # Lambda's proxy response carries the body as a JSON string: every quote is escaped again.
    size = len(json.dumps({"statusCode": 200, "body": full}))
    assert size < LAMBDA_RESPONSE_LIMIT, size


# --- guards the store's conditions hold (evaluated by DynamoDB Local) --------------------------


def test_a_report_for_a_deleted_host_does_not_recreate_it(api: Any, stage: dict[str, str],
                                                          host_id: str) -> None:
    api.ok("DELETE", f"/v1/hosts/{host_id}")
    assert raw_host_item(stage, host_id) is None
    assert app_module.host_report({**report(), "host_id": host_id}, None) == {"recorded": False}
    assert raw_host_item(stage, host_id) is None
    code, _ = api.call("GET", f"/v1/hosts/{host_id}")
    assert code == 404


def _at(service: Service, t: int) -> None:
    service.deps.clock.now = lambda: t  # type: ignore[method-assign]


def test_mark_offline_does_not_flip_a_host_whose_report_came_after_the_listing(
        api: Any, service: Service, stage: dict[str, str], host_id: str) -> None:
    """``mark_offline`` lists the hosts, then marks each stale one: a report that lands in
    between keeps its host online (the write is conditional on the ``last_seen`` it read)."""
    t0 = service.deps.clock.now()
    after = service.deps.settings.offline_after
    assert app_module.host_report({**report(), "host_id": host_id}, None) == {"recorded": True}
    cutoff = t0 + 10
    listed = {h.id: h for h in every_item(lambda c: service.deps.store.list_hosts(PAGE_LIMIT_MAX, c))}
    assert listed[host_id].status.online and listed[host_id].status.last_seen < cutoff  # stale then

    _at(service, cutoff + after - 1)  # the report comes in after the listing, before the write
    assert app_module.host_report({**report(agent_version="2"), "host_id": host_id}, None) == {
        "recorded": True}
    assert service.deps.store.mark_offline(host_id, cutoff) is False
    status = api.ok("GET", f"/v1/hosts/{host_id}")["status"]
    assert status["online"] is True and status["agent_version"] == "2"

    # without a newer report the same write marks it, once
    assert service.deps.store.mark_offline(host_id, cutoff + after) is True
    assert service.deps.store.mark_offline(host_id, cutoff + after) is False
    assert api.ok("GET", f"/v1/hosts/{host_id}")["status"]["online"] is False


def test_mark_offline_does_not_recreate_a_host_deleted_after_the_listing(
        api: Any, service: Service, stage: dict[str, str], host_id: str) -> None:
    assert app_module.host_report({**report(), "host_id": host_id}, None) == {"recorded": True}
    assert host_id in {h.id for h in every_item(lambda c: service.deps.store.list_hosts(PAGE_LIMIT_MAX, c))}
    api.ok("DELETE", f"/v1/hosts/{host_id}")
    assert service.deps.store.mark_offline(host_id, service.deps.clock.now() + 3600) is False
    assert raw_host_item(stage, host_id) is None


# ------------------------------------------------------------------- issue 12: the host's last word
def test_an_offline_report_marks_the_host_offline_at_once_and_keeps_what_it_reported(api, host_id, service):
    t = {"now": 1_800_000_000}
    service.deps.clock.now = lambda: t["now"]  # type: ignore[method-assign]
    sent = report(v=protocol.VERSION, endpoints=["198.18.0.7:51820"], host_id=host_id)
    assert app_module.host_report(sent, None) == {"recorded": True}
    t["now"] += 1  # within a second of its last report: a clean stop says so right after reporting
    bye = protocol.to_wire(protocol.StatusReport(agent_version="0.1.0", offline=True))
    assert bye["offline"] is True and app_module.host_report({**bye, "host_id": host_id}, None) == {
        "recorded": True}
    st = api.ok("GET", f"/v1/hosts/{host_id}")["status"]
    assert st["online"] is False and st["reported_endpoints"] == ["198.18.0.7:51820"]
    assert st["last_seen"] == "2027-01-15T08:00:00Z"  # when it last reported, not when it said goodbye
    # its agent back: its next report makes it online again
    t["now"] += 30
    assert app_module.host_report(sent, None) == {"recorded": True}
    assert api.ok("GET", f"/v1/hosts/{host_id}")["status"]["online"] is True


def test_offline_must_be_true_or_false_and_an_older_schema_may_say_it(host_id, caplog):
    assert app_module.host_report(report(offline="yes", host_id=host_id), None) == {"recorded": False}
    assert "offline must be true or false" in caplog.text
    assert app_module.host_report(report(host_id=host_id), None) == {"recorded": True}
    assert app_module.host_report(report(offline=True, host_id=host_id), None) == {"recorded": True}  # v1
