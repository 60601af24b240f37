"""The severity rules: one table, by harm. Checks take their severities from here.

The README's "Audit severities" table is this table (a test keeps them equal). The
rule above all others: personal data stored outside its subject's jurisdiction is
**critical**, whichever check finds it. A finding a check could not establish
(ERROR) carries the severity of what it would have found.
"""

from __future__ import annotations

from typing import Final

from residency.audit.model import Severity

__all__ = ["HARMS", "Harm", "severity_of"]


class Harm:
    """The harms the checks grade (their names are the README table's rows)."""

    PII_OUTSIDE: Final = "personal data stored outside its subject's jurisdiction"
    PII_GLOBAL: Final = "personal data in a global table or the conflict log"
    TABLE_OUTSIDE: Final = "a pinned table, replica or copy outside its jurisdiction"
    GLOBAL_REPLICA_OUTSIDE: Final = "a global table replica outside its replica set"
    POLICY_INVALID: Final = "the policy file does not validate"
    COPY_INSIDE: Final = "an unlisted copy of a pinned table inside its jurisdiction"
    UNATTRIBUTABLE: Final = "a pinned item whose subject cannot be determined"
    DIRECTORY_BROKEN: Final = "a malformed or self-contradicting directory entry"
    MISSING: Final = "a missing table or replica, or a replica that does not replicate"
    PROTECTION_OFF: Final = "PITR, streams or a customer-managed key missing"
    UNREPAIRED: Final = "an unrepaired inversion"
    MOVE_IN_BOTH: Final = "a move in progress with the data in both jurisdictions"
    KEY_PII_PINNED: Final = "personal data in a sort or index key of a pinned table"
    COPY_GLOBAL: Final = "an unlisted copy of a global class"
    OPERATIONS_STALE: Final = "100 or more conflicts in the window; a drill too old"
    NO_DELETION_PROTECTION: Final = "deletion protection off"
    SYSTEM_MISPLACED: Final = "a conflict log outside its region"
    MOVE_TO_FINISH: Final = "a move in progress to resume (its data not yet, or already, copied)"
    TAGS: Final = "regionkit tags missing or wrong"
    REGION_REFUSED: Final = "an extra region that refuses the credentials (not enabled)"
    FEW_CONFLICTS: Final = "a few conflicts; a one-region jurisdiction"


#: harm -> severity, the most severe first.
HARMS: dict[str, Severity] = {
    Harm.PII_OUTSIDE: "critical",
    Harm.PII_GLOBAL: "critical",
    Harm.TABLE_OUTSIDE: "critical",
    Harm.GLOBAL_REPLICA_OUTSIDE: "critical",
    Harm.POLICY_INVALID: "critical",
    Harm.COPY_INSIDE: "high",
    Harm.UNATTRIBUTABLE: "high",
    Harm.DIRECTORY_BROKEN: "high",
    Harm.MISSING: "high",
    Harm.PROTECTION_OFF: "high",
    Harm.UNREPAIRED: "high",
    Harm.MOVE_IN_BOTH: "medium",
    Harm.KEY_PII_PINNED: "medium",
    Harm.COPY_GLOBAL: "medium",
    Harm.OPERATIONS_STALE: "medium",
    Harm.NO_DELETION_PROTECTION: "medium",
    Harm.SYSTEM_MISPLACED: "medium",
    Harm.MOVE_TO_FINISH: "low",
    Harm.TAGS: "low",
    Harm.REGION_REFUSED: "low",
    Harm.FEW_CONFLICTS: "info",
}


def severity_of(harm: str) -> Severity:
    return HARMS[harm]
