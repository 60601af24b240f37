"""Python values ⇄ DynamoDB JSON, and the version attributes regionkit adds.

Items of every data class carry two attributes the router manages:

* ``rk_v``: the HLC stamp of the write (see :mod:`regions.hlc`);
* ``rk_base``: the stamp of the version the write was based on (absent for a
  blind write or a create);
* ``rk_at``: the replica region the write landed in (the writer's region, or
  the one it failed over to);
* ``rk_tok``: the write request's idempotency token (random per request, kept
  across its retries), so a retry recognises its own earlier attempt;
* ``rk_del``, ``rk_to``: a tombstone's kind and a move's target region (see
  :mod:`regions.tombstones`);
* ``rk_mv``: the epoch of the move that last wrote the item (a copy or a fence), so
  that no write of an earlier move can replace it (see :mod:`regions.moves`);
* ``rk_fix``: on a version the conflict detector wrote back (a repair), that version:
  its stream record is a repair, not the version's landing (see :mod:`regions.conflicts`);
* ``rk_vv``: the item's causal past as a version vector: landing region → the
  latest ancestor that landed there (the version itself is not included).
  Writes landing in one replica are serialised by their conditions, so
  "stamp ≤ vv[region]" almost always means "is an ancestor"; the exception, a
  version overwritten by a concurrent one before a descendant landed, has
  already been logged as a conflict loser where it was overwritten. The
  conflict detector uses it to tell an ancestor from a concurrent write when
  replication delivers versions out of order.

Numbers come back as :class:`decimal.Decimal`, as with boto3's resource API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from boto3.dynamodb.types import DYNAMODB_CONTEXT, TypeDeserializer, TypeSerializer

__all__ = [
    "AT_ATTR",
    "BASE_ATTR",
    "EPOCH_ATTR",
    "FIX_ATTR",
    "RESERVED",
    "TOKEN_ATTR",
    "VERSION_ATTR",
    "VV_ATTR",
    "descends",
    "from_ddb",
    "item_size",
    "to_ddb",
    "to_ddb_value",
]

VERSION_ATTR = "rk_v"
BASE_ATTR = "rk_base"
VV_ATTR = "rk_vv"
AT_ATTR = "rk_at"
TOKEN_ATTR = "rk_tok"
EPOCH_ATTR = "rk_mv"
FIX_ATTR = "rk_fix"
# and the tombstone attributes of regions.tombstones (rk_del, rk_to; the TTL attribute
# expires_at stays the service's to use too)
RESERVED = frozenset(
    {VERSION_ATTR, BASE_ATTR, VV_ATTR, AT_ATTR, TOKEN_ATTR, EPOCH_ATTR, FIX_ATTR, "rk_del", "rk_to"}
)

_ser = TypeSerializer()
_MAX_INT = 10**38
_de = TypeDeserializer()


def _value(v: Any) -> Any:
    """One value as DynamoDB JSON: the common types inline, the rest through boto3.

    This is on every write's path, and boto3's serializer walks a chain of type
    checks for each value; the shortcut gives identical output for str, bool,
    int, Decimal, None, dict and list, and defers everything else (sets, bytes,
    floats, which boto3 rejects on purpose) to it.
    """
    t = type(v)
    if t is str:
        return {"S": v}
    if t is bool:
        return {"BOOL": v}
    if t is int and -_MAX_INT < v < _MAX_INT:  # 38 digits, DynamoDB's precision
        return {"N": str(v)}
    if v is None:
        return {"NULL": True}
    if t is dict:
        return {"M": {k: _value(x) for k, x in v.items()}}
    if t is list:
        return {"L": [_value(x) for x in v]}
    return _ser.serialize(v)


def to_ddb(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _value(v) for k, v in item.items()}


def to_ddb_value(value: Any) -> Any:
    return _value(value)


def _plain(v: Any) -> Any:
    """One DynamoDB JSON value as Python: the common types inline, the rest through boto3.

    The mirror of :func:`_value`, on every read's path; identical output to boto3's
    ``TypeDeserializer`` (numbers through the same decimal context), which still
    handles the rest (binary, sets) and rejects what is malformed.
    """
    if len(v) == 1:
        if "S" in v:
            return v["S"]
        if "N" in v:
            return _create_decimal(v["N"])
        if "M" in v:
            return {k: _plain(x) for k, x in v["M"].items()}
        if "L" in v:
            return [_plain(x) for x in v["L"]]
        if "BOOL" in v:
            return v["BOOL"]
    return _de.deserialize(v)


_create_decimal = DYNAMODB_CONTEXT.create_decimal


def from_ddb(item: dict[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {k: _plain(v) for k, v in item.items()}


def descends(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether item ``new`` has item ``old``'s version in its causal past."""
    old_version = str(old.get(VERSION_ATTR, ""))
    if new.get(VERSION_ATTR) == old_version or new.get(BASE_ATTR) == old_version:
        return True
    region = old.get(AT_ATTR) or old_version.rsplit(".", 1)[-1]
    seen = (new.get(VV_ATTR) or {}).get(region)
    return isinstance(seen, str) and seen >= old_version


# --- sizes, as DynamoDB counts them (item limit 400 KB, transaction 4 MB) -----------


def _value_size(v: Any) -> int:
    ((t, x),) = v.items()
    if t == "S":
        return len(str(x).encode())
    if t == "B":
        return len(x) if isinstance(x, (bytes, bytearray)) else len(str(x).encode())
    if t == "N":
        return (len(str(x).lstrip("-").replace(".", "").lstrip("0")) + 1) // 2 + 1
    if t in ("BOOL", "NULL"):
        return 1
    if t == "SS":
        return sum(len(str(s).encode()) for s in x)
    if t == "BS":
        return sum(len(b) if isinstance(b, (bytes, bytearray)) else len(str(b)) for b in x)
    if t == "NS":
        return sum(_value_size({"N": n}) for n in x)
    if t == "M":
        return 3 + sum(len(k.encode()) + _value_size(s) + 1 for k, s in x.items())
    if t == "L":
        return 3 + sum(_value_size(s) + 1 for s in x)
    return 0


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: names plus values (UTF-8), approximately."""
    return sum(len(k.encode()) + _value_size(v) for k, v in item.items() if isinstance(v, dict))
