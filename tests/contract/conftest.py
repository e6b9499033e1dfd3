"""Contract tests: every implementation of the ``Store`` port, held to the same tests.

A test here takes ``backend`` and runs once per store: the DynamoDB store on its own
table in DynamoDB Local, and the in-memory store. Besides the store, a backend can
show everything it holds (``contents``), so a test can check that a refused write
changed nothing at all, not only what the port lets it read back.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.adapters.dynamodb import DynamoStore, ensure_table
from chalicelib.adapters.memory_store import MemoryStore
from chalicelib.service.ports import Store

REGION = "us-east-1"


@dataclass(frozen=True)
class Backend:
    name: str
    store: Store
    contents: Callable[[], Any]  # everything stored, comparable with ==
    leftovers: Callable[[str], list[Any]]  # whatever is still stored under a network


def _dynamo(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Backend:
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    table = f"skymesh-contract-{uuid.uuid4().hex[:12]}"
    ensure_table(table, endpoint, REGION)
    store = DynamoStore(table, endpoint_url=endpoint, region=REGION)
    client = store._items.host._get_connection().connection.client

    def contents() -> list[dict]:
        """Every item of the table, in key order (a consistent scan)."""
        items = [i for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
                 for i in page["Items"]]
        return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))

    return Backend("dynamodb", store, contents,
                   lambda network_id: [i for i in contents() if i["pk"]["S"] == f"NET#{network_id}"])


def _memory() -> Backend:
    store = MemoryStore()

    def contents() -> dict[str, Any]:
        # A lookup may leave an empty per-network dict behind: that stores nothing.
        state = {k: v for k, v in vars(store).items() if k != "_lock"}
        return copy.deepcopy({k: {n: d for n, d in v.items() if d} if isinstance(v, dict) else v
                              for k, v in state.items()})

    def leftovers(network_id: str) -> list[Any]:
        state = contents()
        return [x for x in (state["_networks"].get(network_id), state["_members"].get(network_id),
                            state["_clients"].get(network_id), state["_pending"].get(network_id),
                            state["_deltas"].get(network_id)) if x] + \
               [c for c in state["_address_claims"] if c[0] == network_id]

    return Backend("memory", store, contents, leftovers)


@pytest.fixture(params=["dynamodb", "memory"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Backend:
    if request.param == "dynamodb":
        return _dynamo(request.getfixturevalue("ddb_endpoint"), monkeypatch)
    return _memory()
