"""The inventory collector: every table in every audited region, and how it is set up.

One worker per region lists *all* the region's tables (``ListTables``), in every
selected policy region and every extra region (``--extra-regions``, ``all`` for
every commercial region), like cloud-custodian's resource managers: ask the
account what exists, then judge. It never starts from the names it expects,
because a renamed copy is exactly what an audit must see.

Each table is described (``DescribeTable``) and *classed*:

* a table the policy names is that data class;
* any other table is compared with the pinned data classes by **tags**
  (``regionkit:data-class``), by **name** (the class's table name inside it:
  ``profiles-eu-copy``), and by **key schema plus a sample** of its items
  (``Scan`` of a few items: keys that are regionkit user IDs, attribute names
  that are the class's PII attributes). A table that looks like a copy of a pinned
  class is data-scanned like the class it copies (``copy_of``); a copy of a global
  class is scanned for PII; anything else is inventoried as ``other`` and left alone.

What else is read depends on the selected checks' declared permissions:
``DescribeContinuousBackups`` for PITR, ``ListTagsOfResource`` for tags,
``kms:DescribeKey`` to tell a customer-managed key from an AWS-managed one.

Failures are kept per region and per table aspect, with their reason, so checks
report ERROR for exactly what could not be read.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from residency.audit.clients import error_code, error_reason
from residency.audit.context import AuditContext, ProgressEvent
from residency.audit.safety import USER_ID
from residency.logs import get_logger
from residency.pii_detect import normalize_name
from residency.tables import TAG_DATA_CLASS, TAG_JURISDICTION, TAG_POLICY, TablePlan

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
    sample_error: str | None = None  # an unlisted table's items could not be sampled
    kms_manager: str | None = None
    kms_error: str | None = None
    listed: bool = True  # the policy names this table (False: found by listing)
    copy_of: str | None = None  # the data class an unlisted table copies
    classified_by: tuple[str, ...] = ()
    tag_jurisdiction: str | None = None

    @property
    def table(self) -> str:
        return self.plan.table

    @property
    def managed(self) -> bool:
        """A policy table, or a copy of a data class: infra and data checks judge it."""
        return self.listed or self.copy_of is not None


@dataclass
class RegionInventory:
    region: str
    in_policy: bool
    error: str | None = None
    error_code: str | None = None  # the AWS error code ListTables failed with, if any
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

    def copies(self) -> list[TableState]:
        """Unlisted tables classed as copies of a data class."""
        return [
            t
            for inv in self.regions.values()
            for t in inv.tables.values()
            if t.exists and not t.listed and t.copy_of is not None
        ]


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
        client = ctx.clients.client("dynamodb", region)
        present = _list_tables(client)
    except Exception as exc:
        ctx.note_failure(region, exc)
        inv.error, inv.error_code = error_reason(exc), error_code(exc)
        log.warning("audit.inventory.list_failed", region=region, error=inv.error)
        return inv
    for state in inv.tables.values():
        state.exists = state.table in present
        if state.exists:
            _describe(ctx, client, state, aspects)
    # tables neither expected nor present are of no interest
    inv.tables = {n: t for n, t in inv.tables.items() if t.expected or t.exists}
    for name in sorted(present - set(inv.tables)):
        state = _classify(ctx, client, region, name)
        inv.tables[name] = state
        if state.copy_of is not None and state.error is None:
            _describe(ctx, client, state, aspects, described=True)
    return inv


def _key_schema(desc: dict[str, Any]) -> tuple[str | None, str | None, dict[str, str]]:
    types = {
        str(a["AttributeName"]): str(a["AttributeType"])
        for a in desc.get("AttributeDefinitions") or []
    }
    pk = sk = None
    for k in desc.get("KeySchema") or []:
        if k.get("KeyType") == "HASH":
            pk = str(k["AttributeName"])
        elif k.get("KeyType") == "RANGE":
            sk = str(k["AttributeName"])
    return pk, sk, types


def _classify(ctx: AuditContext, client: Any, region: str, name: str) -> TableState:
    """Describe an unlisted table and class it: a copy of a data class, or other."""
    # A table of no data class: "global" with no class; TableState.managed is False.
    other = TablePlan(
        table=name,
        logical=name,
        data_class="",
        kind="global",
        partition_key="",
        sort_key=None,
        regions=(),
    )
    state = TableState(
        region, other, ctx.arn(region, name), expected=False, exists=True, listed=False
    )
    try:
        desc = client.describe_table(TableName=name)["Table"]
        state.description = desc
        if isinstance(desc.get("TableArn"), str):
            state.arn = desc["TableArn"]
    except Exception as exc:
        ctx.note_failure(region, exc)
        state.error = error_reason(exc)
        return state
    pk, sk, types = _key_schema(desc)
    try:
        tags = _tags(client, state.arn)
        state.tags = tags
    except Exception as exc:
        ctx.note_failure(region, exc)
        state.tags_error = error_reason(exc)
        tags = {}
    plans = {p.data_class: p for p in ctx.plans if p.kind in ("pinned", "global")}
    if _sibling(ctx, region, name, tags, plans):
        state.classified_by = ("another deployment of this policy (tags, name)",)
        return state
    sample = _sample(ctx, client, state, pk)
    votes = _votes(ctx, name, tags, plans, sample, (pk, sk, types))
    # pinned classes first: a table that looks like personal data is judged as such
    ranked = sorted(
        votes.items(), key=lambda kv: (plans[kv[0]].kind != "pinned", -len(kv[1]), kv[0])
    )
    if ranked:
        dc, basis = ranked[0]
        base = plans[dc]
        state.plan = TablePlan(
            table=name,
            logical=base.logical,
            data_class=dc,
            kind=base.kind,
            partition_key=pk or base.partition_key,
            sort_key=sk,
            regions=base.regions,
            is_directory=False,
        )
        state.copy_of = dc
        state.classified_by = tuple(basis)
        state.tag_jurisdiction = tags.get(TAG_JURISDICTION)
    return state


def _sample(
    ctx: AuditContext, client: Any, state: TableState, pk: str | None
) -> list[dict[str, Any]]:
    """A few items of an unlisted table (none when it has no key or the region is down).

    A refused or failed read is kept in ``state.sample_error``: a table that could not be
    sampled (nor classed otherwise) is unknown, never "other".
    """
    down = ctx.down(state.region)
    if down:  # the region stopped answering: this table was not sampled either
        state.sample_error = down
        return []
    if pk is None or ctx.options.inventory_sample <= 0:
        return []
    try:
        page = client.scan(TableName=state.table, Limit=ctx.options.inventory_sample)
        return list(page.get("Items", []))
    except Exception as exc:
        ctx.note_failure(state.region, exc)
        state.sample_error = error_reason(exc)
        return []


def _votes(
    ctx: AuditContext,
    name: str,
    tags: dict[str, str],
    plans: dict[str, TablePlan],
    sample: list[dict[str, Any]],
    schema: tuple[str | None, str | None, dict[str, str]],
) -> dict[str, list[str]]:
    """The data classes an unlisted table looks like, each with what says so."""
    pk, sk, types = schema
    votes: dict[str, list[str]] = {}
    tagged = tags.get(TAG_DATA_CLASS)
    if tagged in plans:
        votes.setdefault(tagged, []).append("tags")
    lowered = name.lower()
    for dc, plan in plans.items():
        if plan.logical.lower() in lowered:
            votes.setdefault(dc, []).append("name")
    user_keys = sum(
        1
        for item in sample
        if isinstance(item.get(pk or ""), dict) and USER_ID.match(str(item[pk or ""].get("S", "")))
    )
    names = {normalize_name(n) for item in sample for n in item}
    # Keyed by regionkit user IDs (whatever the key is called), and not directory-shaped:
    # one subject's data per item, like a pinned class.
    subjects = bool(sample) and user_keys * 2 >= len(sample) and "homeregion" not in names
    for dc, plan in plans.items():
        if plan.kind != "pinned" or not subjects:
            continue
        attrs = {
            normalize_name(a) for a in getattr(ctx.policy.data_classes[dc], "pii_attributes", [])
        }
        same_keys = plan.partition_key == pk and plan.sort_key == sk and types.get(pk or "") == "S"
        if same_keys or attrs & names:
            votes.setdefault(dc, []).extend([*(["key-schema"] if same_keys else []), "sample"])
    return votes


def _sibling(
    ctx: AuditContext, region: str, name: str, tags: dict[str, str], plans: dict[str, TablePlan]
) -> bool:
    """Another deployment of the same policy (another table prefix), placed as the policy
    places the class: its own audit (with its prefix) reads its items.

    Tagged with this policy and a data class, named ``<prefix><table>``, and where that
    class may be: a pinned table in a region of the jurisdiction its tag names, a global
    table in one of its replica regions. Anything else that looks like a class is a copy.
    """
    plan = plans.get(tags.get(TAG_DATA_CLASS, ""))
    if plan is None or tags.get(TAG_POLICY) != ctx.policy.name or not name.endswith(plan.logical):
        return False
    if plan.kind == "pinned":
        j = ctx.jurisdiction(region)
        return j is not None and tags.get(TAG_JURISDICTION) == j
    return region in plan.regions


def _tags(client: Any, arn: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    kwargs: dict[str, Any] = {"ResourceArn": arn}
    while True:
        page = client.list_tags_of_resource(**kwargs)
        tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
        if not page.get("NextToken"):
            return tags
        kwargs["NextToken"] = page["NextToken"]


def _guard(ctx: AuditContext, region: str) -> str | None:
    return ctx.down(region)


def _describe(
    ctx: AuditContext, client: Any, state: TableState, aspects: set[str], *, described: bool = False
) -> None:
    region = state.region
    if not described:
        try:
            state.description = client.describe_table(TableName=state.table)["Table"]
            arn = state.description.get("TableArn")
            if isinstance(arn, str) and arn:
                state.arn = arn
        except Exception as exc:
            ctx.note_failure(region, exc)
            state.error = error_reason(exc)
            return
    assert state.description is not None
    if "pitr" in aspects:
        _describe_pitr(ctx, client, state)
    if "tags" in aspects and state.tags is None:
        _describe_tags(ctx, client, state)
    if "kms" in aspects:
        _describe_kms(ctx, state)


def _describe_pitr(ctx: AuditContext, client: Any, state: TableState) -> None:
    if (down := _guard(ctx, state.region)) is not None:
        state.pitr_error = down
        return
    try:
        desc = client.describe_continuous_backups(TableName=state.table)
        pitr = desc["ContinuousBackupsDescription"].get("PointInTimeRecoveryDescription", {})
        state.pitr_status = str(pitr.get("PointInTimeRecoveryStatus", "DISABLED"))
    except Exception as exc:
        ctx.note_failure(state.region, exc)
        state.pitr_error = error_reason(exc)


def _describe_tags(ctx: AuditContext, client: Any, state: TableState) -> None:
    if (down := _guard(ctx, state.region)) is not None:
        state.tags_error = down
        return
    try:
        state.tags = _tags(client, state.arn)
    except Exception as exc:
        ctx.note_failure(state.region, exc)
        state.tags_error = error_reason(exc)


def _describe_kms(ctx: AuditContext, state: TableState) -> None:
    """Who manages the table's KMS key (AWS or the customer), asked in the key's region."""
    assert state.description is not None
    sse = state.description.get("SSEDescription") or {}
    key_arn = sse.get("KMSMasterKeyArn")
    if sse.get("SSEType") != "KMS" or not isinstance(key_arn, str) or not key_arn:
        return
    key_region = key_arn.split(":")[3] if key_arn.count(":") >= 5 else state.region
    if (down := _guard(ctx, key_region)) is not None:
        state.kms_error = down
        return
    try:
        kms = ctx.clients.client("kms", key_region)
        meta = kms.describe_key(KeyId=key_arn)
        state.kms_manager = str(meta["KeyMetadata"].get("KeyManager", ""))
        if state.kms_manager == "CUSTOMER":
            # The reserved alias/aws/ names only AWS-managed keys (moto reports
            # its aws/dynamodb default key as CUSTOMER; AWS does not).
            aliases = kms.list_aliases(KeyId=key_arn).get("Aliases", [])
            if any(str(a.get("AliasName", "")).startswith("alias/aws/") for a in aliases):
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


def inventory_of(ctx: AuditContext) -> Inventory:
    """The audit's inventory (collected once per run, shared by every check)."""
    return ctx.once("inventory", lambda: collect_inventory(ctx))
