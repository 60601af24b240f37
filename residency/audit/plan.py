"""Where the policy says each table must be (and, by omission, must not be).

This mirrors the placement rules the local cluster and the CDK app deploy from
(``Policy.table_placements``): a global data class lives in its replica
regions; a pinned data class in every region, each jurisdiction's regions forming
their own replica set; the conflict log in every region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from residency.policy import GlobalDataClass, Policy

__all__ = ["CONFLICT_LOG", "GLOBAL_TAG", "TablePlan", "expected_tags", "plan_tables"]

CONFLICT_LOG = "conflict-log"
GLOBAL_TAG = "global"

TAG_DATA_CLASS = "regionkit:data-class"
TAG_JURISDICTION = "regionkit:jurisdiction"
TAG_POLICY = "regionkit:policy"


@dataclass(frozen=True)
class TablePlan:
    table: str  # physical name (with the settings' prefix)
    logical: str
    data_class: str  # the data class name, or CONFLICT_LOG
    kind: Literal["pinned", "global", "system"]
    partition_key: str
    sort_key: str | None
    regions: tuple[str, ...]
    is_directory: bool = False

    def allowed_replicas(self, policy: Policy, region: str) -> frozenset[str]:
        """The regions a replica of this table in ``region`` may have."""
        if self.kind == "pinned":
            j = _jurisdiction(policy, region)
            return frozenset(policy.jurisdictions[j].regions) if j else frozenset()
        if self.kind == "system":
            return frozenset({region})  # the conflict log is one table per region
        return frozenset(self.regions)


def _jurisdiction(policy: Policy, region: str) -> str | None:
    for jid, j in policy.jurisdictions.items():
        if region in j.regions:
            return jid
    return None


def plan_tables(policy: Policy, table_prefix: str = "") -> list[TablePlan]:
    placements = policy.table_placements()
    plans: list[TablePlan] = []
    for name, dc in policy.data_classes.items():
        plans.append(
            TablePlan(
                table=table_prefix + dc.table,
                logical=dc.table,
                data_class=name,
                kind="global" if isinstance(dc, GlobalDataClass) else "pinned",
                partition_key=dc.partition_key,
                sort_key=dc.sort_key,
                regions=tuple(placements[dc.table]),
                is_directory=name == policy.system.directory,
            )
        )
    log = policy.system.conflict_log_table
    plans.append(
        TablePlan(
            table=table_prefix + log,
            logical=log,
            data_class=CONFLICT_LOG,
            kind="system",
            partition_key="pk",
            sort_key=None,
            regions=tuple(placements.get(log, policy.regions)),
        )
    )
    return plans


def expected_tags(policy: Policy, plan: TablePlan, region: str) -> dict[str, str]:
    """The tags every regionkit table carries (the CDK app and the local cluster set them)."""
    jurisdiction = GLOBAL_TAG
    if plan.kind == "pinned":
        jurisdiction = _jurisdiction(policy, region) or "(none)"
    return {
        TAG_DATA_CLASS: plan.data_class,
        TAG_JURISDICTION: jurisdiction,
        TAG_POLICY: policy.name,
    }
