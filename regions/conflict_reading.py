"""Reading the conflict log as operators do: from the nearest region that answers, then
filtered or counted (``regionkit conflicts list | stats`` render what these return).

Each region keeps its own log (its detector writes there); one region's log is read, the
router's own region first, then the others nearest first, so a region that is down does
not hide the log.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from regions.conflicts import ConflictLog, ConflictLogScan
from residency.errors import OperationError, RegionkitError
from residency.records import ConflictRecord

__all__ = ["CONFLICT_KINDS", "ConflictFilter", "read_nearest", "summarize"]

CONFLICT_KINDS = ("concurrent", "inversion", "lost_write")


def read_nearest(log: ConflictLog, start: str | None = None) -> tuple[str, ConflictLogScan]:
    """The log of the first region that answers, ``start`` first (default: the policy's
    first region), then nearest first; and which region that was."""
    from botocore.exceptions import BotoCoreError, ClientError

    policy = log.policy
    first = policy.check_region(start) if start else policy.regions[0]
    order = [first, *(r for r in policy.nearest_first(first, list(policy.regions)) if r != first)]
    errors: list[str] = []
    for region in order:
        try:
            return region, log.read(region)
        except (RegionkitError, BotoCoreError, ClientError) as exc:
            errors.append(f"{region}: {type(exc).__name__}")
    raise OperationError(
        message=f"cannot read the conflict log: no region answered ({'; '.join(errors)})"
    )


@dataclass(frozen=True)
class ConflictFilter:
    """Which records to show; a field left ``None`` does not filter."""

    since: datetime | None = None
    data_class: str | None = None
    kind: str | None = None
    key: str | None = None
    """The item's partition key."""

    def select(self, records: list[ConflictRecord]) -> list[ConflictRecord]:
        return [r for r in records if self._keeps(r)]

    def _keeps(self, r: ConflictRecord) -> bool:
        return (
            (self.since is None or r.occurred_at >= self.since)
            and (self.data_class is None or r.data_class == self.data_class)
            and (self.kind is None or r.kind == self.kind)
            and (self.key is None or r.item_key()[0] == self.key)
        )


def summarize(scan: ConflictLogScan) -> dict[str, Any]:
    """Counts by kind, data class, resolution and region pair (most common first)."""
    records = scan.records
    return {
        "total": len(records),
        "unreadable": [u.record for u in scan.unreadable],
        "by_kind": dict(Counter(r.kind for r in records).most_common()),
        "by_data_class": dict(Counter(r.data_class for r in records).most_common()),
        "by_resolution": dict(Counter(r.resolution for r in records).most_common()),
        "by_regions": dict(
            Counter(f"{r.winner_region} > {r.loser_region}" for r in records).most_common()
        ),
        "repaired": sum(1 for r in records if r.repaired),
        "first": records[0].occurred_at.isoformat() if records else None,
        "last": records[-1].occurred_at.isoformat() if records else None,
    }
