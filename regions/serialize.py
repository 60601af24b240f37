"""Items as DynamoDB JSON, with errors that name an attribute and a type, never a value."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from regions.codec import to_ddb
from residency.errors import ConfigError
from residency.tables import TTL_ATTRIBUTE

__all__ = ["bad_map_key", "first_unserializable", "serialize_item", "with_expiry"]


def serialize_item(data_class: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB JSON of ``item``; an unsupported value is named by attribute and type only.

    The error is raised outside the ``except`` block: boto3's own message quotes the
    value, and botocore's parameter validation would quote a non-string map key.
    """
    bad: tuple[str, str] | None = bad_map_key(item)
    if bad is None:
        try:
            return to_ddb(item)
        except (TypeError, ValueError, ArithmeticError):
            bad = first_unserializable(item)
    raise ConfigError(
        message=f"{data_class}: attribute {bad[0]!r} holds a {bad[1]} value, which DynamoDB "
        "cannot store; use str, int, Decimal, bool, bytes, list, dict or set "
        "(dates as ISO strings, map keys as strings)"
    )


_LEAVES = frozenset({str, int, bool, bytes, float, type(None)})


def bad_map_key(item: Mapping[str, Any]) -> tuple[str, str] | None:
    """(top-level attribute, "map key of type T") for a non-string key at any depth."""
    for name, value in item.items():
        if type(value) in _LEAVES:  # the common case, before any call or ABC check
            continue
        found = _bad_key_in(value, 0)
        if found:
            return name, found
    return None


def _bad_key_in(v: Any, depth: int) -> str | None:
    if type(v) in _LEAVES or depth > 40:
        return None
    if isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str):
                return f"map key of type {type(k).__name__}"
            found = _bad_key_in(x, depth + 1)
            if found:
                return found
    elif isinstance(v, (list, tuple)):
        for x in v:
            found = _bad_key_in(x, depth + 1)
            if found:
                return found
    return None


def first_unserializable(item: Mapping[str, Any]) -> tuple[str, str]:
    for name, value in item.items():
        try:
            to_ddb({name: value})
        except (TypeError, ValueError, ArithmeticError):
            return name, type(value).__name__
    return "?", "unknown"


def with_expiry(item: dict[str, Any], expires_at: int | datetime) -> dict[str, Any]:
    """``item`` with the table's TTL attribute (epoch seconds) set to ``expires_at``."""
    when = expires_at.timestamp() if isinstance(expires_at, datetime) else expires_at
    return {**item, TTL_ATTRIBUTE: int(when)}
