"""Infrastructure checks: the tables, where they are and how they are set up.

They read the inventory (:mod:`residency.audit.inventory`): every table of every
selected policy region and every extra region is listed and classed, so a table
that exists where the policy does not place it is found too, and so is a renamed
copy of a pinned table. Tables of no data class (``other``) are inventoried and
otherwise left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from residency.audit.context import AuditContext
from residency.audit.inventory import TableState, inventory_of
from residency.audit.model import Finding
from residency.audit.registry import Check, check
from residency.audit.severity import Harm, severity_of
from residency.tables import expected_tags

_LIST = "dynamodb:ListTables"
_DESCRIBE = "dynamodb:DescribeTable"
# What every call in an opt-in region the account has not enabled is refused with (and,
# in an enabled one, a v1 session token from the global STS endpoint: so the account's
# own word, ec2:DescribeRegions, decides which it is).
_NOT_ENABLED = frozenset({"UnrecognizedClientException", "InvalidClientTokenId"})


def _not_opted_in(ctx: AuditContext) -> frozenset[str]:
    """The regions the account has not opted in to; empty when that cannot be read
    (then a refused region stays an ERROR of what it would have found)."""

    def ask() -> frozenset[str]:
        try:
            ec2 = ctx.clients.client("ec2", ctx.policy.regions[0])
            regions = ec2.describe_regions(AllRegions=True).get("Regions", [])
        except Exception:
            return frozenset()
        return frozenset(
            str(r["RegionName"]) for r in regions if r.get("OptInStatus") == "not-opted-in"
        )

    return ctx.once("not_opted_in", ask)


def _tables(
    ctx: AuditContext, me: Check, judge: Callable[[TableState], Iterator[Finding]]
) -> Iterator[Finding]:
    """Run ``judge`` on every existing table; ERROR for what could not be read."""
    for region, inv in inventory_of(ctx).regions.items():
        if not inv.listed:
            if inv.in_policy:
                for st in inv.tables.values():
                    if st.expected:
                        yield me.error(
                            region=region,
                            resource=st.arn,
                            reason=f"the region could not be read: {inv.error}",
                        )
            continue
        for st in inv.tables.values():
            if not st.exists or not st.managed:
                continue
            if st.error or st.description is None:
                yield me.error(
                    region=region, resource=st.arn, reason=f"DescribeTable failed: {st.error}"
                )
                continue
            yield from judge(st)


def _what(st: TableState) -> str:
    p = st.plan
    if st.copy_of is not None:
        return f"unlisted table {p.table} (a copy of {p.kind} class {st.copy_of})"
    return f"{p.kind} table {p.table} ({p.data_class})"


@check(
    id="infra.table_placement",
    title="Tables exist exactly where the policy places them",
    severity="critical",
    rationale="A pinned table or a global replica in a region outside its allowed set stores "
    "data where the law does not allow it; a missing table breaks routing and failover.",
    remediation="Delete (after export and review) any table outside its allowed regions; "
    "deploy missing tables from the policy (`cdk deploy` or `regionkit local up`).",
    permissions=[
        _LIST,
        _DESCRIBE,
        "dynamodb:ListTagsOfResource",
        "dynamodb:Scan",
        "ec2:DescribeRegions",
    ],
)
def table_placement(ctx: AuditContext) -> Iterator[Finding]:
    """Each data class's table exists in every region the policy places it in, and in no
    other region (the selected policy regions and any extra regions are listed). Every
    other table is classed by its tags, its name, its key schema and a sample of its
    items; one that looks like a copy of a pinned class is a finding: critical outside
    the jurisdiction it was tagged with, or in a region of no jurisdiction.

    ``--extra-regions enabled`` lists every region enabled in the account
    (``ec2:DescribeRegions``), ``all`` every commercial region.

    Example::

        regionkit audit run --checks infra.table_placement --extra-regions ap-south-1,us-west-2
    """
    me = table_placement
    for region, inv in inventory_of(ctx).regions.items():
        if (
            not inv.listed
            and not inv.in_policy
            and inv.error_code in _NOT_ENABLED
            and region in _not_opted_in(ctx)
        ):
            yield me.error(
                region=region,
                resource=ctx.arn(region, "*"),
                severity=severity_of(Harm.REGION_REFUSED),
                reason=f"{region} refused these credentials ({inv.error}); it is an opt-in "
                "region the account has not enabled (ec2:DescribeRegions), so no table can "
                "exist there",
                remediation="List only the enabled regions (--extra-regions enabled), or "
                "enable the region and audit it.",
            )
            continue
        if not inv.listed:
            for st in inv.tables.values():
                if st.expected or not inv.in_policy:
                    yield me.error(
                        region=region, resource=st.arn, reason=f"ListTables failed: {inv.error}"
                    )
            continue
        for st in inv.tables.values():
            p = st.plan
            if not st.listed:
                yield from _unlisted(ctx, st)
                continue
            if st.exists and st.expected:
                yield me.passed(
                    region=region,
                    resource=st.arn,
                    reason=f"{_what(st)} is in {region}, as the policy places it",
                )
            elif st.exists:
                j = ctx.jurisdiction(region)
                where = f"{region} ({j})" if j else f"{region} (in no jurisdiction of the policy)"
                yield me.failed(
                    region=region,
                    resource=st.arn,
                    severity=severity_of(
                        Harm.TABLE_OUTSIDE
                        if p.kind == "pinned"
                        else Harm.GLOBAL_REPLICA_OUTSIDE
                        if p.kind == "global"
                        else Harm.SYSTEM_MISPLACED
                    ),
                    reason=f"{_what(st)} exists in {where}, outside its allowed regions "
                    f"({', '.join(p.regions)})",
                    details={"allowed_regions": list(p.regions)},
                )
            elif st.expected:
                yield me.failed(
                    region=region,
                    resource=st.arn,
                    severity="high",
                    reason=f"{_what(st)} is missing from {region}, where the policy places it",
                    remediation="Deploy the table from the policy (`cdk deploy`, or "
                    "`regionkit local up` for the local cluster).",
                )


def _unlisted(ctx: AuditContext, st: TableState) -> Iterator[Finding]:
    """A table the policy does not name: a finding only when it copies a data class."""
    me = table_placement
    if st.error:
        yield me.error(
            region=st.region,
            resource=st.arn,
            reason=f"unlisted table {st.table} could not be described ({st.error}), so it "
            "cannot be told apart from a copy of personal data",
        )
        return
    if st.copy_of is None:
        unread = [
            f"{what} ({why})"
            for what, why in (
                ("its tags", st.tags_error),
                ("a sample of its items", st.sample_error),
            )
            if why
        ]
        if unread and not st.classified_by:  # not a sibling deployment either
            yield me.error(
                region=st.region,
                resource=st.arn,
                reason=f"unlisted table {st.table} could not be classed: "
                f"{' and '.join(unread)} could not be read, so it cannot be told apart from "
                "a copy of personal data",
            )
        return
    j = ctx.jurisdiction(st.region)
    basis = ", ".join(st.classified_by)
    details: dict[str, object] = {"copy_of": st.copy_of, "classified_by": list(st.classified_by)}
    if st.plan.kind != "pinned":
        yield me.failed(
            region=st.region,
            resource=st.arn,
            severity=severity_of(Harm.COPY_GLOBAL),
            reason=f"{_what(st)} (by {basis}) is not managed by the policy; its items are "
            "scanned for personal data",
            details=details,
        )
        return
    tagged = st.tag_jurisdiction
    if tagged is not None and tagged not in ctx.policy.jurisdictions:
        tagged = "(not a jurisdiction of the policy)"
    outside = j is None or (tagged is not None and tagged != j)
    where = f"{st.region} ({j})" if j else f"{st.region} (in no jurisdiction of the policy)"
    yield me.failed(
        region=st.region,
        resource=st.arn,
        severity=severity_of(Harm.TABLE_OUTSIDE if outside else Harm.COPY_INSIDE),
        reason=f"{_what(st)} (by {basis}) exists in {where}"
        + (f", tagged for jurisdiction {tagged}" if tagged and tagged != j else "")
        + ": personal data outside the policy's tables; its items are judged like "
        f"{st.copy_of}'s",
        remediation="Export it for review, then delete it; find who copied the table.",
        details=details,
    )


# Replica states of a replica that is not (yet, or any more) one to fail over to.
_NOT_SERVING = frozenset({"CREATING", "DELETING"})
# Replica states in which changes do not flow (or the replica is not there at all).
_STALLED = frozenset(
    {
        "CREATION_FAILED",
        "REGION_DISABLED",
        "INACCESSIBLE_ENCRYPTION_CREDENTIALS",
        "REPLICATION_NOT_AUTHORIZED",
        "ARCHIVING",
        "ARCHIVED",
    }
)


def _replica_status(st: TableState, replicas: list[dict[str, Any]]) -> Iterator[Finding]:
    """A listed replica that does not replicate: the failover it stands for is not there
    (``REPLICATION_NOT_AUTHORIZED`` for 20 hours turns it into a one-region table)."""
    for r in replicas:
        status = str(r.get("ReplicaStatus") or "ACTIVE")
        if status in _STALLED:
            yield replica_sets.failed(
                region=st.region,
                resource=st.arn,
                severity=severity_of(Harm.MISSING),
                discriminator=f"status-{r['RegionName']}",
                reason=f"{_what(st)}: its replica in {r['RegionName']} is {status}, so "
                "changes do not reach it",
                details={"replica": str(r["RegionName"]), "status": status},
            )


@check(
    id="infra.replica_sets",
    title="Replica sets match the policy",
    severity="critical",
    rationale="A replica outside the allowed set copies every item across the border; a "
    "missing replica removes the failover the policy promises.",
    remediation="Remove replicas outside the allowed set with UpdateTable ReplicaUpdates "
    "(one per deployment) and add the missing ones.",
    permissions=[_LIST, _DESCRIBE],
)
def replica_sets(ctx: AuditContext) -> Iterator[Finding]:
    """A global table's replicas (``DescribeTable`` ``Replicas``) are exactly its policy
    replicas; a pinned table's replicas stay inside its region's jurisdiction. Where
    ``Replicas`` is absent (a single-region table, or the local cluster, whose moto has no
    replica description) the replica set is the placement ``infra.table_placement`` checks.

    Example::

        regionkit audit run --checks infra.replica_sets
    """
    me = replica_sets

    def judge(st: TableState) -> Iterator[Finding]:
        desc = st.description or {}
        replicas = [r for r in desc.get("Replicas") or [] if r.get("RegionName")]
        described = [str(r["RegionName"]) for r in replicas]
        # a replica being created or deleted holds data but is no failover yet (or any more)
        serving = {
            str(r["RegionName"])
            for r in replicas
            if str(r.get("ReplicaStatus") or "ACTIVE") not in _NOT_SERVING
        }
        # An MRSC witness holds replicated change data and is listed only here
        # (never by ListTables): it counts where data may be, not as a failover replica.
        witnesses = [
            str(w["RegionName"])
            for w in desc.get("GlobalTableWitnesses") or []
            if w.get("RegionName")
        ]
        allowed = st.plan.allowed_replicas(ctx.policy, st.region)
        stalled = list(_replica_status(st, replicas))
        yield from stalled
        if not described and not witnesses:
            yield me.passed(
                region=st.region,
                resource=st.arn,
                reason=f"{_what(st)}: DescribeTable lists no replicas; its replica set is its "
                "placement by region (see infra.table_placement)",
                details={"basis": "placement"},
            )
            return
        have = set(described) | {st.region}
        extra = sorted((have | set(witnesses)) - allowed)
        missing = sorted(allowed - (serving | {st.region})) if st.plan.kind != "system" else []
        if extra:
            kinds = [
                "a witness" if r in witnesses and r not in have else "a replica" for r in extra
            ]
            yield me.failed(
                region=st.region,
                resource=st.arn,
                discriminator="extra",
                reason=f"{_what(st)} has replicated data in "
                + ", ".join(f"{r} ({k})" for r, k in zip(extra, kinds, strict=True))
                + f", outside its allowed set ({', '.join(sorted(allowed)) or 'none'})",
                details={"replicas": sorted(have), "witnesses": witnesses, "outside": extra},
            )
        if missing:
            yield me.failed(
                region=st.region,
                resource=st.arn,
                severity="high",
                discriminator="missing",
                reason=f"{_what(st)} lacks replicas in {', '.join(missing)}",
                details={"replicas": sorted(have), "missing": missing},
            )
        if not extra and not missing and not stalled:
            yield me.passed(
                region=st.region,
                resource=st.arn,
                reason=f"{_what(st)} replicates to {', '.join(sorted(have))}",
            )

    yield from _tables(ctx, me, judge)


@check(
    id="infra.streams",
    title="Streams carry new and old images",
    severity="high",
    rationale="Replication and the conflict detector read every replica's stream; without "
    "NEW_AND_OLD_IMAGES conflicts go unrecorded.",
    remediation="UpdateTable StreamSpecification={StreamEnabled: true, StreamViewType: "
    "NEW_AND_OLD_IMAGES}.",
    permissions=[_LIST, _DESCRIBE],
)
def streams(ctx: AuditContext) -> Iterator[Finding]:
    """Every table has a stream with view type NEW_AND_OLD_IMAGES
    (when ``targets.audit.streams``).

    Example::

        regionkit audit run --checks infra.streams
    """
    me = streams
    required = ctx.policy.targets.audit.streams

    def judge(st: TableState) -> Iterator[Finding]:
        spec = (st.description or {}).get("StreamSpecification") or {}
        ok = spec.get("StreamEnabled") and spec.get("StreamViewType") == "NEW_AND_OLD_IMAGES"
        if ok:
            yield me.passed(
                region=st.region, resource=st.arn, reason=f"{_what(st)} streams NEW_AND_OLD_IMAGES"
            )
        elif not required:
            yield me.passed(
                region=st.region,
                resource=st.arn,
                reason="not required (targets.audit.streams is false)",
            )
        else:
            view = spec.get("StreamViewType") if spec.get("StreamEnabled") else None
            yield me.failed(
                region=st.region,
                resource=st.arn,
                reason=f"{_what(st)} has "
                + (f"stream view type {view}" if view else "no stream enabled"),
            )

    yield from _tables(ctx, me, judge)


@check(
    id="infra.pitr",
    title="Point-in-time recovery is on",
    severity="high",
    rationale="Without PITR a bad write or delete cannot be undone, and the table cannot be "
    "exported for an audit without scanning it.",
    remediation="UpdateContinuousBackups PointInTimeRecoverySpecification="
    "{PointInTimeRecoveryEnabled: true}.",
    permissions=[_LIST, _DESCRIBE, "dynamodb:DescribeContinuousBackups"],
)
def pitr(ctx: AuditContext) -> Iterator[Finding]:
    """Every table has point-in-time recovery enabled (when ``targets.audit.pitr``).

    Example::

        regionkit audit run --checks infra.pitr --regions eu-west-1
    """
    me = pitr
    required = ctx.policy.targets.audit.pitr

    def judge(st: TableState) -> Iterator[Finding]:
        if st.pitr_error:
            yield me.error(
                region=st.region,
                resource=st.arn,
                reason=f"DescribeContinuousBackups failed: {st.pitr_error}",
            )
        elif st.pitr_status == "ENABLED":
            yield me.passed(
                region=st.region, resource=st.arn, reason=f"{_what(st)} has PITR enabled"
            )
        elif not required:
            yield me.passed(
                region=st.region,
                resource=st.arn,
                reason="not required (targets.audit.pitr is false)",
            )
        else:
            yield me.failed(
                region=st.region,
                resource=st.arn,
                reason=f"{_what(st)} has PITR {st.pitr_status or 'DISABLED'}",
            )

    yield from _tables(ctx, me, judge)


@check(
    id="infra.kms",
    title="Encrypted with a customer-managed KMS key in the table's region",
    severity="high",
    rationale="A customer-managed key lets the data owner revoke access and audit every use; "
    "KMS keys are regional, so each replica needs a key in its own region.",
    remediation="UpdateTable SSESpecification={Enabled: true, SSEType: KMS, KMSMasterKeyId: "
    "<customer-managed key ARN in the same region>}.",
    permissions=[_LIST, _DESCRIBE, "kms:DescribeKey", "kms:ListAliases"],
)
def kms(ctx: AuditContext) -> Iterator[Finding]:
    """Every table is encrypted with SSE type KMS under a customer-managed key (KeyManager
    CUSTOMER and no reserved ``alias/aws/`` alias: not the AWS-owned or the AWS-managed
    ``aws/dynamodb`` key) that lives in the table's region
    (when ``targets.audit.customer_managed_kms``).

    Example::

        regionkit audit run --checks infra.kms
    """
    me = kms
    required = ctx.policy.targets.audit.customer_managed_kms

    def judge(st: TableState) -> Iterator[Finding]:
        sse = (st.description or {}).get("SSEDescription") or {}
        key = sse.get("KMSMasterKeyArn")
        problem = None
        if sse.get("SSEType") != "KMS" or not key:
            problem = "is encrypted with an AWS-owned key (no KMS key)"
        elif sse.get("Status") not in {"ENABLED", "UPDATING"}:
            problem = f"has SSE status {sse.get('Status')}"
        elif st.kms_error:
            yield me.error(
                region=st.region,
                resource=st.arn,
                reason=f"kms:DescribeKey on its key failed: {st.kms_error}",
            )
            return
        elif st.kms_manager != "CUSTOMER":
            problem = f"is encrypted with an AWS-managed key ({key})"
        elif str(key).split(":")[3:4] != [st.region]:
            problem = f"is encrypted with a key in another region ({key})"
        if problem is None:
            yield me.passed(
                region=st.region,
                resource=st.arn,
                reason=f"{_what(st)} uses customer-managed key {key}",
                details={"kms_key": str(key)},
            )
        elif not required:
            yield me.passed(
                region=st.region,
                resource=st.arn,
                reason="not required (targets.audit.customer_managed_kms is false)",
            )
        else:
            yield me.failed(region=st.region, resource=st.arn, reason=f"{_what(st)} {problem}")

    yield from _tables(ctx, me, judge)


@check(
    id="infra.deletion_protection",
    title="Deletion protection is on",
    severity="medium",
    rationale="A deleted table loses its replicas' data in every region at once.",
    remediation="UpdateTable DeletionProtectionEnabled=true.",
    permissions=[_LIST, _DESCRIBE],
)
def deletion_protection(ctx: AuditContext) -> Iterator[Finding]:
    """Every table has deletion protection enabled (when ``targets.audit.deletion_protection``).

    Example::

        regionkit audit run --checks infra.deletion_protection
    """
    me = deletion_protection
    required = ctx.policy.targets.audit.deletion_protection

    def judge(st: TableState) -> Iterator[Finding]:
        if (st.description or {}).get("DeletionProtectionEnabled"):
            yield me.passed(
                region=st.region, resource=st.arn, reason=f"{_what(st)} has deletion protection"
            )
        elif not required:
            yield me.passed(
                region=st.region,
                resource=st.arn,
                reason="not required (targets.audit.deletion_protection is false)",
            )
        else:
            yield me.failed(
                region=st.region, resource=st.arn, reason=f"{_what(st)} has no deletion protection"
            )

    yield from _tables(ctx, me, judge)


@check(
    id="infra.tags",
    title="Tables carry the regionkit tags",
    severity="low",
    rationale="The regionkit:data-class, regionkit:jurisdiction and regionkit:policy tags "
    "tie each table to the policy for access control (ABAC), cost and incident response.",
    remediation="TagResource with the tags the policy implies (the CDK app and "
    "`regionkit local up` set them).",
    permissions=[_LIST, _DESCRIBE, "dynamodb:ListTagsOfResource"],
)
def tags(ctx: AuditContext) -> Iterator[Finding]:
    """Every table carries ``regionkit:data-class``, ``regionkit:jurisdiction`` (the
    jurisdiction for pinned tables, ``global`` otherwise) and ``regionkit:policy`` with the
    values the policy implies.

    Example::

        regionkit audit run --checks infra.tags
    """
    me = tags

    def judge(st: TableState) -> Iterator[Finding]:
        if st.tags_error or st.tags is None:
            yield me.error(
                region=st.region,
                resource=st.arn,
                reason=f"ListTagsOfResource failed: {st.tags_error}",
            )
            return
        want = expected_tags(ctx.policy, st.plan, st.region)
        wrong = [
            f"{k}={st.tags[k]!r} (expected {v!r})" if k in st.tags else f"{k} missing"
            for k, v in want.items()
            if st.tags.get(k) != v
        ]
        if wrong:
            yield me.failed(
                region=st.region,
                resource=st.arn,
                reason=f"{_what(st)}: {'; '.join(wrong)}",
                details={"expected_tags": [f"{k}={v}" for k, v in want.items()]},
            )
        else:
            yield me.passed(
                region=st.region,
                resource=st.arn,
                reason=f"{_what(st)} carries " + ", ".join(f"{k}={v}" for k, v in want.items()),
            )

    yield from _tables(ctx, me, judge)
