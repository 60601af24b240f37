"""Records other parts of regionkit write and the audit reads: conflicts and drills.

They live here, below both ``regions`` (which writes them) and the audit (which
reads them), so neither imports the other. A conflict record holds no attribute
value, but it does hold the conflicted item's key, as the item's own table does
(an operator reconciling a lost write needs it), in the region that detected it,
which holds the item too. The key is never shown or logged: everything that
renders a record names the item by keyed pseudonym
(:meth:`residency.pseudonym.Pseudonymizer.item`). Versions are HLC stamps.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["ConflictKind", "ConflictRecord", "DrillSummary", "conflict_id", "invalid_fields"]

ConflictKind = Literal["concurrent", "inversion", "lost_write"]
# superseded: an inversion whose repair found the item already replaced by a newer
# write; nothing stale is served, and the HLC winner is logged as a lost write.
Resolution = Literal["lww", "merged", "repaired", "superseded"]


def conflict_id(table: str, key: str, a: str, b: str, token: str = "") -> str:
    """The same conflict gets the same ID in every region (that is how it is logged once).

    ``token`` is the losing write's random write token (``rk_tok``), which every detector
    that sees the conflict holds and the conflict log does not: without it, anyone with a
    record (table, versions, ID) could confirm a guessed item key by hashing the guess.
    """
    lo, hi = sorted((a, b))
    text = f"{table}\0{key}\0{lo}\0{hi}\0{token}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def invalid_fields(exc: ValidationError, model: type[BaseModel]) -> tuple[str, ...]:
    """The fields a stored record failed to parse on, by name, for an error message.

    Only ``model``'s own field names are given. pydantic's message text quotes the
    input value, and an attribute the model does not know is named by the stored
    item, so it could be anything: it is counted, never named.
    """
    known, unknown = set(), 0
    for error in exc.errors(include_url=False):
        head = str(error["loc"][0]) if error["loc"] else ""
        if head in model.model_fields:
            known.add(head)
        else:
            unknown += 1
    extra = (f"{unknown} unexpected attribute{'s' if unknown > 1 else ''}",) if unknown else ()
    return (*sorted(known), *extra)


class ConflictRecord(BaseModel):
    """One conflict between two versions of one item, as the conflict log stores it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conflict_id: str
    table: str
    data_class: str
    key: str = Field(
        description="The item's key as its table stores it (partition, then '#' and the "
        "sort key); rendered only as the item's keyed pseudonym."
    )
    sort_key: str | None = Field(
        default=None, description="The sort key's value alone, when the table has one."
    )
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

    def item_key(self) -> tuple[str, str | None]:
        """The item's partition and sort key values (as text)."""
        if self.sort_key is None:
            return self.key, None
        return self.key[: -len(self.sort_key) - 1], self.sort_key

    def to_item(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["pk"] = data.pop("conflict_id")
        return data

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ConflictRecord:
        data = {k: v for k, v in item.items() if not k.startswith("rk_")}
        data["conflict_id"] = data.pop("pk", None)  # missing: a field error, not a KeyError
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
