"""Example merge functions for data classes with ``conflicts: {merge: ...}``.

A policy names them ``regions.merges:<function>`` (:mod:`regions.merges` re-exports
them); they live here, in the base layer, so the policy loader never imports ``regions``.

A merge function takes the two conflicting items (plain dicts without
regionkit's version attributes), winner first, and returns the merged item. It
must be deterministic, commutative and idempotent, so every region that merges
the same pair writes the same content.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = ["increment_counter", "merge_counters"]


def merge_counters(winner: dict[str, Any], loser: dict[str, Any]) -> dict[str, Any]:
    """Reaction counters as per-region components: ``{"counts": {"like#eu-west-1": 3, ...}}``.

    Each region only ever increments its own component, so the merge takes the
    larger value per component (a grow-only counter) and no reaction is lost.
    """
    merged = dict(winner)
    counts: dict[str, Any] = dict(winner.get("counts") or {})
    for component, value in (loser.get("counts") or {}).items():
        counts[component] = max(Decimal(counts.get(component, 0)), Decimal(value))
    merged["counts"] = counts
    return merged


def increment_counter(
    item: dict[str, Any] | None, reaction: str, region: str, by: int = 1
) -> dict[str, Any]:
    """The item after one more ``reaction`` counted in ``region``."""
    out = dict(item or {})
    counts = dict(out.get("counts") or {})
    component = f"{reaction}#{region}"
    counts[component] = Decimal(counts.get(component, 0)) + by
    out["counts"] = counts
    return out


def total(item: dict[str, Any], reaction: str) -> int:
    """How many ``reaction``s the item holds, across regions."""
    return int(
        sum(
            Decimal(v)
            for k, v in (item.get("counts") or {}).items()
            if k.split("#", 1)[0] == reaction
        )
    )
