"""On Lambda too (the app's own handler, through chalice.test), Chalice's answers are in our shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.memory_store  # about the API, not the database: no DynamoDB Local


def _shape(body: bytes) -> tuple[str, str]:
    payload: Any = json.loads(body)
    assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}, payload
    return payload["error"]["code"], payload["error"]["message"]


def test_wrong_method_is_405_with_allow(api):
    resp = api.client.http.delete("/v1/networks", headers={"Authorization": f"Bearer {api.admin_key}"})
    assert resp.status_code == 405
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == {"GET", "POST"}
    code, message = _shape(resp.body)
    assert code == "method_not_allowed" and "DELETE" in message and "/v1/networks" in message


def test_unsupported_content_type_is_415(api):
    resp = api.client.http.post("/v1/networks", body=b"name=office", headers={
        "Authorization": f"Bearer {api.admin_key}", "Content-Type": "multipart/form-data"})
    assert resp.status_code == 415
    code, message = _shape(resp.body)
    assert code == "unsupported_media_type" and "multipart/form-data" in message
