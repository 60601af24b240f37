"""Every table the policy implies, where it belongs, and the tags it carries.

One derivation, used by whatever creates or inspects tables: the local cluster's
provisioning, the deterministic simulation and the compliance audit. The rules
(``Policy.table_placements``): a global data class lives in its replica regions;
a pinned data class in every region, each jurisdiction's regions forming their
own replica set; the conflict log in every region, as one global table; the
conflict detector's lineage table in every replica region of a global class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from residency.policy import GlobalDataClass, Index, Policy

__all__ = [
    "CONFLICT_LOG",
    "GLOBAL_TAG",
    "INDEX_EXTRA",
    "LINEAGE",
    "SUBJECT_INDEX",
    "TAG_DATA_CLASS",
    "TAG_JURISDICTION",
    "TAG_POLICY",
    "TTL_ATTRIBUTE",
    "TablePlan",
    "expected_tags",
    "jurisdiction_or_none",
    "plan_tables",
]

CONFLICT_LOG = "conflict-log"  # the data_class of the conflict-log table
LINEAGE = "lineage"  # the data_class of the conflict detector's lineage table
GLOBAL_TAG = "global"  # the jurisdiction tag of tables that are not pinned
# The TTL attribute of every regionkit table (epoch seconds). Tombstones expire through it;
# a service may use it for its own items too (DynamoDB allows one TTL attribute per table).
TTL_ATTRIBUTE = "expires_at"
# The global secondary index on a global class's subject_attribute (data-subject requests).
SUBJECT_INDEX = "by-subject"
# Besides the keys, the index carries the version and tombstone kind (never a value).
INDEX_EXTRA = ("rk_v", "rk_del")

TAG_DATA_CLASS = "regionkit:data-class"
TAG_JURISDICTION = "regionkit:jurisdiction"
TAG_POLICY = "regionkit:policy"


def jurisdiction_or_none(policy: Policy, region: str) -> str | None:
    """The jurisdiction owning ``region``, or None for a region outside the policy."""
    for jid, j in policy.jurisdictions.items():
        if region in j.regions:
            return jid
    return None


@dataclass(frozen=True)
class TablePlan:
    """One table as the policy places it."""

    table: str  # the physical name, with the settings' prefix
    logical: str  # the name in the policy
    data_class: str  # the data class name, or CONFLICT_LOG
    kind: Literal["pinned", "global", "system"]
    partition_key: str
    sort_key: str | None
    regions: tuple[str, ...]
    is_directory: bool = False
    subject_attribute: str | None = None  # indexed as SUBJECT_INDEX when set
    indexes: tuple[Index, ...] = ()

    def key_attributes(self) -> frozenset[str]:
        """Every key attribute of the table and its indexes: all strings (``S``)."""
        args = self.create_args()["AttributeDefinitions"]
        return frozenset(str(a["AttributeName"]) for a in args)

    def create_args(self) -> dict[str, Any]:
        """KeySchema, AttributeDefinitions and the secondary indexes of CreateTable."""
        keys = [{"AttributeName": self.partition_key, "KeyType": "HASH"}]
        if self.sort_key:
            keys.append({"AttributeName": self.sort_key, "KeyType": "RANGE"})
        names = {self.partition_key, *([self.sort_key] if self.sort_key else [])}
        gsis: list[dict[str, Any]] = []
        lsis: list[dict[str, Any]] = []
        if self.subject_attribute:
            names.add(self.subject_attribute)
            gsis.append(
                {
                    "IndexName": SUBJECT_INDEX,
                    "KeySchema": [{"AttributeName": self.subject_attribute, "KeyType": "HASH"}],
                    "Projection": {
                        "ProjectionType": "INCLUDE",
                        "NonKeyAttributes": list(INDEX_EXTRA),
                    },
                }
            )
        for ix in self.indexes:
            pk = (ix.partition_key if ix.kind == "gsi" else None) or self.partition_key
            schema = [{"AttributeName": pk, "KeyType": "HASH"}]
            if ix.sort_key:
                schema.append({"AttributeName": ix.sort_key, "KeyType": "RANGE"})
            names |= {k["AttributeName"] for k in schema}
            projection: dict[str, Any] = {"ProjectionType": ix.projection.upper()}
            if ix.projection == "include":
                projection["NonKeyAttributes"] = [*ix.attributes, *INDEX_EXTRA]
            elif ix.projection == "keys_only":  # the version and tombstone kind ride along
                projection = {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(INDEX_EXTRA)}
            spec = {"IndexName": ix.name, "KeySchema": schema, "Projection": projection}
            (gsis if ix.kind == "gsi" else lsis).append(spec)
        args: dict[str, Any] = {
            "KeySchema": keys,
            "AttributeDefinitions": [
                {"AttributeName": n, "AttributeType": "S"} for n in sorted(names)
            ],
        }
        if gsis:
            args["GlobalSecondaryIndexes"] = gsis
        if lsis:
            args["LocalSecondaryIndexes"] = lsis
        return args

    def jurisdiction_tag(self, policy: Policy, region: str) -> str:
        """The ``regionkit:jurisdiction`` tag of this table's replica in ``region``."""
        if self.kind != "pinned":
            return GLOBAL_TAG
        return jurisdiction_or_none(policy, region) or "(none)"

    def allowed_replicas(self, policy: Policy, region: str) -> frozenset[str]:
        """The regions a replica of this table in ``region`` may have."""
        if self.kind == "pinned":
            j = jurisdiction_or_none(policy, region)
            return frozenset(policy.jurisdictions[j].regions) if j else frozenset()
        if self.kind == "system" and self.data_class != LINEAGE:
            return frozenset({region})  # the conflict log is one table per region
        return frozenset(self.regions)


def plan_tables(policy: Policy, table_prefix: str = "") -> list[TablePlan]:
    """Every table of the policy and the regions it belongs in."""
    placements = policy.table_placements()
    plans = [
        TablePlan(
            table=table_prefix + dc.table,
            logical=dc.table,
            data_class=name,
            kind="global" if isinstance(dc, GlobalDataClass) else "pinned",
            partition_key=dc.partition_key,
            sort_key=dc.sort_key,
            regions=tuple(placements[dc.table]),
            is_directory=name == policy.system.directory,
            subject_attribute=dc.subject_attribute if isinstance(dc, GlobalDataClass) else None,
            indexes=tuple(dc.indexes),
        )
        for name, dc in policy.data_classes.items()
    ]
    log, lineage = policy.system.conflict_log_table, policy.system.lineage_table
    system = [(log, CONFLICT_LOG, placements.get(log, policy.regions))]
    if lineage in placements:  # one global table (regions.lineage)
        system.append((lineage, LINEAGE, placements[lineage]))
    plans += [
        TablePlan(
            table=table_prefix + name,
            logical=name,
            data_class=data_class,
            kind="system",
            partition_key="pk",
            sort_key=None,
            regions=tuple(regions),
        )
        for name, data_class, regions in system
    ]
    return plans


def expected_tags(policy: Policy, plan: TablePlan, region: str) -> dict[str, str]:
    """The tags every regionkit table carries (the CDK app and the local cluster set them)."""
    return {
        TAG_DATA_CLASS: plan.data_class,
        TAG_JURISDICTION: plan.jurisdiction_tag(policy, region),
        TAG_POLICY: policy.name,
    }
