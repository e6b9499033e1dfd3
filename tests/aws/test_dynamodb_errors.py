"""DynamoDB: what the table adapter does when AWS throttles, denies or has no table (botocore's
Stubber on the adapter's own clients; moto for the rest), and what each failed condition
means, evaluated by DynamoDB Local on the real conflicting state."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.adapters.dynamodb import DynamoStore, ensure_table
from chalicelib.adapters.dynamodb.table import table_definition
from chalicelib.domain.ids import EnrollmentKeyId, HostId, NetworkId
from chalicelib.domain.models import EnrollmentKey, Host, HostStatus, Network
from chalicelib.errors import NotFoundError, UnavailableError
from chalicelib.service.ports import (
    PAGE_LIMIT_MAX,
    AddressTakenError,
    KeyRefusedError,
    NetworkGoneError,
    PendingIdentity,
    PublicKeyTakenError,
    StaleWriteError,
)

from .conftest import REGION

TABLE = "skymesh-errors"


@pytest.fixture
def store(moto_aws: None) -> DynamoStore:
    boto3.client("dynamodb", region_name=REGION).create_table(**table_definition(TABLE))
    return DynamoStore(TABLE, endpoint_url=None, region=REGION)


def _client_of(model: Any) -> Any:
    """The botocore client an item class talks through."""
    return model._get_connection().connection.client


@pytest.fixture
def host_stub(store: DynamoStore) -> Iterator[Stubber]:
    with Stubber(_client_of(store._items.host)) as stub:
        yield stub
        stub.assert_no_pending_responses()


def test_clients_retry_throttling_before_giving_up(store: DynamoStore) -> None:
    """On AWS, botocore retries throttled calls (standard mode) before the adapter sees them."""
    retries = _client_of(store._items.host).meta.config.retries
    assert retries["mode"] == "standard" and retries["total_max_attempts"] >= 3


def test_throttling_that_outlasts_the_retries_is_unavailable(store: DynamoStore, host_stub: Stubber) -> None:
    host_stub.add_client_error("get_item", "ProvisionedThroughputExceededException",
                               "The level of configured provisioned throughput for the table was exceeded",
                               400)
    with pytest.raises(UnavailableError) as info:
        store.get_host("host_a")
    assert info.value.status == 503
    assert "ProvisionedThroughputExceeded" in info.value.message


def test_missing_table_is_unavailable_and_says_so(moto_aws: None) -> None:
    store = DynamoStore("no-such-table", endpoint_url=None, region=REGION)
    with pytest.raises(UnavailableError) as info:
        store.get_host("host_a")
    assert info.value.status == 503
    assert "ResourceNotFoundException" in info.value.message or "not found" in info.value.message


def test_access_denied_is_unavailable_with_aws_message(store: DynamoStore, host_stub: Stubber) -> None:
    host_stub.add_client_error("get_item", "AccessDeniedException",
                               "User: arn:aws:sts::1:assumed-role/x is not authorized to perform: "
                               "dynamodb:GetItem", 400)
    with pytest.raises(UnavailableError, match="dynamodb:GetItem"):
        store.get_host("host_a")


# ------------------------------------------- conditions, evaluated by DynamoDB Local
NET = NetworkId("net_a")
NOW = 1_000_000


@pytest.fixture
def local_store(ddb_endpoint: str) -> DynamoStore:
    """A store on its own table in DynamoDB Local, with one network."""
    table = f"skymesh-cond-{uuid.uuid4().hex[:12]}"
    ensure_table(table, ddb_endpoint, REGION)
    store = DynamoStore(table, endpoint_url=ddb_endpoint, region=REGION)
    store.create_network(Network(NET, "n", "100.64.0.0/24", "fd00:64::/64"), store.network_registry().version)
    return store


def _key(store: DynamoStore, uses: int | None = 5, expires_at: int | None = None) -> EnrollmentKey:
    key = EnrollmentKey(EnrollmentKeyId(f"ek_{uuid.uuid4().hex[:8]}"), (NET,), "hash", uses_total=uses,
                        uses_left=uses, expires_at=expires_at, unlimited=uses is None and expires_at is None)
    store.put_enrollment_key(key)
    return key


def _host(n: int, public_key: str | None = None, address: tuple[str, str] | None = None) -> Host:
    return Host(id=HostId(f"host_{n}"), name=f"h{n}", public_key=public_key or f"{n:043d}=",
                listen_port=51820, endpoints=(),
                addresses={NET: address or (f"100.64.0.{n}", f"fd00:64::{n}")}, revision=1)


def _items(store: DynamoStore) -> list[dict]:
    """Every item of the store's table, in key order (a consistent scan)."""
    client = _client_of(store._items.host)
    table = store._items.host.Meta.table_name
    items = [i for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
             for i in page["Items"]]
    return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))


def test_a_status_report_for_a_missing_host_is_dropped_and_creates_nothing(local_store: DynamoStore) -> None:
    assert local_store.record_host_status("host_gone", HostStatus(online=True, last_seen=1)) is False
    assert local_store.get_host("host_gone") is None
    assert local_store.list_hosts(PAGE_LIMIT_MAX, None).items == ()


def test_a_publish_lease_is_held_by_one_owner_until_it_expires(local_store: DynamoStore) -> None:
    assert local_store.acquire_publish_lease(NET, "other", now=NOW, ttl=30) is True
    assert local_store.acquire_publish_lease(NET, "me", now=NOW + 29, ttl=30) is False
    local_store.release_publish_lease(NET, "me")  # not mine: changes nothing
    assert local_store.acquire_publish_lease(NET, "me", now=NOW + 29, ttl=30) is False
    with pytest.raises(StaleWriteError, match="lease was lost"):
        local_store.advance_seq(NET, "me")
    assert local_store.acquire_publish_lease(NET, "me", now=NOW + 31, ttl=30) is True  # a dead holder's
    assert local_store.advance_seq(NET, "me").seq == 1
    local_store.release_publish_lease(NET, "me")
    assert local_store.acquire_publish_lease(NET, "other", now=NOW + 32, ttl=30) is True
    assert local_store.acquire_publish_lease("net_missing", "me", now=NOW, ttl=30) is False


def _register(store: DynamoStore, host: Host, key: EnrollmentKey, now: int) -> None:
    """As the service registers: the pending identity first, then the transaction that commits it."""
    store.begin_identity(PendingIdentity(host.id, now))
    store.register_host(host, key, now)


def _registered(store: DynamoStore) -> tuple[Host, EnrollmentKey]:
    key = _key(store)
    first = _host(1)
    _register(store, first, key, NOW)
    return first, replace(key, uses_left=4)


@pytest.mark.parametrize("conflict, expected, message", [
    ("same public key", PublicKeyTakenError, "already used by another host"),
    ("same ipv4", AddressTakenError, "100.64.0.1 in net_a is taken"),
    ("same ipv6", AddressTakenError, "fd00:64::1 in net_a is taken"),
    ("same host id", StaleWriteError, "host id collision"),
    ("network being deleted", NetworkGoneError, "net_a was deleted or is being deleted"),
    ("key revoked", KeyRefusedError, "this enrollment key was revoked"),
    ("key used up", KeyRefusedError, "this enrollment key has no uses left"),
    ("key expired", KeyRefusedError, "this enrollment key has expired"),
    ("key deleted", KeyRefusedError, "this enrollment key was deleted"),
])
def test_a_registration_refused_by_a_condition_says_which_and_writes_nothing(
        local_store: DynamoStore, conflict: str, expected: type[Exception], message: str) -> None:
    store = local_store
    first, key = _registered(store)
    second = _host(2)
    setups: dict[str, Callable[[], Host]] = {
        "same public key": lambda: replace(second, public_key=first.public_key),
        "same ipv4": lambda: replace(second, addresses={NET: ("100.64.0.1", "fd00:64::2")}),
        "same ipv6": lambda: replace(second, addresses={NET: ("100.64.0.2", "fd00:64::1")}),
        "same host id": lambda: replace(second, id=first.id),
        "network being deleted": lambda: (store.mark_network_deleting(NET), second)[1],
        "key revoked": lambda: (store.revoke_enrollment_key(key.id), second)[1],
        "key used up": lambda: second,
        "key expired": lambda: second,
        "key deleted": lambda: second,
    }
    candidate = setups[conflict]()
    if conflict == "key used up":
        key = _key(store, uses=1)
        _register(store, _host(3), key, NOW)
    elif conflict == "key expired":
        key = _key(store, uses=None, expires_at=NOW + 60)
    elif conflict == "key deleted":
        key = replace(key, id=EnrollmentKeyId("ek_never"))
    store.begin_identity(PendingIdentity(candidate.id, NOW + 60))
    before = _items(store)

    with pytest.raises(expected, match=message):
        store.register_host(candidate, key, NOW + 60)

    assert _items(store) == before, "a refused registration writes nothing (no use, claim, host or member)"


def test_a_host_update_refused_by_a_condition_says_which_and_writes_nothing(
        local_store: DynamoStore) -> None:
    store = local_store
    first, key = _registered(store)
    second = _host(2)
    _register(store, second, key, NOW)
    current = store.get_host(first.id)

    with pytest.raises(PublicKeyTakenError):  # another host's key: its claim stays its own
        store.update_host(current, replace(current, public_key=second.public_key, revision=2))
    with pytest.raises(StaleWriteError, match="host changed meanwhile"):  # a stale read
        store.update_host(replace(current, revision=0), replace(current, name="stale", revision=1))
    with pytest.raises(StaleWriteError, match="host changed meanwhile"):
        store.delete_host(replace(current, revision=0))
    assert store.get_host(first.id) == current
    assert {m.public_key for m in store.network_snapshot(NET)[1]} == {first.public_key, second.public_key}

    store.update_host(current, replace(current, public_key="K" * 43 + "=", revision=2))
    with pytest.raises(PublicKeyTakenError):  # the new key is claimed now, the old one freed
        _register(store, _host(4, public_key="K" * 43 + "="), key, NOW)
    _register(store, _host(5, public_key=first.public_key), key, NOW)


def test_leaving_a_network_on_a_stale_read_is_refused_and_changes_nothing(local_store: DynamoStore) -> None:
    store = local_store
    first, _ = _registered(store)
    before = _items(store)
    with pytest.raises(StaleWriteError, match="host changed meanwhile"):
        store.remove_host_from_network(replace(first, revision=0), NET)
    assert _items(store) == before


def test_a_network_with_members_is_not_deleted_and_a_deleted_one_leaves_nothing(
        local_store: DynamoStore) -> None:
    store = local_store
    first, _ = _registered(store)  # a member, and its change still pending
    with pytest.raises(StaleWriteError, match="still has members"):
        store.delete_network(NET, store.network_registry().version)
    assert store.get_network(NET) is not None

    store.remove_host_from_network(first, NET)
    store.delete_network(NET, store.network_registry().version)
    assert [i for i in _items(store) if i["pk"]["S"].startswith("NET#")] == [], "nothing of it is left"
    assert store.network_registry().entries == ()
    with pytest.raises(NotFoundError):  # a second delete (a concurrent one) finds nothing to delete
        store.delete_network(NET, store.network_registry().version)
    with pytest.raises(NotFoundError):
        store.mark_network_deleting(NET)
