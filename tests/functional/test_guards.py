"""Guards that hold under concurrency, each raced deterministically on DynamoDB Local.

A race is made to happen every time, not by chance: the competing change runs at a
hook the test controls (the certificate signing between the service's key check and
the transaction, or the store's write), so a missing condition fails on every run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.domain import protocol

from .conftest import host_body, wg_public_key


@pytest.fixture
def net(api):
    return api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/24"})


class _Wrapper:
    """Delegates everything to ``inner``; subclasses replace the one method they hook."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _OnIssue(_Wrapper):
    """Identity that runs ``action`` once when the first certificate is signed.

    Signing sits between the service's check of the enrollment key and the
    registration transaction: whatever ``action`` changes, the check has already
    passed and only the transaction's conditions can still refuse.
    """

    def __init__(self, inner: Any, action: Callable[[], None]) -> None:
        super().__init__(inner)
        self._action: Callable[[], None] | None = action

    def issue(self, host_id: Any, csr_pem: str) -> Any:
        action, self._action = self._action, None
        if action is not None:
            action()
        return self._inner.issue(host_id, csr_pem)


def _between_check_and_commit(service, monkeypatch, action: Callable[[], None]) -> None:
    monkeypatch.setattr(service.deps, "identity", _OnIssue(service.deps.identity, action))


# ----------------------------------------------------------------- WireGuard key claims
def test_rotating_to_another_hosts_wireguard_key_is_409_and_changes_nothing(api, service, net):
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 3})
    a = api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])
    b = api.ok("POST", "/v1/hosts", host_body("b"), token=key["token"])
    seq = api.ok("GET", f"/v1/networks/{net['id']}")["seq"]

    code, out = api.call("PATCH", f"/v1/hosts/{a['host']['id']}",
                         {"wg_public_key": b["host"]["wg_public_key"]}, token=a["host_token"])

    assert code == 409 and out["error"]["code"] == "public_key_in_use", out
    assert api.ok("GET", f"/v1/hosts/{a['host']['id']}")["wg_public_key"] == a["host"]["wg_public_key"]
    assert api.ok("GET", f"/v1/hosts/{b['host']['id']}")["wg_public_key"] == b["host"]["wg_public_key"]
    assert api.ok("GET", f"/v1/networks/{net['id']}")["seq"] == seq, "nothing was broadcast"
    # b's key stays claimed by b: a new host cannot register with it either.
    code, out = api.call("POST", "/v1/hosts", {**host_body("c"), "wg_public_key": b["host"]["wg_public_key"]},
                         token=key["token"])
    assert code == 409 and out["error"]["code"] == "public_key_in_use", out


def test_a_rotated_away_key_is_free_and_the_new_one_is_claimed(api, net):
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 3})
    a = api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])
    old, new = a["host"]["wg_public_key"], wg_public_key()
    api.ok("PATCH", f"/v1/hosts/{a['host']['id']}", {"wg_public_key": new}, token=a["host_token"])

    code, out = api.call("POST", "/v1/hosts", {**host_body("b"), "wg_public_key": new}, token=key["token"])
    assert code == 409 and out["error"]["code"] == "public_key_in_use", out
    api.ok("POST", "/v1/hosts", {**host_body("c"), "wg_public_key": old}, token=key["token"])


# ------------------------------------------------------------------ lost updates
def test_two_concurrent_updates_of_one_host_both_take_effect(api, service, net, monkeypatch):
    """The admin renames a host while the host reports new endpoints: neither change is lost.

    The host's update runs inside the admin's, after the admin's read and before its
    write, so the admin's write carries the endpoints it read before they changed.
    """
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 1})
    a = api.ok("POST", "/v1/hosts", host_body("a"), token=key["token"])
    host_id = a["host"]["id"]
    store = service.deps.store
    raced: list[bool] = []

    class RacedStore(_Wrapper):
        def update_host(self, old, new, **outbox):
            if not raced:
                raced.append(True)
                service.hosts.update(host_id, endpoints=["198.18.0.77:51820"])  # the host, meanwhile
            return store.update_host(old, new, **outbox)

    monkeypatch.setattr(service.deps, "store", RacedStore(store))
    out = api.ok("PATCH", f"/v1/hosts/{host_id}", {"name": "renamed"})

    assert raced
    assert out["name"] == "renamed" and out["endpoints"] == ["198.18.0.77:51820"], out
    got = api.ok("GET", f"/v1/hosts/{host_id}")
    assert (got["name"], got["endpoints"]) == ("renamed", ["198.18.0.77:51820"])


# ------------------------------------------------------- enrollment key races
def test_a_key_revoked_after_the_check_still_refuses_the_registration(api, service, net, monkeypatch):
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "unlimited": True})
    _between_check_and_commit(service, monkeypatch, lambda: service.keys.revoke(key["id"]))

    code, out = api.call("POST", "/v1/hosts", host_body("late"), token=key["token"])

    assert code == 403 and out["error"]["message"] == "this enrollment key was revoked", out
    assert api.ok("GET", "/v1/hosts")["hosts"] == []
    assert service.deps.identity.networks == {}, "the certificate's broker access was withdrawn"


def test_a_key_that_expires_after_the_check_still_refuses_the_registration(api, service, net, monkeypatch):
    now = service.deps.clock.now()
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "expires_at": now + 60})
    monkeypatch.setattr(service.deps.clock, "now", lambda: now)

    def expire() -> None:
        monkeypatch.setattr(service.deps.clock, "now", lambda: now + 60)

    _between_check_and_commit(service, monkeypatch, expire)

    code, out = api.call("POST", "/v1/hosts", host_body("late"), token=key["token"])

    assert code == 403 and out["error"]["message"] == "this enrollment key has expired", out
    assert api.ok("GET", "/v1/hosts")["hosts"] == []


def test_the_last_use_taken_after_the_check_refuses_the_registration(api, service, net, monkeypatch):
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 1})
    stored = service.deps.store.get_enrollment_key(key["id"])
    other = host_body("first")
    _between_check_and_commit(service, monkeypatch, lambda: service.hosts.register(
        stored, name="first", wg_public_key=other["wg_public_key"], listen_port=51820,
        endpoints=[], csr_pem=other["csr_pem"]))

    code, out = api.call("POST", "/v1/hosts", host_body("late"), token=key["token"])

    assert code == 403 and out["error"]["message"] == "this enrollment key has no uses left", out
    assert [h["name"] for h in api.ok("GET", "/v1/hosts")["hosts"]] == ["first"]
    assert api.ok("GET", f"/v1/enrollment-keys/{key['id']}")["uses_left"] == 0


# --------------------------------------------------- broadcast before return
@dataclass
class _Burst:
    """Who is in flight, how often each caller tried the publish lease, what was published when."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    in_flight: set[int] = field(default_factory=set)
    lease_tries: dict[int, int] = field(default_factory=dict)
    published: list[tuple[int, bytes]] = field(default_factory=list)  # (monotonic ns, payload)


def test_every_concurrent_registration_is_broadcast_before_its_call_returns(api, service, net, monkeypatch):
    """Per call: the broadcast carrying its host was published before the call returned.

    Each publish is held until every other call still in flight has tried the publish
    lease once more (so it has committed and is waiting on the holder). A caller that
    returned while its change was still unpublished is then caught every time, not
    only when the scheduler happens to interleave so.
    """
    n = 8
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": n})
    burst = _Burst()
    store, publisher = service.deps.store, service.deps.publisher

    class CountingStore(_Wrapper):
        def acquire_publish_lease(self, *args, **kwargs):
            got = store.acquire_publish_lease(*args, **kwargs)
            with burst.cond:
                me = threading.get_ident()
                burst.lease_tries[me] = burst.lease_tries.get(me, 0) + 1
                burst.cond.notify_all()
            return got

    class HoldingPublisher(_Wrapper):
        def publish(self, topic, payload):
            me = threading.get_ident()
            with burst.cond:
                before = {t: burst.lease_tries.get(t, 0) for t in burst.in_flight if t != me}
                burst.cond.wait_for(lambda: all(t not in burst.in_flight or burst.lease_tries.get(t, 0) > c
                                                for t, c in before.items()), timeout=30)
            publisher.publish(topic, payload)
            with burst.cond:
                burst.published.append((time.monotonic_ns(), payload))

    monkeypatch.setattr(service.deps, "store", CountingStore(store))
    monkeypatch.setattr(service.deps, "publisher", HoldingPublisher(publisher))
    start = threading.Barrier(n, timeout=30)

    def register(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        with burst.cond:
            burst.in_flight.add(threading.get_ident())
        start.wait()
        try:
            reg = api.ok("POST", "/v1/hosts", body, token=key["token"])
            return reg, time.monotonic_ns()
        finally:
            with burst.cond:
                burst.in_flight.discard(threading.get_ident())
                burst.cond.notify_all()

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(register, [host_body(f"h{i}") for i in range(n)], timeout=120))

    first_published: dict[str, int] = {}
    for at, payload in burst.published:
        for member in protocol.decode(payload).upsert:
            first_published.setdefault(member.host_id, at)
    late = {reg["host"]["name"]: (first_published.get(reg["host"]["id"]), returned)
            for reg, returned in results
            if first_published.get(reg["host"]["id"], returned + 1) > returned}
    assert not late, f"calls returned before their host was broadcast (published, returned): {late}"
