"""The size of an item as DynamoDB counts it (its 400 KB limit, and what reads cost)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["item_size"]


def _value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | Decimal):
        digits = str(abs(value)).replace(".", "").strip("0") or "0"
        return len(digits) // 2 + 2  # "about one byte per two significant digits, plus one"
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, Mapping):
        return 3 + sum(len(str(k).encode()) + _value_size(v) + 1 for k, v in value.items())
    if isinstance(value, list | set | tuple):
        return 3 + sum(_value_size(v) + 1 for v in value)
    raise TypeError(f"not a DynamoDB value: {type(value).__name__}")


def item_size(item: Mapping[str, Any]) -> int:
    """Bytes of ``item`` (as the boto3 resource API returns it) by DynamoDB's rules:
    attribute names and strings in UTF-8, numbers about one byte per two significant
    digits plus one, 3 bytes per list or map plus 1 per element, rounded up a little."""
    return sum(len(k.encode()) + _value_size(v) for k, v in item.items())
