"""Uniqueness and counting rules under concurrency, on DynamoDB Local."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from chalicelib.domain import protocol

from .conftest import host_body


def test_120_concurrent_registrations_on_a_90_use_key(api, service):
    net = api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/22"})
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 90})
    bodies = [host_body(f"h{i}") for i in range(120)]
    start = threading.Barrier(120, timeout=30)

    def register(body):
        start.wait()
        return api.call("POST", "/v1/hosts", body, token=key["token"])

    with ThreadPoolExecutor(max_workers=120) as pool:
        results = list(pool.map(register, bodies, timeout=300))

    created = [b for code, b in results if code == 201]
    refused = [b for code, b in results if code != 201]
    assert len(created) == 90
    assert len(refused) == 30
    assert all(code == 403 for code, _ in results if code != 201)
    assert {b["error"]["message"] for b in refused} == {"this enrollment key has no uses left"}

    v4 = [b["host"]["addresses"][0]["ipv4"] for b in created]
    v6 = [b["host"]["addresses"][0]["ipv6"] for b in created]
    assert len(set(v4)) == 90 and len(set(v6)) == 90
    assert len(api.ok("GET", "/v1/hosts")["hosts"]) == 90
    assert api.ok("GET", f"/v1/enrollment-keys/{key['id']}")["uses_left"] == 0
    # Refused registrations left nothing behind: no certificates with broker permissions.
    assert len(service.deps.identity.networks) == 90

    # The broadcasts are gap-free and together announce exactly the 90 hosts.
    msgs = [protocol.decode(p) for p in service.deps.publisher.on(protocol.network_topic(net["id"]))]
    assert [m.seq for m in msgs] == list(range(1, len(msgs) + 1))
    assert {m.host_id for d in msgs for m in d.upsert} == {b["host"]["id"] for b in created}
    final = api.ok("GET", f"/v1/networks/{net['id']}")
    assert final["seq"] == len(msgs)
