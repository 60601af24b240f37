"""The inventory collector: which regionkit tables exist where, and how they are set up.

One worker per region lists the region's tables (``ListTables``) and describes
every table whose name is one of the policy's (``DescribeTable``), in every
selected policy region and every extra region. What else it reads depends on the
selected checks' declared permissions: ``DescribeContinuousBackups`` for PITR,
``ListTagsOfResource`` for tags, ``kms:DescribeKey`` to tell a customer-managed
key from an AWS-managed one. Nothing is read that no selected check needs.

Failures are kept per region and per table aspect, with their reason, so checks
report ERROR for exactly what could not be read.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from residency.audit.clients import error_reason
from residency.audit.context import AuditContext, ProgressEvent
from residency.logs import get_logger
from residency.tables import TablePlan

__all__ = ["Inventory", "RegionInventory", "TableState", "collect_inventory"]

log = get_logger("regionkit.audit")


@dataclass
class TableState:
    region: str
    plan: TablePlan
    arn: str
    expected: bool
    exists: bool | None = None
    description: dict[str, Any] | None = None
    error: str | None = None
    pitr_status: str | None = None
    pitr_error: str | None = None
    tags: dict[str, str] | None = None
    tags_error: str | None = None
    kms_manager: str | None = None
    kms_error: str | None = None

    @property
    def table(self) -> str:
        return self.plan.table


@dataclass
class RegionInventory:
    region: str
    in_policy: bool
    error: str | None = None
    tables: dict[str, TableState] = field(default_factory=dict)

    @property
    def listed(self) -> bool:
        return self.error is None


@dataclass
class Inventory:
    regions: dict[str, RegionInventory]

    def table(self, region: str, table: str) -> TableState | None:
        inv = self.regions.get(region)
        return inv.tables.get(table) if inv else None

    def existing(self) -> list[TableState]:
        return [t for inv in self.regions.values() for t in inv.tables.values() if t.exists]


def _aspects(ctx: AuditContext) -> set[str]:
    wanted: set[str] = set()
    for c in ctx.checks:
        perms = set(c.meta.permissions)
        if "dynamodb:DescribeContinuousBackups" in perms:
            wanted.add("pitr")
        if "dynamodb:ListTagsOfResource" in perms:
            wanted.add("tags")
        if "kms:DescribeKey" in perms:
            wanted.add("kms")
    return wanted


def _list_tables(client: Any) -> set[str]:
    names: set[str] = set()
    kwargs: dict[str, Any] = {}
    while True:
        page = client.list_tables(**kwargs)
        names.update(page.get("TableNames", []))
        last = page.get("LastEvaluatedTableName")
        if not last:
            return names
        kwargs["ExclusiveStartTableName"] = last


def _region(ctx: AuditContext, region: str, aspects: set[str]) -> RegionInventory:
    inv = RegionInventory(region, in_policy=region in ctx.policy.regions)
    for plan in ctx.plans:
        inv.tables[plan.table] = TableState(
            region=region,
            plan=plan,
            arn=ctx.arn(region, plan.table),
            expected=region in plan.regions,
        )
    down = ctx.down(region)
    if down:
        inv.error = down
        return inv
    try:
        client = ctx.clients.dynamodb(region)
        present = _list_tables(client)
    except Exception as exc:
        ctx.note_failure(region, exc)
        inv.error = error_reason(exc)
        log.warning("audit.inventory.list_failed", region=region, error=inv.error)
        return inv
    for state in inv.tables.values():
        state.exists = state.table in present
        if state.exists:
            _describe(ctx, client, state, aspects)
    # tables neither expected nor present are of no interest
    inv.tables = {n: t for n, t in inv.tables.items() if t.expected or t.exists}
    return inv


def _guard(ctx: AuditContext, region: str) -> str | None:
    return ctx.down(region)


def _describe(ctx: AuditContext, client: Any, state: TableState, aspects: set[str]) -> None:
    region = state.region
    try:
        state.description = client.describe_table(TableName=state.table)["Table"]
        arn = state.description.get("TableArn")
        if isinstance(arn, str) and arn:
            state.arn = arn
    except Exception as exc:
        ctx.note_failure(region, exc)
        state.error = error_reason(exc)
        return
    if "pitr" in aspects:
        if (down := _guard(ctx, region)) is not None:
            state.pitr_error = down
        else:
            try:
                desc = client.describe_continuous_backups(TableName=state.table)
                pitr = desc["ContinuousBackupsDescription"].get(
                    "PointInTimeRecoveryDescription", {}
                )
                state.pitr_status = str(pitr.get("PointInTimeRecoveryStatus", "DISABLED"))
            except Exception as exc:
                ctx.note_failure(region, exc)
                state.pitr_error = error_reason(exc)
    if "tags" in aspects:
        if (down := _guard(ctx, region)) is not None:
            state.tags_error = down
        else:
            try:
                tags: dict[str, str] = {}
                kwargs: dict[str, Any] = {"ResourceArn": state.arn}
                while True:
                    page = client.list_tags_of_resource(**kwargs)
                    tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
                    if not page.get("NextToken"):
                        break
                    kwargs["NextToken"] = page["NextToken"]
                state.tags = tags
            except Exception as exc:
                ctx.note_failure(region, exc)
                state.tags_error = error_reason(exc)
    if "kms" in aspects:
        sse = state.description.get("SSEDescription") or {}
        key_arn = sse.get("KMSMasterKeyArn")
        if sse.get("SSEType") == "KMS" and isinstance(key_arn, str) and key_arn:
            key_region = key_arn.split(":")[3] if key_arn.count(":") >= 5 else region
            if (down := _guard(ctx, key_region)) is not None:
                state.kms_error = down
            else:
                try:
                    kms = ctx.clients.client("kms", key_region)
                    meta = kms.describe_key(KeyId=key_arn)
                    state.kms_manager = str(meta["KeyMetadata"].get("KeyManager", ""))
                    if state.kms_manager == "CUSTOMER":
                        # The reserved alias/aws/ names only AWS-managed keys (moto reports
                        # its aws/dynamodb default key as CUSTOMER; AWS does not).
                        aliases = kms.list_aliases(KeyId=key_arn).get("Aliases", [])
                        if any(
                            str(a.get("AliasName", "")).startswith("alias/aws/") for a in aliases
                        ):
                            state.kms_manager = "AWS"
                except Exception as exc:
                    ctx.note_failure(key_region, exc)
                    state.kms_error = error_reason(exc)


def collect_inventory(ctx: AuditContext) -> Inventory:
    aspects = _aspects(ctx)
    regions = ctx.all_regions
    out: dict[str, RegionInventory] = {}
    with ThreadPoolExecutor(
        max_workers=max(1, min(ctx.options.workers, len(regions))),
        thread_name_prefix="regionkit-audit-inventory",
    ) as pool:
        futures = {r: pool.submit(_region, ctx, r, aspects) for r in regions}
        for region, future in futures.items():
            # _region catches AWS failures itself; anything else is a bug and propagates
            out[region] = future.result()
            ctx.progress(ProgressEvent("inventory", region, advance=1, done=True))
    return Inventory(out)
