"""Chalice's own error answers, rewritten into our one error shape.

Chalice answers some requests itself, before or around our handlers
(``endpoints.Api._handle``): a method the path does not have (405, with ``Allow``), a
``Content-Type`` the route does not accept (415), a binary response the request's
``Accept`` does not match (400), an exception that escaped a view (500). Its bodies
are ``{"Code", "Message"}``; :func:`chalice_errors_in_our_shape` (an ``http``
middleware registered in ``app.py``) turns them into ``{"error": {"code", "message"}}``
in one place, on Lambda and in local mode alike.

Requests that never reach the function are answered elsewhere in the same shape: on
AWS by API Gateway's gateway responses (``infra/stack.py``), in local mode by the
local server (``skymesh/local/api.py``), both with :data:`NO_ROUTE_MESSAGE`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from chalice import Response

from .endpoints import error_response

__all__ = ["chalice_errors_in_our_shape", "NO_ROUTE_CODE", "NO_ROUTE_MESSAGE", "no_route_message",
           "ACCEPTED_CONTENT_TYPE"]

log = logging.getLogger("skymesh.api")

NO_ROUTE_CODE = "not_found"
NO_ROUTE_MESSAGE = "no such path or method; GET /v1/openapi.json lists every path and its methods"
ACCEPTED_CONTENT_TYPE = "application/json"


def no_route_message(method: str, path: str) -> str:
    """The message for a path the API does not have (the local server names the request)."""
    return f"{method} {path}: {NO_ROUTE_MESSAGE}"


def _snake(chalice_code: str) -> str:
    base = chalice_code[:-len("Error")] if chalice_code.endswith("Error") else chalice_code
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower() or "error"


def _rewrite(request: Any, response: Response) -> Response:
    chalice_code = str(response.body["Code"])
    status = response.status_code
    headers = dict(response.headers)  # keeps Allow (405) and CORS headers
    method = getattr(request, "method", "?")
    path = ((getattr(request, "context", None) or {}).get("path")
            or getattr(request, "path", None) or "?")
    if status == 405:
        allowed = headers.get("Allow", "")
        code, message = "method_not_allowed", f"{method} is not allowed on {path}; allowed: {allowed}"
    elif status == 415:
        sent = (getattr(request, "headers", None) or {}).get("content-type", "")
        code, message = ("unsupported_media_type",
                         f"Content-Type {sent!r} is not accepted; send the body as {ACCEPTED_CONTENT_TYPE}")
    elif status >= 500:
        code, message = "internal", "internal error; it was logged"
    else:
        code, message = _snake(chalice_code), str(response.body.get("Message", ""))
    ours = error_response(status, code, message)
    ours.headers = {**{k: v for k, v in headers.items() if k.lower() != "content-type"},
                    **ours.headers}
    return ours


def _is_chalice_error(response: Any) -> bool:
    body = getattr(response, "body", None)
    return (isinstance(response, Response) and response.status_code >= 400
            and isinstance(body, dict) and set(body) == {"Code", "Message"})


def chalice_errors_in_our_shape(request: Any, get_response: Callable[[Any], Response]) -> Response:
    """Chalice ``http`` middleware: pass our responses through, rewrite Chalice's error bodies.

    An exception that escapes (Chalice would answer its own 500 shape) is logged and
    answered as ``internal`` too.
    """
    try:
        response = get_response(request)
    except Exception:
        log.exception("unhandled error in %s", getattr(request, "path", "?"))
        return error_response(500, "internal", "internal error; it was logged")
    if _is_chalice_error(response):
        return _rewrite(request, response)
    return response
