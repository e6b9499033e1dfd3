"""One decorator per route: authentication, body parsing, error mapping, OpenAPI metadata.

>>> api = Api("networks")                                      # doctest: +SKIP
>>> @api.route("/v1/networks", "POST", auth=ADMIN, body=NetworkCreate,
...            response=Network, status=201, summary="Create a network")
... def create(call: Call) -> Network: ...
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalice import Blueprint, Response
from pydantic import BaseModel, ValidationError

from ..domain import validate
from ..domain.ids import ID_PREFIXES, is_id
from ..errors import InvalidInputError, NotFoundError, SkymeshError
from ..service import Service
from ..wiring import get_service

log = logging.getLogger("skymesh.api")

ADMIN, HOST, ENROLLMENT, ADMIN_OR_HOST, PUBLIC = "admin", "host", "enrollment", "admin_or_host", None
MEMBER = "member"  # issue 11: any host's own token (no host id in the path); the use case checks membership
MAX_BODY = 64 * 1024
# Path parameters that name a record, and the kind of id each one takes.
PATH_IDS = {"network_id": ("network", "network"), "key_id": ("enrollment_key", "enrollment key"),
            "host_id": ("host", "host"), "client_id": ("client", "client"),
            "relay_host_id": ("host", "host"),  # issue 10
            "group_id": ("group", "gateway group")}  # issue 11


@dataclass(frozen=True)
class RouteSpec:
    path: str
    method: str
    summary: str
    auth: str | None
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    query: tuple[tuple[str, str], ...] = ()
    tag: str = ""
    query_model: type[BaseModel] | None = None  # typed query parameters, parsed into ``Call.args``


@dataclass
class Call:
    """What a handler gets: the service, the parsed body, path/query parameters, the caller."""

    service: Service
    body: Any
    params: dict[str, str]
    query: dict[str, str]
    token: str | None
    source_ip: str | None
    caller: Any = None  # the AdminKey, Host or EnrollmentKey that authenticated
    args: Any = None  # the query parameters as the route's ``query_model``, once authenticated

    @property
    def is_admin(self) -> bool:
        from ..domain.models import AdminKey
        return isinstance(self.caller, AdminKey)


def json_response(status: int, payload: Any) -> Response:
    return Response(body=json.dumps(payload, separators=(",", ":"), default=str),
                    status_code=status, headers={"Content-Type": "application/json"})


def error_response(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}})


_JSON_TYPES = {bool: "a JSON boolean", str: "a string", float: "a fractional number", int: "a number",
               list: "an array", dict: "an object", type(None): "null"}


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False)[:5]:
        where = ".".join(str(x) for x in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "is not a known field"
        elif err["type"].endswith("_type") and type(err["input"]) in _JSON_TYPES:
            # Strict types: say what was sent, e.g. `true` where a port was expected.
            msg = f"{msg}, not {_JSON_TYPES[type(err['input'])]}"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def _bearer(headers: Any) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Api:
    """A Chalice blueprint whose routes also describe themselves for OpenAPI."""

    def __init__(self, import_name: str, tag: str) -> None:
        self.blueprint = Blueprint(import_name)
        self.tag = tag
        self.specs: list[RouteSpec] = []

    def route(self, path: str, method: str, *, summary: str, auth: str | None,
              body: type[BaseModel] | None = None, response: type[BaseModel] | None = None,
              status: int = 200, query: tuple[tuple[str, str], ...] = (),
              query_model: type[BaseModel] | None = None) -> Callable:
        unknown = set(re.findall(r"{(\w+)}", path)) - PATH_IDS.keys()
        if unknown:  # every path parameter is an id whose shape is checked before use
            raise ValueError(f"{path}: add {sorted(unknown)} to PATH_IDS")
        spec = RouteSpec(path, method, summary, auth, body, response, status, query, self.tag, query_model)
        self.specs.append(spec)

        def decorate(fn: Callable[[Call], Any]) -> Callable:
            target = fn if query_model is None else _with_query(query_model, fn)

            def view(**params: str) -> Response:
                return self._handle(spec, target, params)
            view.__name__ = fn.__name__
            view.__doc__ = fn.__doc__
            self.blueprint.route(path, methods=[method], content_types=[
                "application/json", "application/x-www-form-urlencoded", "text/plain"])(view)
            return fn
        return decorate

    def _handle(self, spec: RouteSpec, fn: Callable[[Call], Any], params: dict[str, str]) -> Response:
        request = self.blueprint.current_request
        try:
            service = get_service()
            call = Call(
                service=service,
                body=None,
                params=params,
                query=dict(request.query_params or {}),
                token=_bearer(request.headers),
                source_ip=((request.context or {}).get("identity") or {}).get("sourceIp"),
            )
            # Who calls comes first: without valid credentials nothing else is looked at.
            call.caller = self._authenticate(spec, call)
            self._check_path_ids(params)
            call.body = self._parse_body(spec, request.raw_body)
            result = fn(call)
            if result is None:
                return Response(body="", status_code=204)
            if isinstance(result, Response):  # a body that is no JSON (a client's file, a QR code)
                return result
            if isinstance(result, BaseModel):
                return json_response(spec.status, result.model_dump(mode="json"))
            return json_response(spec.status, result)
        except SkymeshError as e:
            return error_response(e.status, e.code, e.message)
        except Exception:  # a bug: say so without leaking details, keep the trace in the log
            log.exception("unhandled error in %s %s", spec.method, spec.path)
            return error_response(500, "internal", "internal error; it was logged")

    @staticmethod
    def _parse_body(spec: RouteSpec, raw: bytes | str | None) -> Any:
        if spec.body is None:
            return None
        if isinstance(raw, str):  # Chalice types raw_body as str | bytes; the size limit is in bytes
            raw = raw.encode()
        if not raw:
            raise InvalidInputError("this call needs a JSON object body")
        if len(raw) > MAX_BODY:
            raise InvalidInputError(f"body is larger than {MAX_BODY} bytes")
        data = validate.json_document(raw)
        if not isinstance(data, dict):
            raise InvalidInputError("body must be a JSON object")
        try:
            return spec.body.model_validate(data)
        except ValidationError as e:
            raise InvalidInputError(_validation_message(e)) from None

    @staticmethod
    def _check_path_ids(params: dict[str, str]) -> None:
        """404 for an id that no record can have, before any database call."""
        for name, value in params.items():
            kind, what = PATH_IDS[name]
            if not is_id(kind, value):
                raise NotFoundError(f"no {what} has the id {validate.quoted(value)}: {what} ids are "
                                    f"{ID_PREFIXES[kind]}_ and 4-40 lowercase letters or digits")

    @staticmethod
    def _authenticate(spec: RouteSpec, call: Call) -> Any:
        auth = call.service.auth
        if spec.auth == ADMIN:
            return auth.admin(call.token)
        if spec.auth == HOST:
            return auth.host(call.token, call.params["host_id"])
        if spec.auth == ENROLLMENT:
            return auth.enrollment(call.token)
        if spec.auth == MEMBER:
            return auth.any_host(call.token)
        if spec.auth == ADMIN_OR_HOST:
            if call.token and call.token.startswith("skm_ht_"):
                return auth.host(call.token, call.params["host_id"])
            return auth.admin(call.token)
        return None


def _with_query(model: type[BaseModel], fn: Callable[[Call], Any]) -> Callable[[Call], Any]:
    """``fn`` with ``call.args`` parsed from the query string; a bad parameter is a 400."""
    def parsed(call: Call) -> Any:
        try:
            call.args = model.model_validate(call.query)
        except ValidationError as e:
            raise InvalidInputError(f"query parameters: {_validation_message(e)}") from None
        return fn(call)
    return parsed


def query_flag(call: Call, name: str) -> bool:
    value = call.query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise InvalidInputError(f"query parameter {name} must be true or false")
    return value in ("true", "1", "yes")
