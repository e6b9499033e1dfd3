"""A server that starts under load makes its DynamoDB clients once, before its first request.

PynamoDB makes a client per item class lazily, in a botocore session per thread and without
a lock: 100 agents retrying against a freshly restarted local API had every request thread
build its own clients (minutes of CPU; every call timed out). ``DynamoStore.warm`` makes
them in one thread, and the threads that serve requests then share them.
"""

from __future__ import annotations

import threading
import uuid

from chalicelib.adapters.dynamodb import DynamoStore, ensure_table

REGION = "us-east-1"


def test_after_warm_every_thread_uses_the_same_clients(ddb_endpoint: str, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    table = f"skymesh-warm-{uuid.uuid4().hex[:12]}"
    ensure_table(table, ddb_endpoint, REGION)
    store = DynamoStore(table, endpoint_url=ddb_endpoint, region=REGION)
    store.warm()
    clients = {name: cls._get_connection().connection._client for name, cls in vars(store._items).items()}
    assert all(clients.values()), "warm made every item class's client"

    seen: list[object] = []

    def serve() -> None:  # what a request thread does: read, then look at the client it used
        store.get_network("net_none")
        seen.append(store._items.network._get_connection().connection._client)

    threads = [threading.Thread(target=serve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen == [clients["network"]] * 8, "request threads made clients of their own"
