"""List routes come in pages (``?limit=&cursor=``): bounded answers whatever the fleet size,
every record exactly once along the cursor, and a 400 for a page request that cannot be served."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from chalicelib.domain import protocol
from chalicelib.service.ports import PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX

from .conftest import Api, host_body

pytestmark = pytest.mark.memory_store  # about the API, not the database: no DynamoDB Local

LISTS = {"hosts": "hosts", "networks": "networks", "enrollment-keys": "enrollment_keys"}
N = 7  # records of each kind: pages of 3 are 3, 3, 1


@pytest.fixture
def fleet(api: Api) -> dict[str, set[str]]:
    """N networks, N enrollment keys and N hosts; the ids of each, by route."""
    nets = [api.ok("POST", "/v1/networks", {"name": f"n{i}", "ipv4_cidr": f"100.64.{i}.0/24"})
            for i in range(N)]
    keys = [api.ok("POST", "/v1/enrollment-keys", {"networks": [nets[0]["id"]], "uses": N})
            for _ in range(N)]
    hosts = [api.ok("POST", "/v1/hosts", host_body(f"h{i}"), token=keys[0]["token"])["host"]
             for i in range(N)]
    return {"networks": {n["id"] for n in nets}, "enrollment-keys": {k["id"] for k in keys},
            "hosts": {h["id"] for h in hosts}}


def _walk(api: Api, route: str, limit: int) -> list[list[str]]:
    """The ids on each page, following next_cursor from the first page to the last."""
    pages: list[list[str]] = []
    query = f"?limit={limit}"
    while True:
        page = api.ok("GET", f"/v1/{route}{query}")
        assert set(page) == {LISTS[route], "next_cursor"}, page
        pages.append([item["id"] for item in page[LISTS[route]]])
        if page["next_cursor"] is None:
            return pages
        assert len(pages) <= N, "the cursor does not move on"
        query = f"?limit={limit}&cursor={page['next_cursor']}"


@pytest.mark.parametrize("route", LISTS)
def test_walking_the_cursor_lists_every_record_exactly_once(api: Api, fleet: dict[str, set[str]],
                                                           route: str) -> None:
    pages = _walk(api, route, 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    ids = [i for p in pages for i in p]
    assert len(ids) == len(set(ids)) == N, "no record twice"
    assert set(ids) == fleet[route]
    # A page that ends exactly at the last record says so: no empty page to fetch after it.
    assert [len(p) for p in _walk(api, route, N)] == [N]


def test_a_record_deleted_mid_walk_neither_breaks_nor_repeats_the_walk(api: Api,
                                                                       fleet: dict[str, set[str]]) -> None:
    first = api.ok("GET", "/v1/hosts?limit=3")
    last_on_page = first["hosts"][-1]["id"]
    api.ok("DELETE", f"/v1/hosts/{last_on_page}")  # the very record the cursor points after
    rest = api.ok("GET", f"/v1/hosts?limit=10&cursor={first['next_cursor']}")
    seen = [h["id"] for h in first["hosts"]] + [h["id"] for h in rest["hosts"]]
    assert len(seen) == len(set(seen)) == N and set(seen) == fleet["hosts"]
    assert rest["next_cursor"] is None


def test_without_limit_a_page_holds_the_default_and_the_rest_follows(api: Api, service: Any) -> None:
    net = api.ok("POST", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/24"})
    made = {service.keys.create(networks=[net["id"]], uses=1)[0].id for _ in range(PAGE_LIMIT_DEFAULT + 1)}
    first = api.ok("GET", "/v1/enrollment-keys")
    assert len(first["enrollment_keys"]) == PAGE_LIMIT_DEFAULT and first["next_cursor"]
    second = api.ok("GET", f"/v1/enrollment-keys?cursor={first['next_cursor']}")
    assert len(second["enrollment_keys"]) == 1 and second["next_cursor"] is None
    assert {k["id"] for k in first["enrollment_keys"] + second["enrollment_keys"]} == made
    fullest = api.ok("GET", f"/v1/enrollment-keys?limit={PAGE_LIMIT_MAX}")
    assert len(fullest["enrollment_keys"]) == PAGE_LIMIT_MAX


@pytest.mark.parametrize("route", LISTS)
@pytest.mark.parametrize("limit", ["0", "-1", str(PAGE_LIMIT_MAX + 1), "abc", "1.5", "", "true",
                                   "9" * 5000])
def test_a_limit_out_of_range_is_400(api: Api, route: str, limit: str) -> None:
    code, out = api.call("GET", f"/v1/{route}?limit={limit}", token=None)
    assert code == 401, "the query is looked at only after the admin key"
    code, out = api.call("GET", f"/v1/{route}?limit={limit}")
    assert code == 400, out
    assert out["error"]["code"] == "invalid_input" and "limit" in out["error"]["message"], out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _cursor(**key: Any) -> str:
    return _b64(json.dumps(key).encode())


@pytest.mark.parametrize("cursor", [
    "not*a*cursor",                                                  # outside the alphabet
    "abc",                                                           # base64, but not JSON
    _b64(b"[" * 300),                                                # JSON, deeply nested
    _cursor(kind="host", pk="HOST#host_abcd1234"),                   # a key without its sort key
    _cursor(kind="host", pk="HOST#host_abcd1234", sk="META", x=""),  # a key with more
    _cursor(kind="host", pk="HOST#host_" + "a" * 200, sk="META"),    # an id we never issue
    _cursor(kind="host", pk="HOST#host_abcd1234", sk=["META"]),      # not a string
    _cursor(kind="admin_key", pk="ADMIN#adm_abcd1234", sk="META"),   # another kind of record
    "A" * 600,                                                       # far too long
])
@pytest.mark.parametrize("route", LISTS)
def test_a_cursor_no_list_handed_out_is_400_saying_to_start_again(api: Api, route: str, cursor: str) -> None:
    code, out = api.call("GET", f"/v1/{route}?cursor={cursor}")
    assert code == 400, out
    assert out["error"]["code"] == "invalid_input", out
    assert "start the list again without cursor" in out["error"]["message"], out


def test_a_cursor_of_one_list_is_refused_by_the_others(api: Api, fleet: dict[str, set[str]]) -> None:
    for route in LISTS:
        cursor = api.ok("GET", f"/v1/{route}?limit=1")["next_cursor"]
        for other in set(LISTS) - {route}:
            code, out = api.call("GET", f"/v1/{other}?cursor={cursor}")
            assert code == 400 and "start the list again" in out["error"]["message"], (route, other, out)


def test_openapi_documents_limit_and_cursor_of_every_list(api: Api) -> None:
    doc = api.ok("GET", "/v1/openapi.json", token=None)
    for route, key in LISTS.items():
        op = doc["paths"][f"/v1/{route}"]["get"]
        params = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
        assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT_MAX,
                                             "default": PAGE_LIMIT_DEFAULT}
        assert params["cursor"]["schema"]["type"] == "string"
        assert params["cursor"]["schema"]["maxLength"] >= 100
        body = doc["components"]["schemas"][op["responses"]["200"]["content"]["application/json"]["schema"]
                                            ["$ref"].rsplit("/", 1)[1]]
        assert {key, "next_cursor"} <= set(body["properties"]) and "next_cursor" in body["required"]


class _SmallPages:
    """The real store, answering every list with pages of ``size`` (so a few hosts span several)."""

    def __init__(self, store: Any, size: int) -> None:
        self._store, self._size = store, size
        self.pages = 0

    def list_hosts(self, limit: int, cursor: str | None = None) -> Any:
        self.pages += 1
        return self._store.list_hosts(min(limit, self._size), cursor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_mark_offline_walks_every_page_of_hosts(api: Api, service: Any, fleet: dict[str, set[str]]) -> None:
    report = protocol.encode(protocol.StatusReport(agent_version="0.1.0"))
    for host_id in fleet["hosts"]:
        assert service.status.record(host_id, report)
    real = service.deps.store
    store = service.deps.store = _SmallPages(real, 2)
    now = service.deps.clock.now()
    service.deps.clock.now = lambda: now + service.deps.settings.offline_after + 1
    try:
        assert sorted(service.status.mark_offline()) == sorted(fleet["hosts"])
    finally:
        service.deps.store = real
    assert store.pages == 4  # 2 + 2 + 2 + 1
    assert not any(h["status"]["online"] for h in api.ok("GET", "/v1/hosts")["hosts"])
