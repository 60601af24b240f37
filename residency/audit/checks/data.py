"""Data checks: where each item actually is. They share one parallel, streaming read of
the tables (:mod:`residency.audit.datascan`), by scan or from a point-in-time export.

Items are reported by key (a pinned item's key is its subject's opaque user ID), and
attributes by *name*; no value read from an item ever reaches a finding.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from residency.audit.context import AuditContext
from residency.audit.datascan import DataScan, Misplaced, TableScan
from residency.audit.model import Finding
from residency.audit.registry import Check, check

_SCAN = ["dynamodb:ListTables", "dynamodb:DescribeTable", "dynamodb:Scan"]
_EXPORT = [
    "dynamodb:ExportTableToPointInTime",
    "dynamodb:DescribeExport",
    "s3:GetBucketLocation",
    "s3:ListBucket",
    "s3:GetObject",
    "s3:PutObject",
    "s3:AbortMultipartUpload",
    "s3:PutObjectAcl",
]


def _read(ts: TableScan) -> str:
    how = "exported" if ts.source == "export" else "scanned"
    text = f"{how} {ts.items:,} items"
    if ts.sampled:
        text += " (a sample)"
    return text


def _scan_errors(me: Check, scans: list[TableScan]) -> Iterator[Finding]:
    for ts in scans:
        for i, err in enumerate(ts.errors):
            yield me.error(
                region=ts.region,
                resource=ts.arn,
                discriminator=f"read-{i}",
                reason=f"{ts.plan.table} in {ts.region} could not be read: {err}",
            )


def _export_errors(me: Check, scan: DataScan) -> Iterator[Finding]:
    for arn, reason in scan.export_errors:
        region = arn.split(":")[3] if arn.count(":") >= 5 else "global"
        yield me.error(
            region=region,
            resource=arn,
            discriminator="export",
            reason=f"the export could not be described: {reason}",
        )


def _capped(
    ctx: AuditContext, items: list[Misplaced]
) -> Iterator[tuple[tuple[str, str], list[Misplaced], int]]:
    by_table: dict[tuple[str, str], list[Misplaced]] = defaultdict(list)
    for m in items:
        by_table[(m.region, m.table)].append(m)
    cap = ctx.options.max_findings_per_resource
    for key in sorted(by_table):
        found = sorted(by_table[key], key=lambda m: m.key)
        yield key, found[:cap], max(0, len(found) - cap)


@check(
    id="data.pinned_placement",
    title="Every pinned item is stored in its subject's jurisdiction",
    severity="critical",
    rationale="This is the residency rule itself: personal data of a subject from "
    "jurisdiction J may be stored only in J's regions.",
    remediation="Move the item to its subject's home (router.move_user), or delete the copy "
    "outside the jurisdiction after review; find how it got there (a raw client bypassing "
    "the router).",
    permissions=_SCAN + ["dynamodb:Query"],
    export_permissions=_EXPORT,
)
def pinned_placement(ctx: AuditContext) -> Iterator[Finding]:
    """Each item of a pinned table (a profile) is stored in a region of its subject's
    jurisdiction. The subject is the partition key (a user ID); its jurisdiction comes from
    the directory entry, else from the home region hint inside the ID.

    Example::

        regionkit audit run --checks data.pinned_placement --sample 100000
    """
    me = pinned_placement
    scan = ctx.data()
    yield from _export_errors(me, scan)
    if scan.directory_error:
        yield me.error(
            region=scan.directory_region or "global",
            resource=_directory_resource(ctx, scan),
            discriminator="directory",
            reason=f"the directory could not be read ({scan.directory_error}); subjects were "
            "judged by the home hint in their user IDs only",
        )
    if scan.suspects_dropped:
        yield me.failed(
            region="global",
            resource="regionkit:data",
            discriminator="dropped",
            reason=f"{scan.suspects_dropped:,} further suspect items were not analysed "
            "(too many to keep): the tables are badly misplaced",
        )
    scans = scan.pinned_scans()
    yield from _scan_errors(me, scans)
    arns = {(t.region, t.plan.table): t.arn for t in scans}
    bad: set[tuple[str, str]] = set()
    for (region, table), shown, more in _capped(ctx, scan.misplaced):
        bad.add((region, table))
        arn = arns.get((region, table), ctx.arn(region, table))
        for m in shown:
            if m.basis == "unattributable":
                yield me.failed(
                    region=region,
                    resource=arn,
                    severity="high",
                    discriminator=m.key,
                    reason=f"item {m.key} of {m.data_class} in {region}: its key is not a "
                    "regionkit user ID, so its subject's jurisdiction cannot be determined",
                    details={"key": m.key, "found_jurisdiction": m.found},
                )
                continue
            why = {
                "directory": "per the directory",
                "id-hint": "per the home hint in its user ID",
                "moved": m.note,
            }.get(m.basis, m.basis)
            yield me.failed(
                region=region,
                resource=arn,
                discriminator=m.key,
                reason=f"item {m.key} of {m.data_class} is stored in {region} ({m.found}) but "
                f"its subject belongs to {m.expected or 'no jurisdiction of the policy'} "
                f"({why})",
                details={
                    "key": m.key,
                    "found_jurisdiction": m.found,
                    "expected_jurisdiction": m.expected or "",
                    "basis": m.basis,
                },
            )
        if more:
            yield me.failed(
                region=region,
                resource=arn,
                discriminator="more",
                reason=f"and {more:,} more misplaced items in {table} in {region}",
                details={"more": more},
            )
    for ts in scans:
        if ts.errors or (ts.region, ts.plan.table) in bad:
            continue
        yield me.passed(
            region=ts.region,
            resource=ts.arn,
            reason=f"{_read(ts)} of {ts.plan.table}: every subject belongs to "
            f"{ctx.jurisdiction(ts.region)}",
            details={"items_scanned": ts.items},
        )


def _directory_resource(ctx: AuditContext, scan: DataScan) -> str:
    region = scan.directory_region or (ctx.options.regions[0] if ctx.options.regions else "")
    table = scan.directory_table or ctx.options.table_prefix + ctx.policy.system.directory
    return ctx.arn(region, table) if region else "regionkit:directory"


@check(
    id="data.profile_duplicates",
    title="No subject's personal data is in two jurisdictions",
    severity="high",
    rationale="A second copy in another jurisdiction is a residency breach waiting to be "
    "served, and usually the trace of an unfinished move.",
    remediation="Finish the move (call router.move_user again), or delete the copy outside "
    "the subject's jurisdiction after review.",
    permissions=_SCAN + ["dynamodb:Query"],
    export_permissions=_EXPORT,
)
def profile_duplicates(ctx: AuditContext) -> Iterator[Finding]:
    """No subject has pinned items in two jurisdictions. When the directory shows the
    subject ``moving``, the finding says it is an unfinished move.

    Example::

        regionkit audit run --checks data.profile_duplicates
    """
    me = profile_duplicates
    scan = ctx.data()
    scans = scan.pinned_scans()
    yield from _scan_errors(me, scans)
    if scan.directory_error:
        yield me.error(
            region="global",
            resource=_directory_resource(ctx, scan),
            discriminator="directory",
            reason=f"the directory could not be read ({scan.directory_error}): "
            "unfinished moves cannot be recognised",
        )
    if scan.unverified_duplicates:
        yield me.error(
            region="global",
            resource="regionkit:data",
            discriminator="unverified",
            reason=f"{scan.unverified_duplicates:,} subjects with a misplaced item could not be "
            "checked for a copy in their own jurisdiction (region unreachable or lookup limit)",
        )
    tables = {(t.region, t.plan.data_class): t for t in scans}
    bad: set[str] = set()
    for d in scan.duplicates:
        first = next(
            (tables[(r, d.data_class)] for r in d.regions if (r, d.data_class) in tables), None
        )
        region = first.region if first else d.regions[0]
        resource = first.arn if first else "regionkit:data"
        bad.add(d.data_class)
        where = ", ".join(d.jurisdictions)
        if d.moving:
            reason = (
                f"unfinished move: the {d.data_class} of {d.subject} is in {where} "
                f"({', '.join(d.regions)}); {d.note}"
            )
            fix = "Finish the move: call router.move_user for this user again."
        else:
            reason = f"the {d.data_class} of {d.subject} is present in two jurisdictions: {where}"
            fix = me.meta.remediation
        yield me.failed(
            region=region,
            resource=resource,
            discriminator=d.subject,
            reason=reason,
            remediation=fix,
            details={
                "subject": d.subject,
                "jurisdictions": list(d.jurisdictions),
                "regions": list(d.regions),
                "moving": d.moving,
            },
        )
    clean = [t for t in scans if not t.errors]
    if clean and not scan.duplicates:
        for ts in clean:
            yield me.passed(
                region=ts.region,
                resource=ts.arn,
                reason=f"{_read(ts)} of {ts.plan.table}: no subject found in a second jurisdiction",
            )


@check(
    id="data.directory_consistency",
    title="Directory entries agree with where the data is",
    severity="high",
    rationale="The router sends every read to the home the directory names; an entry that "
    "points elsewhere makes the profile unreachable and invites writes in the wrong place.",
    remediation="Correct the entry (home_region, jurisdiction, status) to where the subject's "
    "data lawfully is, or finish the pending move.",
    permissions=_SCAN + ["dynamodb:Query"],
    export_permissions=_EXPORT,
)
def directory_consistency(ctx: AuditContext) -> Iterator[Finding]:
    """Every directory entry is well formed (a policy region, its jurisdiction, status
    ``active`` or ``moving`` with a target) and agrees with where the subject's pinned data
    actually is.

    Example::

        regionkit audit run --checks data.directory_consistency
    """
    me = directory_consistency
    scan = ctx.data()
    resource = _directory_resource(ctx, scan)
    if scan.directory_error:
        yield me.error(
            region=scan.directory_region or "global",
            resource=resource,
            discriminator="directory",
            reason=f"the directory could not be read: {scan.directory_error}",
        )
        return
    region = scan.directory_region or "global"
    cap = ctx.options.max_findings_per_resource
    problems = sorted(scan.directory_problems, key=lambda p: p.key)
    for p in problems[:cap]:
        yield me.failed(
            region=region,
            resource=resource,
            discriminator=p.key,
            reason=f"entry {p.key}: {p.reason}",
            details={"key": p.key},
        )
    more = scan.directory_problem_count - min(cap, len(problems))
    if more > 0:
        yield me.failed(
            region=region,
            resource=resource,
            discriminator="more",
            reason=f"and {more:,} more inconsistent directory entries",
            details={"more": more},
        )
    if not problems:
        partial = "" if scan.placement_complete else " (not every pinned table could be read)"
        yield me.passed(
            region=region,
            resource=resource,
            reason=f"read {scan.directory_entries:,} entries in {region}; "
            f"{scan.interesting:,} point away from their ID's home hint or are moving, and all "
            f"agree with where the data is{partial}",
            details={"entries": scan.directory_entries},
        )


@check(
    id="data.global_pii",
    title="No PII attribute in global tables",
    severity="critical",
    rationale="Global tables replicate every item to every replica region; a PII attribute "
    "there sends personal data across every border the table spans.",
    remediation="Remove the attribute from the global items (UpdateItem REMOVE) and keep "
    "personal data in a pinned data class; fix the writer.",
    permissions=_SCAN,
    export_permissions=_EXPORT,
)
def global_pii(ctx: AuditContext) -> Iterator[Finding]:
    """No item of a global table (content, reactions, the directory...) holds an attribute
    the policy names as PII (``pii_attributes`` of its pinned data classes). Findings name
    the attribute, never its value.

    Example::

        regionkit audit run --checks data.global_pii --source export \\
            --export-bucket 'audit-{region}'
    """
    me = global_pii
    names = sorted(ctx.policy.pii_attributes())
    scan = ctx.data()
    yield from _export_errors(me, scan)
    scans = scan.global_scans()
    yield from _scan_errors(me, scans)
    by_table: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (region, table, attr), hit in sorted(scan.pii.items()):
        by_table[(region, table)].append(attr)
        ts = scan.tables.get((region, table))
        arn = ts.arn if ts else ctx.arn(region, table)
        yield me.failed(
            region=region,
            resource=arn,
            discriminator=attr,
            reason=f"attribute {attr!r} (PII per the policy) is present in {hit.count:,} "
            f"item{'s' if hit.count != 1 else ''} of global table {table} in {region}",
            details={"attribute": attr, "items": hit.count, "example_keys": hit.examples},
        )
    for ts in scans:
        if ts.errors or (ts.region, ts.plan.table) in by_table:
            continue
        yield me.passed(
            region=ts.region,
            resource=ts.arn,
            reason=f"{_read(ts)} of {ts.plan.table}: none holds a PII attribute "
            f"({', '.join(names) or 'the policy names none'})",
            details={"items_scanned": ts.items},
        )
