"""The deployment plan: which table lives where, derived from the policy.

Pure Python (no ``aws_cdk``). The CDK stacks (:mod:`infra`) are built from this plan,
and the AWS drills (:mod:`regions.drills.launch`) and ``regionkit infra plan`` read it
without a synth: it lives in the base layer because ``regions`` may not import ``infra``.
The audit's view of the same layout is :func:`residency.tables.plan_tables`.

One :class:`TableSpec` is one DynamoDB global table (one ``AWS::DynamoDB::GlobalTable``
resource, defined once, in the stack of its primary region):

* a **global** data class (the user directory is one): one table, replicated to
  the data class's ``replicas``; the primary is the first replica listed;
* a **pinned** data class: one table *per jurisdiction*, replicated only among
  that jurisdiction's regions; the primary is the jurisdiction's first home region.
  The tables share one name (DynamoDB names are per region), and never share a region;
* the **conflict log** (``policy.system.conflict_log_table``): **one single-region
  table per policy region** (key ``conflict-log-<region>``), never replicated. Each
  region's detector records the conflicts it sees there, and the audit
  (``residency.tables.TablePlan.allowed_replicas``) expects exactly that: a conflict
  log with replicas is a finding. Deployment and audit agree by construction, and
  ``tests/test_deploy_contract.py`` checks it on the synthesized templates;
* the detectors' **lineage table** (``policy.system.lineage_table``, key ``lineage``):
  one global table replicated to every region a global data class has a replica in
  (``regions.lineage``), with TTL on its entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from residency import names as naming
from residency.errors import ConfigError
from residency.policy import GlobalDataClass, Policy
from residency.tables import LINEAGE

__all__ = [
    "FIS_UNAVAILABLE",
    "MAX_ALARM_METRICS",
    "DeploymentPlan",
    "LatencyAlarm",
    "TableSpec",
    "fis_available",
    "plan_deployment",
]

#: CloudWatch's hard limit on the metrics one metric-math alarm reads.
MAX_ALARM_METRICS = 10

GLOBAL_SCOPE = "global"
CONFLICT_LOG_KEY = "conflict-log"
LINEAGE_KEY = LINEAGE

#: Commercial regions where CloudFormation has no ``AWS::FIS::ExperimentTemplate``
#: (from cfn-lint's per-region resource specifications; the cfn-lint test of the
#: synthesized templates catches this list going stale). No FIS template is
#: deployed there; pausing replication in a peer region still cuts the link.
FIS_UNAVAILABLE = frozenset(
    {
        "ap-east-2",
        "ap-south-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ca-west-1",
        "il-central-1",
        "mx-central-1",
    }
)


def fis_available(region: str) -> bool:
    return region not in FIS_UNAVAILABLE


@dataclass(frozen=True)
class TableSpec:
    """One global table: where it lives and how it is keyed and protected."""

    key: str
    """Unique within the plan: the data class name, ``<class>-<jurisdiction>``, or
    ``conflict-log-<region>``. Used for construct ids, never as a physical name."""
    kind: Literal["global", "pinned", "system"]
    data_class: str | None
    jurisdiction: str
    """The jurisdiction id for pinned tables, ``global`` otherwise."""
    table_name: str
    """The physical table name (settings prefix included)."""
    regions: tuple[str, ...]
    """Every replica region, the primary first."""
    partition_key: str
    sort_key: str | None
    key_alias: str
    fis_target: bool
    """Tagged ``DisruptDynamoDb=Allowed`` so the FIS pause-replication action may hit it."""
    detector: bool
    """The conflict detector consumes this table's stream in every replica region."""
    subject_attribute: str | None = None
    """Indexed (``by-subject``, keys only) for data-subject requests."""
    indexes: tuple[Any, ...] = ()
    """The data class's secondary indexes (``residency.policy.Index``)."""

    @property
    def primary(self) -> str:
        return self.regions[0]

    @property
    def replica_regions(self) -> tuple[str, ...]:
        """The regions other than the primary."""
        return self.regions[1:]

    def replica_pairs(self) -> Iterator[tuple[str, str]]:
        """(source, receiving) for every ordered pair of distinct replicas."""
        for source in self.regions:
            for receiving in self.regions:
                if source != receiving:
                    yield source, receiving


@dataclass(frozen=True)
class LatencyAlarm:
    """One ReplicationLatency alarm: the highest lag of ``table`` from ``source`` to any
    of ``receiving`` (at most :data:`MAX_ALARM_METRICS` regions; ``part`` numbers the
    alarms of a table with more receiving regions than that, else it is ``None``)."""

    table: TableSpec
    source: str
    receiving: tuple[str, ...]
    part: int | None = None


@dataclass(frozen=True)
class DeploymentPlan:
    policy_name: str
    table_prefix: str
    regions: tuple[str, ...]
    tables: tuple[TableSpec, ...]
    replication_latency_alarm_ms: int
    conflict_log_table: str
    lineage_table: str

    def tables_in(self, region: str) -> list[TableSpec]:
        """Tables with a replica in ``region``."""
        return [t for t in self.tables if region in t.regions]

    def tables_with_primary(self, region: str) -> list[TableSpec]:
        return [t for t in self.tables if t.primary == region]

    def primary_regions(self) -> list[str]:
        """Regions holding at least one table definition, in policy order."""
        primaries = {t.primary for t in self.tables}
        return [r for r in self.regions if r in primaries]

    def detector_tables(self, region: str) -> list[TableSpec]:
        return [t for t in self.tables_in(region) if t.detector]

    def fis_targets(self, region: str) -> list[TableSpec]:
        """Tables FIS may pause in ``region`` (none where FIS is unavailable)."""
        if not fis_available(region):
            return []
        return [t for t in self.tables_in(region) if t.fis_target]

    def alarm_pairs(self, region: str) -> list[tuple[TableSpec, str]]:
        """(table, receiving region) of every ReplicationLatency metric emitted in ``region``."""
        return [
            (t, receiving)
            for t in self.tables_in(region)
            for source, receiving in t.replica_pairs()
            if source == region
        ]

    def latency_alarms(self, region: str) -> list[LatencyAlarm]:
        """The ReplicationLatency alarms of ``region``: one per table replicated from it,
        covering every receiving region (:meth:`alarm_pairs`, grouped by table)."""
        out: list[LatencyAlarm] = []
        for table in self.tables_in(region):
            receiving = tuple(r for s, r in table.replica_pairs() if s == region)
            chunks = [
                receiving[i : i + MAX_ALARM_METRICS]
                for i in range(0, len(receiving), MAX_ALARM_METRICS)
            ]
            for i, chunk in enumerate(chunks):
                part = i + 1 if len(chunks) > 1 else None
                out.append(LatencyAlarm(table=table, source=region, receiving=chunk, part=part))
        return out

    def conflict_log(self, region: str) -> TableSpec | None:
        """The conflict-log table of ``region`` (one per region, never replicated)."""
        key = f"{CONFLICT_LOG_KEY}-{region}"
        return next((t for t in self.tables if t.key == key), None)

    def lineage(self, region: str) -> TableSpec | None:
        """The detectors' lineage table, if it has a replica in ``region``."""
        return next((t for t in self.tables if t.key == LINEAGE_KEY and region in t.regions), None)

    def table(self, key: str) -> TableSpec:
        for t in self.tables:
            if t.key == key:
                return t
        raise KeyError(key)


class _Names(TypedDict):
    table_name: str
    key_alias: str


def plan_deployment(policy: Policy, *, table_prefix: str = "") -> DeploymentPlan:
    """Derive every table of the policy, with its replica regions and protections."""
    name = policy.name

    def names(logical: str) -> _Names:
        table_name = f"{table_prefix}{logical}"
        return {"table_name": table_name, "key_alias": naming.key_alias(name, table_name)}

    tables: list[TableSpec] = []
    for dc_name, dc in policy.data_classes.items():
        if isinstance(dc, GlobalDataClass):
            tables.append(
                TableSpec(
                    key=dc_name,
                    kind="global",
                    data_class=dc_name,
                    jurisdiction=GLOBAL_SCOPE,
                    **names(dc.table),
                    regions=tuple(dc.replicas),
                    partition_key=dc.partition_key,
                    sort_key=dc.sort_key,
                    fis_target=len(dc.replicas) > 1,
                    detector=True,
                    subject_attribute=dc.subject_attribute,
                    indexes=tuple(dc.indexes),
                )
            )
            continue
        for jid, j in policy.jurisdictions.items():
            # Primary = first home region; the other regions of the jurisdiction follow
            # in the policy's order. Never a region outside the jurisdiction.
            ordered = [*j.home_regions, *(r for r in j.regions if r not in j.home_regions)]
            tables.append(
                TableSpec(
                    key=f"{dc_name}-{jid}",
                    kind="pinned",
                    data_class=dc_name,
                    jurisdiction=jid,
                    **names(dc.table),
                    regions=tuple(ordered),
                    partition_key=dc.partition_key,
                    sort_key=dc.sort_key,
                    fis_target=len(ordered) > 1,
                    detector=False,
                    indexes=tuple(dc.indexes),
                )
            )
    # The conflict log is the record drills read back: it is never a FIS target. One
    # table per region, unreplicated: what the audit expects (residency.tables).
    tables.extend(
        TableSpec(
            key=f"{CONFLICT_LOG_KEY}-{region}",
            kind="system",
            data_class=None,
            jurisdiction=GLOBAL_SCOPE,
            **names(policy.system.conflict_log_table),
            regions=(region,),
            partition_key="pk",
            sort_key=None,
            fis_target=False,
            detector=False,
        )
        for region in policy.regions
    )
    # The detectors' shared record of parents (regions.lineage): one global table in
    # every region a detector runs in, so each region reads the parents of writes that
    # landed elsewhere. It holds stamps only (no item keys or values), and it is never
    # a FIS target: pausing it would stall detectors, not test the data's replication.
    lineage_regions = policy.lineage_regions()
    if lineage_regions:
        tables.append(
            TableSpec(
                key=LINEAGE_KEY,
                kind="system",
                data_class=LINEAGE,
                jurisdiction=GLOBAL_SCOPE,
                **names(policy.system.lineage_table),
                regions=tuple(lineage_regions),
                partition_key="pk",
                sort_key=None,
                fis_target=False,
                detector=False,
            )
        )

    aliases: dict[str, str] = {}
    for t in tables:
        other = aliases.setdefault(t.key_alias, t.table_name)
        if other != t.table_name:
            raise ConfigError(
                message=(
                    f"tables {other!r} and {t.table_name!r} map to the same KMS alias "
                    f"{t.key_alias!r} (aliases allow only letters, digits, '/', '_' and '-'); "
                    "rename one of the tables in the policy"
                )
            )
    return DeploymentPlan(
        policy_name=name,
        table_prefix=table_prefix,
        regions=tuple(policy.regions),
        tables=tuple(tables),
        replication_latency_alarm_ms=policy.targets.replication_latency_alarm_ms,
        conflict_log_table=f"{table_prefix}{policy.system.conflict_log_table}",
        lineage_table=f"{table_prefix}{policy.system.lineage_table}",
    )
