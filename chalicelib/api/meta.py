"""/v1/openapi.json and /v1/health"""

from __future__ import annotations

from typing import Any

from .endpoints import PUBLIC, Api, Call

VERSION = "0.1.0"
api = Api(__name__, "meta")


@api.route("/v1/openapi.json", "GET", auth=PUBLIC, summary="This API as an OpenAPI 3 document")
def openapi(call: Call) -> dict[str, Any]:
    from .openapi import document
    return document()


@api.route("/v1/health", "GET", auth=PUBLIC, summary="Liveness")
def health(call: Call) -> dict[str, Any]:
    return {"ok": True, "version": VERSION}
