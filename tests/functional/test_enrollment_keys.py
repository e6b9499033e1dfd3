from __future__ import annotations

import pytest

from .conftest import host_body

pytestmark = pytest.mark.memory_store  # about the API, not the database: no DynamoDB Local


@pytest.fixture
def net(api):
    return api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/16"})


def test_token_is_shown_once_and_stored_hashed(api, service, net):
    key = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 3,
                                                 "tags": ["office"]})
    assert key["token"].startswith("skm_ek_") and key["uses_left"] == 3 and key["usable"]
    listed = api.ok("GET", "/v1/enrollment-keys")["enrollment_keys"]
    assert [k["id"] for k in listed] == [key["id"]] and "token" not in listed[0]
    stored = service.deps.store.get_enrollment_key(key["id"])
    assert key["token"].split("_", 4)[-1] not in repr(stored)


@pytest.mark.parametrize("body, message", [
    ({}, "say how long the key lives"),
    ({"unlimited": True, "uses": 3}, "cannot be combined"),
    ({"uses": 0}, "out of range"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, "in the past"),
    ({"uses": "many"}, "uses"),
])
def test_bad_key_requests_are_400(api, net, body, message):
    code, out = api.call("POST", "/v1/enrollment-keys", {"networks": [net["id"]], **body})
    assert code == 400 and message in out["error"]["message"], out


def test_unknown_network_is_404(api):
    code, out = api.call("POST", "/v1/enrollment-keys", {"networks": ["net_nope"], "uses": 1})
    assert code == 404 and "net_nope" in out["error"]["message"]


def test_revoked_expired_and_used_up_keys_are_refused_with_the_reason(api, service, net):
    used = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 1})
    api.ok("POST", "/v1/hosts", host_body("a"), token=used["token"])
    code, out = api.call("POST", "/v1/hosts", host_body("b"), token=used["token"])
    assert code == 403 and "no uses left" in out["error"]["message"]

    revoked = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "unlimited": True})
    api.ok("DELETE", f"/v1/enrollment-keys/{revoked['id']}")
    code, out = api.call("POST", "/v1/hosts", host_body("c"), token=revoked["token"])
    assert code == 403 and "revoked" in out["error"]["message"]
    assert api.ok("GET", f"/v1/enrollment-keys/{revoked['id']}")["usable"] is False

    now = service.deps.clock.now()
    soon = api.ok("POST", "/v1/enrollment-keys", {"networks": [net["id"]], "expires_at": now + 60})
    service.deps.clock.now = lambda: now + 61  # type: ignore[method-assign]
    code, out = api.call("POST", "/v1/hosts", host_body("d"), token=soon["token"])
    assert code == 403 and "expired" in out["error"]["message"]

    code, out = api.call("POST", "/v1/hosts", host_body("e"), token=used["token"][:-3] + "abc")
    assert code == 401 and "unknown enrollment token" in out["error"]["message"]
    code, out = api.call("POST", "/v1/hosts", host_body("e"), token=None)
    assert code == 401 and "Authorization: Bearer" in out["error"]["message"]
