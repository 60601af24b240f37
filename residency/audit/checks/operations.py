"""Operations checks: the conflict log and the drill history."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC

from residency.audit.context import AuditContext
from residency.audit.model import Finding
from residency.audit.records import (
    ConflictHistory,
    DetectorHealth,
    conflicts_of,
    detector_health_of,
    drills_of,
)
from residency.audit.registry import Check, check

_HLC = re.compile(r"^[0-9a-f]{8,16}\.[0-9a-f]{1,8}(?:\.[a-z0-9-]{1,40}){0,2}$")
_MAX_BAD = 20

_LOG = ["dynamodb:Scan"]
_MANY_CONFLICTS = 100


def _detector_health(ctx: AuditContext) -> dict[str, DetectorHealth]:
    """AWS only: the detector's alarms per region (the local emulator's detector has none)."""
    return detector_health_of(ctx) if ctx.options.detector_alarms else {}


def _unusable_log(
    me: Check,
    region: str,
    resource: str,
    history: ConflictHistory,
    health: dict[str, DetectorHealth],
) -> Finding | None:
    """An ERROR when ``region``'s conflict log is no evidence: its detector cannot be shown
    healthy, or the log could not be read."""
    sick = health.get(region)
    if sick is not None and sick.problem is not None:
        return me.error(
            region=region,
            resource=resource,
            reason="the conflict detector cannot be shown healthy, so the conflict log "
            f"may miss conflicts: {sick.problem}",
        )
    if region in history.errors:
        return me.error(
            region=region,
            resource=resource,
            reason=f"the conflict log could not be read: {history.errors[region]}",
        )
    return None


@check(
    id="operations.conflicts",
    title="Write conflicts in the window",
    severity="medium",
    rationale="DynamoDB settles concurrent writes silently and records nothing; the conflict "
    "log is the only record of writes that were lost or merged.",
    remediation="Review the conflicts (`regionkit` conflict log); route writers of the same "
    "item to one region, or give the data class a merge function. When the detector is "
    "unhealthy, fix it first (its Lambda's errors, its dead-letter queue).",
    permissions=[*_LOG, "cloudwatch:DescribeAlarms"],
)
def conflicts(ctx: AuditContext) -> Iterator[Finding]:
    """Counts the conflicts each region's conflict log recorded in the window
    (default 7 days): none is a PASS, a few are INFO, 100 or more are MEDIUM.

    On AWS a count means something only if the detector saw every write: a region
    whose detector alarms are missing or in ALARM (failed invocations, a stream
    iterator behind, batches in the dead-letter queue) is an ERROR, never a PASS.

    Example::

        regionkit audit run --checks operations.conflicts --window-days 30
    """
    me = conflicts
    history = conflicts_of(ctx)
    yield from _bad_records(ctx, me, history)
    now = ctx.options.now.astimezone(UTC)
    since = now - ctx.options.conflict_window
    days = ctx.options.conflict_window.total_seconds() / 86400
    health = _detector_health(ctx)
    for region in ctx.options.regions:
        resource = ctx.arn(region, history.table)
        unusable = _unusable_log(me, region, resource, history, health)
        if unusable is not None:
            yield unusable
            continue
        recent = [
            r
            for r in history.records.get(region, [])
            if since <= r.occurred_at.astimezone(UTC) <= now
        ]
        if not recent:
            yield me.passed(
                region=region,
                resource=resource,
                reason=f"no conflict recorded in the last {days:g} days",
            )
            continue
        kinds = Counter(r.kind for r in recent)
        tables = Counter(r.table for r in recent)
        yield me.failed(
            region=region,
            resource=resource,
            severity="medium" if len(recent) >= _MANY_CONFLICTS else "info",
            reason=f"{len(recent):,} conflicts recorded in the last {days:g} days ("
            + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items()))
            + ")",
            details={
                "conflicts": len(recent),
                "by_kind": [f"{k}={n}" for k, n in sorted(kinds.items())],
                "by_table": [f"{k}={n}" for k, n in sorted(tables.items())],
            },
        )


@check(
    id="operations.unrepaired_inversions",
    title="Every inversion was repaired",
    severity="high",
    rationale="An inversion is replication keeping the causally older write (a skewed clock); "
    "until it is repaired every replica serves the older version.",
    remediation="Re-run the conflict detector's repair, or write the winning version back "
    "with a conditional put; check the writer's clock.",
    permissions=_LOG,
)
def unrepaired_inversions(ctx: AuditContext) -> Iterator[Finding]:
    """No conflict-log record of kind ``inversion`` has ``repaired`` false (at any time).

    An inversion *superseded* by a newer write before its repair serves nothing stale
    (its HLC winner is logged separately as a lost write) and does not count.

    Example::

        regionkit audit run --checks operations.unrepaired_inversions
    """
    me = unrepaired_inversions
    history = conflicts_of(ctx)
    yield from _bad_records(ctx, me, history)
    health = _detector_health(ctx)
    for region in ctx.options.regions:
        resource = ctx.arn(region, history.table)
        unusable = _unusable_log(me, region, resource, history, health)
        if unusable is not None:
            yield unusable
            continue
        open_ = [
            r
            for r in history.records.get(region, [])
            if r.kind == "inversion" and not r.repaired and r.resolution != "superseded"
        ]
        for r in open_:
            known = r.table in ctx.plan_by_table
            table = r.table if known else "a table the policy does not name"
            key = ctx.item(r.table, r.key, typed=False)
            winner = r.winner_version if _HLC.match(r.winner_version) else "its winner"
            where = r.winner_region if r.winner_region in ctx.region_jurisdiction else "?"
            yield me.failed(
                region=region,
                resource=ctx.arn(region, r.table if known else history.table),
                discriminator=ctx.item(history.table, r.conflict_id, typed=False),
                reason=f"inversion on {table} item {key}: the winner {winner} ({where}) was "
                "not written back",
                details={"item": key, "table": table},
            )
        if not open_:
            n = sum(1 for r in history.records.get(region, []) if r.kind == "inversion")
            yield me.passed(
                region=region, resource=resource, reason=f"{n} inversions recorded, all repaired"
            )


@check(
    id="operations.drill_recency",
    title="Every region was drilled recently",
    severity="medium",
    rationale="A failover nobody has rehearsed recently is a failover nobody knows works; "
    "the policy sets how often each region must be drilled.",
    remediation="Run a failover drill covering the region (`regionkit drill run`) and keep "
    "its journal in the drill history.",
    permissions=[],
)
def drill_recency(ctx: AuditContext) -> Iterator[Finding]:
    """Each region's last successful drill (verdict ``pass``) ended within
    ``targets.drills.max_age_days``. A region never drilled fails; a journal that cannot
    be read is an ERROR, never skipped.

    Example::

        regionkit audit run --checks operations.drill_recency --drill-history .regionkit/drills
    """
    me = drill_recency
    history = drills_of(ctx)
    max_age = ctx.policy.targets.drills.max_age_days
    now = ctx.options.now.astimezone(UTC)
    for name, reason in history.errors:
        yield me.error(
            region="global",
            resource=f"regionkit:drills/{name}",
            discriminator=name,
            reason=f"drill journal {name} is unreadable: {reason}",
        )
    where = "" if history.exists else f" (there is no drill history at {history.path})"
    for region in ctx.options.regions:
        resource = f"regionkit:drills/{region}"
        passed = [
            (file, d) for file, d in history.drills if d.verdict == "pass" and region in d.regions
        ]
        if not passed:
            yield me.failed(
                region=region,
                resource=resource,
                reason=f"{region} has never been drilled successfully{where}",
            )
            continue
        file, last = max(passed, key=lambda fd: fd[1].ended_at)
        age = now - last.ended_at.astimezone(UTC)
        days = age.total_seconds() / 86400
        target = history.targets.get(file) or last.target
        text = (
            f"last successful drill {last.drill_id} ({last.scenario}, {target}) ended "
            f"{last.ended_at.astimezone(UTC).date().isoformat()}, {days:.0f} days ago"
        )
        details = {"drill_id": last.drill_id, "journal": file, "age_days": int(days)}
        if days > max_age:
            yield me.failed(
                region=region,
                resource=resource,
                details=details,
                reason=f"{text}: older than {max_age} days",
            )
        else:
            yield me.passed(
                region=region,
                resource=resource,
                details=details,
                reason=f"{text} (limit {max_age})",
            )


def _bad_records(ctx: AuditContext, me: Check, history: ConflictHistory) -> Iterator[Finding]:
    """One ERROR per conflict-log record that does not parse (the rest were read)."""
    for region, bad in sorted(history.bad.items()):
        resource = ctx.arn(region, history.table)
        for b in bad[:_MAX_BAD]:
            fields = ", ".join(b.fields) or "its fields"
            yield me.error(
                region=region,
                resource=resource,
                discriminator=b.item,
                reason=f"conflict-log record {b.item} is malformed ({fields}); it was skipped "
                "and the rest of the log was read",
                remediation="Inspect the record (its pseudonym names it) and delete or rewrite "
                "it; find the writer that bypassed the conflict log's model.",
                details={"item": b.item, "fields": list(b.fields)},
            )
        if len(bad) > _MAX_BAD:
            yield me.error(
                region=region,
                resource=resource,
                discriminator="bad-more",
                reason=f"and {len(bad) - _MAX_BAD:,} more malformed conflict-log records",
            )
