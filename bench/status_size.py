"""What one host's status report does to its host record and to ``GET /v1/hosts``.

Runs the app in-process on an in-memory DynamoDB Local (as the functional tests do),
registers one host, hands ``host_report`` hostile reports as the IoT rule would (the
parsed JSON plus the topic's host id), and prints for each: whether it was recorded,
the host item's size by DynamoDB's rules, and the bytes of ``GET /v1/hosts``.

    python bench/status_size.py
"""

from __future__ import annotations

import base64
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import dynamodb_local, host_body, summary  # noqa: E402


def wg_key(i: int) -> str:
    return base64.b64encode(i.to_bytes(32, "big")).decode()


def reports() -> dict[str, dict[str, Any]]:
    base = {"v": 1, "type": "status", "agent_version": "0.1.0"}
    return {
        # ~390 KB of JSON: local Mosquitto passes it; what the issue saw
        "1000 peers, 340-char keys": {**base, "peers": [
            {"key": f"{i:04d}" + "k" * 336, "handshake_age": 1, "rx": 1, "tx": 1} for i in range(1000)]},
        # below AWS IoT's 128 KB message limit: possible on AWS too
        "1000 peers, 60-char keys (<128 KB)": {**base, "peers": [
            {"key": f"{i:04d}" + "k" * 56, "handshake_age": 1, "rx": 1, "tx": 1} for i in range(1000)]},
        # the largest report inside the new bounds
        "256 peers, 8 longest endpoints": {**base, "agent_version": "v" * 64,
            "endpoints": [f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 57}{i}:65535" for i in range(8)],
            "peers": [{"key": wg_key(2**255 - i), "handshake_age": 2**32 - 1, "rx": 2**64 - 1 - i,
                       "tx": 2**64 - 1 - i} for i in range(256)]},
    }


def main() -> None:
    import boto3
    from chalice.test import Client

    with dynamodb_local() as endpoint:
        table = f"skymesh-bench-{uuid.uuid4().hex[:8]}"
        os.environ.update({"SKYMESH_TABLE": table, "SKYMESH_DYNAMODB_ENDPOINT": endpoint,
                           "SKYMESH_PUBLISHER": "memory", "SKYMESH_IDENTITY": "memory",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "local",
                           "AWS_SECRET_ACCESS_KEY": "local"})
        import app as app_module
        from chalicelib.adapters.dynamodb import ensure_table
        from chalicelib.adapters.dynamodb.size import item_size
        from chalicelib.wiring import get_service

        ensure_table(table, endpoint, "us-east-1")
        admin = get_service().ensure_admin_key()
        items = boto3.resource("dynamodb", endpoint_url=endpoint, region_name="us-east-1").Table(table)
        with Client(app_module.app, project_dir=str(Path(__file__).parent)) as client:
            def call(method: str, path: str, body: Any = None, token: str = admin) -> Any:
                r = getattr(client.http, method)(path, body=None if body is None else json.dumps(body),
                                                 headers={"Authorization": f"Bearer {token}",
                                                          "Content-Type": "application/json"})
                return r

            net = json.loads(call("post", "/v1/networks", {"name": "n", "ipv4_cidr": "100.64.0.0/24"}).body)
            key = json.loads(call("post", "/v1/enrollment-keys", {"networks": [net["id"]], "uses": 9}).body)
            host = json.loads(call("post", "/v1/hosts", host_body("h1", "198.18.0.1:51820")[0],
                                   token=key["token"]).body)["host"]
            rows = {}
            for name, report in reports().items():
                try:
                    recorded = app_module.host_report({**report, "host_id": host["id"]}, None)["recorded"]
                except Exception as e:  # noqa: BLE001 - the old handler raised for some
                    recorded = f"raised {type(e).__name__}"
                item = items.get_item(Key={"pk": f"HOST#{host['id']}", "sk": "META"},
                                      ConsistentRead=True)["Item"]
                listing = call("get", "/v1/hosts").body
                rows[name] = {"report_json_bytes": len(json.dumps(report)), "recorded": recorded,
                              "host_item_bytes": item_size(item), "get_hosts_bytes": len(listing)}
                print(f"{name:40} {rows[name]}")
        summary("status_size", **{f"report_{i}": v for i, v in enumerate(rows.values(), 1)})


if __name__ == "__main__":
    main()
