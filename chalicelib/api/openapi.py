"""The OpenAPI 3.1 document, generated from the routes and their pydantic models."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..domain.ids import id_pattern
from . import schemas
from .endpoints import ADMIN, ADMIN_OR_HOST, ENROLLMENT, HOST, MEMBER, PATH_IDS, RouteSpec

_SECURITY: dict[str | None, list[dict[str, list[str]]]] = {
    ADMIN: [{"adminKey": []}],
    HOST: [{"hostToken": []}],
    MEMBER: [{"hostToken": []}],
    ENROLLMENT: [{"enrollmentToken": []}],
    ADMIN_OR_HOST: [{"adminKey": []}, {"hostToken": []}],
}

_ERRORS = {
    "400": "Invalid input; the message says what to fix",
    "401": "Missing or unknown token",
    "403": "Token valid but not allowed (e.g. used-up enrollment key)",
    "404": "No such record",
    "409": "Conflicts with the current state",
    "503": "A dependency (the database, the broker) did not answer in time; retry",
}


def build(specs: Iterable[RouteSpec], *, version: str) -> dict[str, Any]:
    specs = list(specs)
    models: set[type[BaseModel]] = {schemas.Error}
    for sp in specs:
        models.update(m for m in (sp.body, sp.response) if m is not None)
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for sp in specs:
        op: dict[str, Any] = {
            "summary": sp.summary,
            "operationId": _operation_id(sp),
            "tags": [sp.tag],
            "responses": {},
        }
        params = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "string", "pattern": id_pattern(PATH_IDS[p][0])}}
                  for p in re.findall(r"{(\w+)}", sp.path)]
        params += [{"name": q, "in": "query", "required": False, "description": d,
                    "schema": {"type": "string"}} for q, d in sp.query]
        if sp.query_model is not None:
            params += _query_parameters(sp.query_model)
        if params:
            op["parameters"] = params
        if sp.auth in _SECURITY:
            op["security"] = _SECURITY[sp.auth]
        if sp.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{sp.body.__name__}"}}}}
        ok: dict[str, Any] = {"description": "Success"}
        if sp.response is not None:
            ok["content"] = {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{sp.response.__name__}"}}}
        op["responses"][str(sp.status)] = ok
        for code, text in _ERRORS.items():
            op["responses"][code] = {"description": text, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}
        paths.setdefault(sp.path, {})[sp.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "skymesh", "version": version,
                 "description": "Serverless WireGuard mesh control plane, REST API v1"},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                name: {"type": "http", "scheme": "bearer", "description": desc}
                for name, desc in (("adminKey", "admin key (skm_ak_...)"),
                                   ("hostToken", "host token (skm_ht_...), own host only"),
                                   ("enrollmentToken", "enrollment token (skm_ek_...)"))
            },
        },
    }


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One OpenAPI query parameter per field of ``model``, with the rules the route enforces."""
    schema = model.model_json_schema(mode="validation")
    out = []
    for name, prop in schema["properties"].items():
        # ``str | None`` is a parameter that may be left out: its schema is the ``str`` part, plus
        # what the field adds beside ``anyOf`` (its ``json_schema_extra``).
        [value] = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
        rules = {**value, **prop}
        for k in ("anyOf", "title", "description"):
            rules.pop(k, None)
        if rules.get("default", "") is None:
            rules.pop("default")
        out.append({"name": name, "in": "query", "required": name in schema.get("required", ()),
                    "description": prop.get("description", ""), "schema": rules})
    return out


def _operation_id(sp: RouteSpec) -> str:
    words = [w for w in re.split(r"[/{}\-]+", sp.path) if w and w != "v1"]
    return sp.method.lower() + "".join(w.title().replace("_", "") for w in words)


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    from . import ALL
    from .meta import VERSION
    return build((sp for a in ALL for sp in a.specs), version=VERSION)
