"""Data checks: where each item actually is. They share one parallel, streaming read of
the tables (:mod:`residency.audit.datascan`), by scan or from a point-in-time export.

Items are reported by keyed pseudonym (``pn-...``, :mod:`residency.audit.safety`),
subjects likewise, attributes by *name* (their path), and values by *kind* ("a value
shaped like a phone number"): no value read from an item ever reaches a finding.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from residency.audit.context import AuditContext
from residency.audit.datascan import DataScan, Misplaced, TableScan, data_of
from residency.audit.model import Finding
from residency.audit.registry import Check, check
from residency.audit.severity import Harm, severity_of
from residency.pii_detect import KIND_TEXT

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
    if ts.tombstones:
        text += f", {ts.tombstones:,} of them tombstones"
    return text


def _down(ctx: AuditContext) -> list[str]:
    return [r for r in ctx.all_regions if ctx.down(r)]


def _table(ts: TableScan | None, table: str) -> str:
    if ts is not None and ts.copy_of:
        return f"{table} (an unlisted copy of {ts.copy_of})"
    return table


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
    scan = data_of(ctx)
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
    by_table = {(t.region, t.plan.table): t for t in scans}
    bad: set[tuple[str, str]] = set()
    for (region, table), shown, more in _capped(ctx, scan.misplaced):
        bad.add((region, table))
        ts = by_table.get((region, table))
        arn = ts.arn if ts else ctx.arn(region, table)
        name = _table(ts, table)
        for m in shown:
            if m.basis == "unattributable":
                outside = m.found == "?"  # a region in no jurisdiction: outside them all
                key_is = f" (the key is {m.note})" if m.note else ""
                yield me.failed(
                    region=region,
                    resource=arn,
                    severity=severity_of(Harm.PII_OUTSIDE if outside else Harm.UNATTRIBUTABLE),
                    discriminator=m.key,
                    reason=f"item {m.key} of {m.data_class} in {name} in {region}: its key is "
                    f"not a regionkit user ID{key_is}, so its subject's jurisdiction cannot be "
                    "determined"
                    + ("; the region is in no jurisdiction of the policy" if outside else ""),
                    details={"item": m.key, "found_jurisdiction": m.found},
                )
                continue
            why = {
                "directory": "per the directory",
                "id-hint": "per the home hint in its user ID",
                "moved": m.note,
            }.get(m.basis, m.basis)
            found = m.found if m.found != "?" else "in no jurisdiction of the policy"
            yield me.failed(
                region=region,
                resource=arn,
                discriminator=m.key,
                reason=f"item {m.key} of {m.data_class} is stored in {name} in {region} "
                f"({found}) but its subject {m.subject} belongs to "
                f"{m.expected or 'no jurisdiction of the policy'} ({why})",
                details={
                    "item": m.key,
                    "subject": m.subject or "",
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
    for (region, table, path, _match, kind), hit in sorted(scan.pii.items()):
        ts = by_table.get((region, table))
        if ts is None:
            continue
        bad.add((region, table))
        yield me.failed(
            region=region,
            resource=ts.arn,
            severity=severity_of(Harm.KEY_PII_PINNED),
            discriminator=f"key:{kind}:{path}",
            reason=f"key attribute {path!r} of {_table(ts, table)} in {region} holds "
            f"{KIND_TEXT.get(kind, 'personal data')} in {hit.count:,} "
            f"item{'s' if hit.count != 1 else ''}: keys are copied to streams, the conflict "
            "log and metrics",
            remediation="Key the items by opaque IDs (the user ID and a generated sort key); "
            "keep personal data in ordinary attributes of the pinned class.",
            details={
                "attribute": path,
                "kind": kind,
                "items": hit.count,
                "example_items": hit.examples,
            },
        )
    for ts in scans:
        if ts.errors or (ts.region, ts.plan.table) in bad:
            continue
        yield me.passed(
            region=ts.region,
            resource=ts.arn,
            reason=f"{_read(ts)} of {_table(ts, ts.plan.table)}: every subject belongs to "
            f"{ctx.jurisdiction(ts.region) or 'no jurisdiction (the table holds no subject)'}",
            details={"items_scanned": ts.items, "tombstones": ts.tombstones},
        )


def _directory_resource(ctx: AuditContext, scan: DataScan) -> str:
    region = scan.directory_region or (ctx.options.regions[0] if ctx.options.regions else "")
    table = scan.directory_table or ctx.options.table_prefix + ctx.policy.system.directory
    return ctx.arn(region, table) if region else "regionkit:directory"


@check(
    id="data.profile_duplicates",
    title="No subject's personal data is in two jurisdictions",
    severity="critical",
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
    scan = data_of(ctx)
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
        named = [j if j != "?" else "no jurisdiction" for j in d.jurisdictions]
        where = ", ".join(named)
        unknown = (
            f"; unknown in {', '.join(d.unknown)} (unreadable or sampled)" if d.unknown else ""
        )
        if d.moving:
            # an in-progress move record (resumable), not a breach
            reason = (
                f"move in progress: the {d.data_class} of {d.subject} is in {where} "
                f"({', '.join(d.regions)}{unknown}); {d.note}"
            )
            fix = "Resume the move: call router.move_user for this user again."
            severity = severity_of(Harm.MOVE_IN_BOTH)
        else:
            reason = (
                f"the {d.data_class} of {d.subject} is present in two jurisdictions: {where} "
                f"({', '.join(d.regions)}{unknown})"
            )
            fix = me.meta.remediation
            severity = severity_of(Harm.PII_OUTSIDE)
        yield me.failed(
            region=region,
            resource=resource,
            discriminator=d.subject,
            reason=reason,
            remediation=fix,
            severity=severity,
            details={
                "subject": d.subject,
                "jurisdictions": named,
                "regions": list(d.regions),
                "moving": d.moving,
            },
        )
    clean = [t for t in scans if not t.errors]
    # never claim more than was read: a second copy may sit where the audit could not look
    unread = sorted({t.region for t in scans if not t.complete} | set(_down(ctx)))
    caveat = f"; unknown in {', '.join(unread)} (unreadable or sampled)" if unread else ""
    if clean and not scan.duplicates:
        for ts in clean:
            yield me.passed(
                region=ts.region,
                resource=ts.arn,
                reason=f"{_read(ts)} of {ts.plan.table}: no subject found in a second "
                f"jurisdiction{caveat}",
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
    scan = data_of(ctx)
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
            severity=p.severity or None,
            details={"item": p.key},
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
    title="No personal data in global tables or the conflict log",
    severity="critical",
    rationale="Global tables replicate every item to every replica region; personal data "
    "there (under any attribute name, at any depth, or as a key) crosses every border the "
    "table spans. The conflict log records item keys in every region.",
    remediation="Remove the data from the global items (UpdateItem REMOVE; for a key, move "
    "the item to a pinned class under an opaque key) and keep personal data in a pinned data "
    "class; fix the writer.",
    permissions=_SCAN,
    export_permissions=_EXPORT,
)
def global_pii(ctx: AuditContext) -> Iterator[Finding]:
    """No item of a global table (content, reactions, the directory...), of the conflict
    log, or of an unlisted copy of a global class holds personal data: by attribute
    *name* (the policy's ``pii_attributes`` and common PII names, any case, at any depth),
    by *value* (e-mail, phone, national IDs, payment cards: on a sample of the items,
    every item with ``--deep``), or as a *key* (table and index keys: every item).
    Findings name the attribute path and the kind of value, never the value.

    Example::

        regionkit audit run --checks data.global_pii --deep
    """
    me = global_pii
    scan = data_of(ctx)
    yield from _export_errors(me, scan)
    scans = scan.global_scans()
    yield from _scan_errors(me, scans)
    flagged: set[tuple[str, str]] = set()
    for (region, table, path, match, kind), hit in sorted(scan.pii.items()):
        ts = scan.tables.get((region, table))
        if ts is not None and "pii" not in ts.roles:
            continue  # a pinned table's keys: data.pinned_placement reports them
        flagged.add((region, table))
        arn = ts.arn if ts else ctx.arn(region, table)
        n = f"{hit.count:,} item{'s' if hit.count != 1 else ''}"
        if match == "name":
            what = f"attribute {path!r} (named as personal data)"
        elif match == "key":
            what = f"key attribute {path!r} holding {KIND_TEXT.get(kind, 'personal data')}"
        else:
            what = f"attribute {path!r} holding {KIND_TEXT.get(kind, 'personal data')}"
        sampled = ""
        if match == "value" and ts is not None and ts.value_checked < ts.items:
            sampled = f" (values checked on {ts.value_checked:,} of {ts.items:,} items)"
        kind_of = (
            "the conflict log" if ts is not None and ts.plan.kind == "system" else ("global table")
        )
        yield me.failed(
            region=region,
            resource=arn,
            discriminator=f"{match}:{kind}:{path}",
            reason=f"{what} is present in {n} of {kind_of} {_table(ts, table)} in "
            f"{region}{sampled}",
            details={
                "attribute": path,
                "match": match,
                "kind": kind,
                "items": hit.count,
                "example_items": hit.examples,
            },
        )
    for ts in scans:
        if ts.errors or (ts.region, ts.plan.table) in flagged:
            continue
        checked = (
            "every value" if ts.value_checked >= ts.items else f"values of {ts.value_checked:,}"
        )
        yield me.passed(
            region=ts.region,
            resource=ts.arn,
            reason=f"{_read(ts)} of {_table(ts, ts.plan.table)}: no attribute named as "
            f"personal data, no PII-shaped key ({checked} checked, none PII-shaped)",
            details={"items_scanned": ts.items, "values_checked": ts.value_checked},
        )
