"""moto's attribute values cast without a chain of type tests, and its tables walked in
key order without comparing value objects.

Two costs of moto 5.2 grow with a table's size, on every ``Query`` and ``Scan``:

* ``DynamoType.cast_value`` (the Python value a comparison uses) tests the type five
  times (number, set, list, map, null) before it returns a string as it is. Every
  key condition, filter and sort compares through it.
* ``Table.all_items`` sorts the whole table on every call (every page of a scan,
  every query, index queries included) with the ``DynamoType`` objects as sort
  keys, so each of the n log n comparisons casts both sides again.

:func:`install` replaces both with the same results computed once: ``cast_value``
answers strings, binaries, booleans and numbers first and hands every other type to
moto's own property; ``all_items`` sorts on the cast keys. A query of a secondary
index on a table of 100,000 items took 0.42 s of the server's CPU and takes about a
fifth of it (``benchmarks/bench_subject.py`` locates a data subject that way).
DynamoDB itself reads only the index's matching items: moto still walks every item.

"The same" is checked, not assumed: ``tests/test_fastvalues.py`` compares both with
moto's own on generated values and tables. Standard library and moto only: the server
process loads this file by path.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = ["install", "originals"]

_MARK = "_regionkit_fast"
_AS_IS = frozenset({"S", "B", "BOOL"})  # cast to themselves (moto's last branch)


def _cast_value(original: Any) -> property:
    def cast_value(self: Any) -> Any:
        kind = self.type
        if kind in _AS_IS:
            return self.value
        if kind == "N":
            return Decimal(self.value)
        return original(self)

    prop = property(cast_value)
    setattr(cast_value, _MARK, original)
    return prop


def _sort_key(item: Any) -> Any:
    # moto's key: (hash_key, range_key) if item.range_key else hash_key, compared by
    # cast value (DynamoType.__lt__); the same order, each key cast once
    range_key = item.range_key
    if range_key:
        return (item.hash_key.cast_value, range_key.cast_value)
    return item.hash_key.cast_value


def _all_items(self: Any) -> list[Any]:
    items: list[Any] = []
    if self.range_key_attr:
        for hash_set in self.items.values():
            items.extend(hash_set.values())
    else:
        items.extend(self.items.values())
    return sorted(items, key=_sort_key)


def install() -> None:
    """Replace both (idempotent). Raises AttributeError if moto no longer has them."""
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    current = DynamoType.__dict__["cast_value"]
    if not getattr(current.fget, _MARK, None):
        DynamoType.cast_value = _cast_value(current.fget)  # type: ignore[method-assign,assignment]
    if not getattr(Table.all_items, _MARK, False):
        setattr(_all_items, _MARK, Table.all_items)
        Table.all_items = _all_items  # type: ignore[method-assign]


def originals() -> tuple[Any, Any]:
    """moto's own ``cast_value`` getter and ``all_items`` (for the equivalence tests)."""
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    cast = DynamoType.__dict__["cast_value"].fget
    walk = Table.all_items
    return getattr(cast, _MARK, cast), getattr(walk, _MARK, walk)
