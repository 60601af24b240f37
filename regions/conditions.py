"""The condition every versioned write carries, and what a failed one may keep.

Every write is conditional, evaluated by DynamoDB in the region it lands in (the
protocol is :mod:`regions.versioned`); :func:`condition` builds the expression, its
names and values. :func:`keep_reserved` reduces an item to regionkit's own attributes,
so nothing of a profile travels in an error.
"""

from __future__ import annotations

from typing import Any

from regions.codec import RESERVED, TOKEN_ATTR, VERSION_ATTR
from regions.tombstones import DEL_ATTR, DELETED, FENCE

__all__ = ["condition", "keep_reserved", "vv_value"]


def condition(
    based_on: str | None, create_only: bool, stamp: str, token: str | None = None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The write condition, its names and values.

    Each form accepts the write's own earlier attempt, recognised by its request
    ``token`` (``rk_tok``), never by stamp equality: a retry after a timeout, in
    the same or another region, is idempotent, and another writer's item is never
    taken for ours. Only names and values the expression uses are returned (real
    DynamoDB rejects unused ones). Without a token (older callers) the write's
    own stamp stands in for it; stamps are unique per writer (:mod:`regions.hlc`).
    """
    names = {"#v": VERSION_ATTR, "#d": DEL_ATTR}
    values: dict[str, Any] = {":deleted": {"S": DELETED}}
    if token is not None:
        names["#t"] = TOKEN_ATTR
        values[":t"] = {"S": token}
        mine = "#t = :t"
    else:
        values[":v"] = {"S": stamp}
        mine = "#v = :v"
    if create_only:  # a missing item, our own retry, or an older delete
        values[":v"] = {"S": stamp}
        return (
            f"attribute_not_exists(#v) OR {mine} OR (#d = :deleted AND #v < :v)",
            names,
            values,
        )
    if based_on:
        values[":base"] = {"S": based_on}
        return f"(#v = :base OR {mine}) AND {FENCE}", names, values
    values[":v"] = {"S": stamp}
    return f"(attribute_not_exists(#v) OR #v < :v OR {mine}) AND {FENCE}", names, values


def vv_value(vv: dict[str, str]) -> dict[str, Any]:
    """A version vector as DynamoDB JSON: the write's ancestors only, not itself."""
    return {"M": {r: {"S": v} for r, v in vv.items()}}


def keep_reserved(item: dict[str, Any] | None, key: dict[str, Any]) -> dict[str, Any]:
    """Only regionkit's own attributes (and the key) of ``item``: never a profile's values."""
    if not item:
        return {}
    out = {k: v for k, v in item.items() if k in RESERVED}
    out.update(key)
    return out
