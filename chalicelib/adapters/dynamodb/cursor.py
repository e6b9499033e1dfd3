"""List cursors: where a ``kind-index`` query stopped, as an opaque URL-safe string.

A cursor is DynamoDB's LastEvaluatedKey for the index (``kind``, ``pk``, ``sk``) as
compact JSON in unpadded base64url; a list kept in one partition (a network's clients,
read from the table) has the same shape, its ``kind`` naming the list. Nothing in it
is secret: an admin may list every record anyway. What matters is that a cursor coming
back is checked before it reaches DynamoDB, so a cut, edited or foreign cursor (another
list's, another API's) is a 400 that says to start again, never a database error: it
must be a key of this list's kind naming an id we could have issued. An edited cursor
that passes these checks only starts the walk somewhere else in the same list.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from ...domain.ids import is_id
from ...service.ports import PAGE_CURSOR_MAX, PAGE_CURSOR_PATTERN, InvalidCursorError

__all__ = ["encode", "decode", "decode_in_partition"]

_KEYS = frozenset({"kind", "pk", "sk"})
_SHAPE = re.compile(PAGE_CURSOR_PATTERN)


def encode(kind: str, pk: str, sk: str) -> str:
    """The cursor that continues a ``kind`` list after the item ``pk``/``sk``."""
    raw = json.dumps({"kind": kind, "pk": pk, "sk": sk}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _data(cursor: str) -> dict[str, str]:
    """The fields of a cursor this module made; :class:`InvalidCursorError` for anything else."""
    if len(cursor) > PAGE_CURSOR_MAX:
        raise InvalidCursorError("it is too long")
    if not _SHAPE.fullmatch(cursor):
        raise InvalidCursorError("it is not one this API handed out")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidCursorError("it is not one this API handed out") from None
    if not isinstance(data, dict) or set(data) != _KEYS or not all(isinstance(v, str) for v in data.values()):
        raise InvalidCursorError("it is not one this API handed out")
    return data


def decode_in_partition(cursor: str, kind: str, pk: str, prefix: str) -> dict[str, dict[str, Any]]:
    """The ExclusiveStartKey (table keys only) for a cursor of a list of ``kind`` records kept
    in one partition ``pk`` (a network's clients), whose sort keys are ``prefix`` + an id of
    ``kind``. Raises :class:`InvalidCursorError` otherwise (also for another partition's list)."""
    data = _data(cursor)
    sk = data["sk"]
    if data["kind"] != kind or data["pk"] != pk or not sk.startswith(prefix) \
            or not is_id(kind, sk[len(prefix):]):
        raise InvalidCursorError("it comes from another list")
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def decode(cursor: str, kind: str, prefix: str, sk: str) -> dict[str, dict[str, Any]]:
    """The ExclusiveStartKey in DynamoDB's wire format for a cursor of the ``kind`` list.

    ``prefix`` (e.g. ``HOST#``) and an id of ``kind`` (``ids.ID_PREFIXES``) make up the
    item's ``pk``; ``sk`` is its sort key. Raises :class:`InvalidCursorError` otherwise.
    """
    data = _data(cursor)
    pk = data["pk"]
    if data["kind"] != kind or data["sk"] != sk or not pk.startswith(prefix) \
            or not is_id(kind, pk[len(prefix):]):
        raise InvalidCursorError("it comes from another list")
    return {name: {"S": value} for name, value in data.items()}
