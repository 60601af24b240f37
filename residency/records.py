"""Records other parts of regionkit write and the audit reads: conflicts and drills.

They live here, below both ``regions`` (which writes them) and the audit (which
reads them), so neither imports the other. Neither holds PII: keys are opaque
IDs, and versions are HLC stamps.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ConflictKind", "ConflictRecord", "DrillSummary", "conflict_id"]

ConflictKind = Literal["concurrent", "inversion", "lost_write"]
# superseded: an inversion whose repair found the item already replaced by a newer
# write; nothing stale is served, and the HLC winner is logged as a lost write.
Resolution = Literal["lww", "merged", "repaired", "superseded"]


def conflict_id(table: str, key: str, a: str, b: str) -> str:
    """The same conflict gets the same ID in every region (that is how it is logged once)."""
    lo, hi = sorted((a, b))
    return hashlib.sha256(f"{table}\0{key}\0{lo}\0{hi}".encode()).hexdigest()[:32]


class ConflictRecord(BaseModel):
    """One conflict between two versions of one item, as the conflict log stores it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conflict_id: str
    table: str
    data_class: str
    key: str = Field(description="The item's key (an opaque ID, never a PII value).")
    kind: ConflictKind
    winner_version: str
    loser_version: str
    winner_region: str
    loser_region: str
    resolution: Resolution
    repaired: bool = False
    occurred_at: datetime = Field(description="Time of the later of the two writes (its HLC).")
    detected_at: datetime
    detected_in: str

    def to_item(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["pk"] = data.pop("conflict_id")
        return data

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ConflictRecord:
        data = {k: v for k, v in item.items() if not k.startswith("rk_")}
        data["conflict_id"] = data.pop("pk")
        if "repaired" in data:
            data["repaired"] = bool(data["repaired"])
        return cls.model_validate(data)


class DrillSummary(BaseModel):
    """What the audit needs from one drill journal."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    drill_id: str
    scenario: str
    target: Literal["local", "aws", "sim"]
    policy_sha256: str = ""
    regions: list[str]
    started_at: datetime
    ended_at: datetime
    verdict: Literal["pass", "fail", "error"]
