"""What one move is, and how it ended: shared by :mod:`regions.moves` and the router.

:class:`Move` is one ``move_user`` call's identity: whose, from where to where, and its
*epoch*, the HLC stamp of its ``moving`` record (the protocol is in
:mod:`regions.moves`). :class:`MoveResult` is what the caller gets back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from regions.directory import DirectoryEntry

__all__ = ["Move", "MoveOver", "MoveResult"]


@dataclass(frozen=True)
class MoveResult:
    user_id: str
    from_region: str
    to_region: str
    from_jurisdiction: str
    to_jurisdiction: str
    profile_copied: bool
    steps: list[str] = field(default_factory=list)
    status: Literal["done", "pending", "superseded"] = "done"
    """``superseded``: another process finished, replaced or undid this move, or erased
    the user, while this call ran; it wrote nothing after noticing."""
    reason: str = ""


class MoveOver(Exception):
    """This move was finished, replaced or undone by another process (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Move:
    """One move: whose, from where to where, and its epoch (its ``moving`` record's stamp)."""

    user_id: str
    from_region: str
    target: str
    from_j: str
    to_j: str
    epoch: str

    def entry(self, status: str) -> DirectoryEntry:
        """The ``verifying`` or ``active`` directory record of this move."""
        return DirectoryEntry(
            self.user_id,
            self.target,
            self.to_j,
            status,
            moved_from=self.from_region,
            epoch=self.epoch,
        )

    def result(
        self, copied: bool, steps: list[str], status: Literal["pending", "superseded"], reason: str
    ) -> MoveResult:
        return MoveResult(
            self.user_id,
            self.from_region,
            self.target,
            self.from_j,
            self.to_j,
            copied,
            steps,
            status,
            reason,
        )
