"""Tombstones: versioned deletes, and the fences a move or an erasure leaves behind.

One mechanism serves three purposes. A tombstone is an ordinary item written in
place of the data: its key, regionkit's own ``rk_*`` attributes and its expiry, and no other
attribute, so it never holds personal data. It is stamped with an HLC version
like any write, so last-writer-wins settles it against writes in every region
(DynamoDB's own replication, and the local emulator, treat it as a put).

=========  =====================================  ==========================================
``rk_del``  written by                             what a later write meets
=========  =====================================  ==========================================
deleted    ``router.delete``                      a blind write with an older stamp is
                                                   refused (``StaleWrite``); a newer one
                                                   recreates the item (plain LWW)
moved      ``move_user``, in every region of the  every write is refused, whatever its stamp;
           old jurisdiction (``rk_to`` names the  the router re-routes to ``rk_to`` and
           new home region)                       retries there
erased     ``erase_subject``                      every write is refused, whatever its stamp
=========  =====================================  ==========================================

The refusal is part of each write's own ``ConditionExpression``
(:data:`FENCE`): it costs no extra round trip, and it holds against any router
in any process whatever its directory cache says, because DynamoDB evaluates it
in the region the write lands in. Reads (``get``, ``query``) hide tombstones.

Tombstones expire through the table's TTL attribute ``expires_at`` (epoch seconds)
after the policy's ``system.tombstone_retention_days``, which must outlive any
replication pause (see the policy field).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from residency.tables import TTL_ATTRIBUTE

__all__ = [
    "DELETED",
    "DEL_ATTR",
    "ERASED",
    "EXP_ATTR",
    "FENCE",
    "FENCE_NAMES",
    "FENCE_VALUES",
    "MOVED",
    "TO_ATTR",
    "is_live",
    "is_tombstone",
    "tombstone_body",
    "tombstone_kind",
]

DEL_ATTR: Final = "rk_del"
TO_ATTR: Final = "rk_to"
EXP_ATTR: Final = TTL_ATTRIBUTE  # "expires_at": the TTL attribute of every regionkit table

DELETED: Final = "deleted"
MOVED: Final = "moved"
ERASED: Final = "erased"
KINDS: Final = frozenset({DELETED, MOVED, ERASED})

# Appended (AND) to every write condition: no fence stands in the way.
FENCE: Final = "(attribute_not_exists(#d) OR #d = :deleted)"
FENCE_NAMES: Final = {"#d": DEL_ATTR}
FENCE_VALUES: Final = {":deleted": {"S": DELETED}}


def tombstone_body(
    key: dict[str, Any], *, kind: str, expires_at: int, to_region: str | None = None
) -> dict[str, Any]:
    """A tombstone's attributes besides the version ones (as Python values)."""
    if kind not in KINDS:
        raise ValueError(f"unknown tombstone kind {kind!r}")
    body = dict(key)
    body[DEL_ATTR] = kind
    body[EXP_ATTR] = int(expires_at)
    if to_region is not None:
        body[TO_ATTR] = to_region
    return body


def tombstone_kind(item: dict[str, Any] | None) -> str | None:
    """``deleted``/``moved``/``erased`` for a tombstone, None for data (or no item)."""
    if not item:
        return None
    kind = item.get(DEL_ATTR)
    return str(kind) if kind is not None else None


def is_tombstone(item: dict[str, Any] | None) -> bool:
    return bool(item) and DEL_ATTR in item  # type: ignore[operator]


def is_live(item: dict[str, Any] | None, now: float) -> bool:
    """Whether a read shows ``item``: it exists, is no tombstone, and its TTL
    (``expires_at``) has not passed. DynamoDB deletes expired items only eventually
    ("typically within two days") and serves them until then; the router hides them."""
    if not item or DEL_ATTR in item:
        return False
    at = item.get(EXP_ATTR)
    if isinstance(at, bool) or not isinstance(at, (int, float, Decimal)):
        return True  # no TTL, or not a Number: DynamoDB never expires it either
    return not at < now
