"""Python values ⇄ DynamoDB JSON, and the version attributes regionkit adds.

Items of every data class carry two attributes the router manages:

* ``rk_v``: the HLC stamp of the write (see :mod:`regions.hlc`);
* ``rk_base``: the stamp of the version the write was based on (absent for a
  blind write or a create).

Numbers come back as :class:`decimal.Decimal`, as with boto3's resource API.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

__all__ = ["BASE_ATTR", "RESERVED", "VERSION_ATTR", "from_ddb", "to_ddb", "to_ddb_value"]

VERSION_ATTR = "rk_v"
BASE_ATTR = "rk_base"
RESERVED = frozenset({VERSION_ATTR, BASE_ATTR})

_ser = TypeSerializer()
_de = TypeDeserializer()


def to_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items()}


def to_ddb_value(value: Any) -> Any:
    return _ser.serialize(value)


def from_ddb(item: dict[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {k: _de.deserialize(v) for k, v in item.items()}
