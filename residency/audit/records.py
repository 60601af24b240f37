"""The operations collectors: the conflict log of each region, and the drill history.

* **Conflict log**: each region's conflict-log table (the conflict-log table
  names it), scanned page by page in parallel, each item parsed on its own as a
  :class:`~residency.records.ConflictRecord`. A region that cannot be read is kept
  as an error, never as "no conflicts"; a record that does not parse is kept as a
  bad record (its keyed pseudonym and the names of the fields at fault, never the
  parser's message, which quotes the input) and the rest of the log is still read.
* **Drill history**: a directory of drill journals (``Settings.drill_history``,
  ``.regionkit/drills/`` by default), one JSON file per drill, read as
  :class:`residency.records.DrillSummary` (which ignores the journal's other
  fields). A file that does not parse is kept as an error, never skipped.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from residency.audit.clients import error_reason
from residency.audit.context import AuditContext
from residency.names import DETECTOR_ALARMS, detector_alarm_name
from residency.records import ConflictRecord, DrillSummary, invalid_fields

__all__ = [
    "BadRecord",
    "ConflictHistory",
    "DetectorHealth",
    "DrillHistory",
    "detector_health_of",
    "read_conflicts",
    "read_detector_health",
    "read_drills",
]


@dataclass(frozen=True)
class BadRecord:
    item: str  # the record's keyed pseudonym
    fields: tuple[str, ...]  # the names of the fields at fault


@dataclass
class ConflictHistory:
    records: dict[str, list[ConflictRecord]] = field(default_factory=dict)  # region -> records
    errors: dict[str, str] = field(default_factory=dict)  # region -> reason
    bad: dict[str, list[BadRecord]] = field(default_factory=dict)  # region -> unparsable
    table: str = ""


@dataclass
class DrillHistory:
    path: Path
    exists: bool
    drills: list[tuple[str, DrillSummary]] = field(default_factory=list)  # (file, summary)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    targets: dict[str, str] = field(default_factory=dict)  # file -> target as written


def _from_ddb(raw: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    de = TypeDeserializer()
    return {k: de.deserialize(v) for k, v in raw.items()}


def read_conflicts(ctx: AuditContext) -> ConflictHistory:
    table = ctx.options.table_prefix + ctx.policy.system.conflict_log_table
    out = ConflictHistory(table=table)

    def read(region: str) -> tuple[list[ConflictRecord], list[BadRecord]]:
        down = ctx.down(region)
        if down:
            raise _Down(down)
        client = ctx.clients.client("dynamodb", region)
        good: list[ConflictRecord] = []
        bad: list[BadRecord] = []
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            page = client.scan(**kwargs)
            for raw in page.get("Items", []):
                try:
                    good.append(ConflictRecord.from_item(_from_ddb(raw)))
                except Exception as exc:  # one bad record is reported, the rest still read
                    fields = (
                        invalid_fields(exc, ConflictRecord)
                        if isinstance(exc, ValidationError)
                        else ()
                    )
                    bad.append(BadRecord(ctx.item(table, raw.get("pk")), fields))
            last = page.get("LastEvaluatedKey")
            if not last:
                return good, bad
            kwargs["ExclusiveStartKey"] = last

    regions = list(ctx.options.regions)
    with ThreadPoolExecutor(
        max_workers=max(1, min(ctx.options.workers, len(regions))),
        thread_name_prefix="regionkit-audit-conflicts",
    ) as pool:
        futures = {r: pool.submit(read, r) for r in regions}
        for region, future in futures.items():
            try:
                out.records[region], out.bad[region] = future.result()
            except _Down as exc:
                out.errors[region] = str(exc)
            except Exception as exc:  # kept as an ERROR finding, never as "no conflicts"
                ctx.note_failure(region, exc)
                out.errors[region] = error_reason(exc)
    return out


class _Down(Exception):
    pass


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def read_drills(ctx: AuditContext) -> DrillHistory:
    path = Path(ctx.options.drill_history)
    history = DrillHistory(path=path, exists=path.is_dir())
    if not history.exists:
        return history
    for file in sorted(path.rglob("*.json")):
        name = str(file.relative_to(path))
        try:
            raw = json.loads(file.read_bytes())
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            # As DrillJournal.summary() reads its own journals: a simulated drill counts
            # as a local one, and a journal without an end ended when it started.
            history.targets[name] = str(raw.get("target", ""))
            if raw.get("target") == "sim":
                raw["target"] = "local"
            if raw.get("ended_at") is None and "started_at" in raw:
                raw["ended_at"] = raw["started_at"]
            summary = DrillSummary.model_validate(raw)
        except (OSError, ValidationError, ValueError) as exc:
            reason = (
                f"{type(exc).__name__} in "
                + (", ".join(invalid_fields(exc, DrillSummary)) or "the journal's fields")
                if isinstance(exc, ValidationError)
                else "not a JSON object"
                if isinstance(exc, ValueError)
                else error_reason(exc)
            )
            history.errors.append((name, reason))
            continue
        summary = summary.model_copy(
            update={"started_at": _aware(summary.started_at), "ended_at": _aware(summary.ended_at)}
        )
        history.drills.append((name, summary))
    return history


def conflicts_of(ctx: AuditContext) -> ConflictHistory:
    """The audit's conflicts (collected once per run, shared by every check)."""
    return ctx.once("conflicts", lambda: read_conflicts(ctx))


def drills_of(ctx: AuditContext) -> DrillHistory:
    """The audit's drills (collected once per run, shared by every check)."""
    return ctx.once("drills", lambda: read_drills(ctx))


@dataclass(frozen=True)
class DetectorHealth:
    """What the conflict detector's alarms in one region say (AWS only).

    ``problem`` is None when every alarm exists and none is in ALARM: the detector
    ran, kept up with its streams and gave up on no batch. Otherwise it says why the
    conflict log cannot be trusted there.
    """

    region: str
    problem: str | None


def read_detector_health(ctx: AuditContext, region: str) -> DetectorHealth:
    """The states of ``region``'s detector alarms (``cloudwatch:DescribeAlarms``)."""
    policy = ctx.policy.name
    wanted = {detector_alarm_name(policy, region, a): a for a in DETECTOR_ALARMS}
    try:
        cw = ctx.clients.client("cloudwatch", region)
        found = cw.describe_alarms(AlarmNames=sorted(wanted)).get("MetricAlarms", [])
    except Exception as exc:
        return DetectorHealth(region, f"its alarms could not be read: {error_reason(exc)}")
    states = {a["AlarmName"]: a.get("StateValue", "") for a in found}
    missing = sorted(n for n in wanted if n not in states)
    if missing:
        return DetectorHealth(
            region,
            f"no alarm {', '.join(missing)}: the detector is not deployed as the CDK app "
            "deploys it, so nothing shows it runs",
        )
    firing = sorted(n for n, state in states.items() if state == "ALARM")
    if firing:
        return DetectorHealth(region, f"alarm in ALARM: {', '.join(firing)}")
    return DetectorHealth(region, None)


def detector_health_of(ctx: AuditContext) -> dict[str, DetectorHealth]:
    """Every audited region's detector health (collected once per run)."""

    def read() -> dict[str, DetectorHealth]:
        return {r: read_detector_health(ctx, r) for r in ctx.options.regions}

    return ctx.once("detector", read)
