"""Run an audit: :func:`run_audit` is the one entry point.

::

    from regions.pool import ClientPool
    from residency.audit import run_audit
    from residency.policy import load_policy
    from residency.settings import load_settings

    settings = load_settings()
    report = run_audit(
        load_policy(settings.policy),
        ClientPool(settings),
        policy_path=settings.policy,
        table_prefix=settings.table_prefix,
        drill_history=settings.drill_history,
    )
    report.failing("high")  # FAIL/ERROR findings of severity high or more

Checks run family by family (policy, infra, data, operations). A check that
raises is reported as an ERROR finding naming the exception's class (and logged
with its stack, never its message, which may quote a value), never dropped: the
audit always completes and says what it could not establish.

The report is signed by ``signer`` (:mod:`residency.signing`); the CLI passes the
deployment's key (local Ed25519 file, or KMS in aws mode). Without one, a
throw-away key signs it: the signature then proves integrity only to whoever
holds the returned report object.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import traceback
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from residency.__about__ import __version__
from residency.audit.clients import error_reason
from residency.audit.context import AuditContext, AuditOptions, ProgressEvent, ProgressFn
from residency.audit.evidence import transfer_evidence
from residency.audit.inventory import inventory_of
from residency.audit.model import (
    AuditReport,
    CheckInfo,
    Finding,
    InventoryEntry,
    PolicyEvidence,
    finding_uid,
    iso,
)
from residency.audit.registry import FAMILIES, Check, select_checks
from residency.aws_regions import AWS_REGIONS
from residency.clients import ClientProvider
from residency.errors import ConfigError, PolicyError, PolicyProblem, UnknownRegion
from residency.logs import get_logger
from residency.policy import Policy
from residency.pseudonym import Pseudonymizer
from residency.signing import LocalSigner, Signer

__all__ = ["run_audit"]

log = get_logger("regionkit.audit")

DEFAULT_DRILL_HISTORY = Path(".regionkit/drills")


def _policy_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise PolicyError(
            [
                PolicyProblem(
                    str(path),
                    None,
                    "(file)",
                    f"cannot read the file: {exc.strerror}",
                    "pass the policy file the audit should hash",
                )
            ]
        ) from None


def _regions(policy: Policy, regions: Iterable[str] | None) -> tuple[str, ...]:
    if regions is None:
        return tuple(policy.regions)
    out: list[str] = []
    for r in regions:
        policy.check_region(r)
        if r not in out:
            out.append(r)
    if not out:
        raise ConfigError(message="--regions selects no region")
    return tuple(out)


def _enabled_regions(policy: Policy, clients: ClientProvider) -> list[str]:
    """Every region enabled in the account (``ec2:DescribeRegions``)."""
    try:
        ec2 = clients.client("ec2", policy.regions[0])
        page = ec2.describe_regions(AllRegions=False)
    except Exception as exc:
        raise ConfigError(
            message="--extra-regions enabled needs ec2:DescribeRegions, which failed "
            f"({error_reason(exc)}); name the regions, or use 'all'"
        ) from None
    return sorted(str(r["RegionName"]) for r in page.get("Regions", []) if r.get("RegionName"))


def _extra(
    policy: Policy, extra: Iterable[str] | None, clients: ClientProvider | None = None
) -> tuple[str, ...]:
    out: list[str] = []
    for r in extra or ():
        if r == "all":
            out.extend(x for x in AWS_REGIONS if x not in out)
            continue
        if r == "enabled" and clients is not None:
            out.extend(x for x in _enabled_regions(policy, clients) if x not in out)
            continue
        if r not in AWS_REGIONS:
            raise UnknownRegion(
                region=r,
                reason="not a commercial AWS region",
                known=", ".join(sorted(AWS_REGIONS)[:8]) + ", ...",
            )
        if r not in out:
            out.append(r)
    return tuple(r for r in out if r not in policy.regions)


def _run_check(ctx: AuditContext, c: Check) -> list[Finding]:
    ctx.progress(ProgressEvent("check", c.id))
    try:
        return list(c.run(ctx))
    except Exception as exc:  # a broken check is an ERROR finding, and a log line
        # the stack (code locations) but never the exception's message: it may quote a value
        stack = "".join(traceback.format_tb(exc.__traceback__))
        log.error("audit.check_failed", check=c.id, error=type(exc).__name__, stack=stack)
        reason = f"the check could not run: {error_reason(exc)}"
        return [
            Finding(
                uid=finding_uid(c.id, "global", f"regionkit:check/{c.id}"),
                check_id=c.id,
                title=c.meta.title,
                status="ERROR",
                severity=c.meta.severity,
                region="global",
                resource=f"regionkit:check/{c.id}",
                reason=reason,
                remediation="Fix what the reason names (permissions, connectivity) and re-run; "
                "if it names a Python exception, report it as a regionkit bug.",
            )
        ]
    finally:
        ctx.progress(ProgressEvent("check", c.id, done=True))


def _inventory_entries(ctx: AuditContext) -> list[InventoryEntry]:
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    if ctx.wants(*(c.id for c in ctx.checks if c.meta.family in {"infra", "data"})):
        inv = inventory_of(ctx)
        for region, rinv in inv.regions.items():
            for st in rinv.tables.values():
                entries[(region, st.table)] = {
                    "region": region,
                    "table": st.table,
                    "arn": st.arn,
                    "data_class": st.plan.data_class,
                    "kind": st.plan.kind if st.managed else "other",
                    "expected": st.expected,
                    "exists": st.exists,
                    "error": rinv.error or st.error,
                    "copy_of": st.copy_of,
                    "classified_by": list(st.classified_by)
                    or (["policy"] if st.listed else ["none"]),
                }
    data = ctx.collected("data")  # only if a data check ran
    if data is not None:
        for ts in data.tables.values():
            e = entries.setdefault(
                (ts.region, ts.plan.table),
                {
                    "region": ts.region,
                    "table": ts.plan.table,
                    "arn": ts.arn,
                    "data_class": ts.plan.data_class,
                    "kind": ts.plan.kind,
                    "expected": ts.region in ts.plan.regions,
                    "exists": None,
                },
            )
            e["items_scanned"] = (e.get("items_scanned") or 0) + ts.items
            e["source"] = ts.source
            e["segments"] = max(e.get("segments") or 0, ts.segments)
            e["scan_ms"] = (e.get("scan_ms") or 0) + ts.ms
            if ts.copy_of:
                e["copy_of"] = ts.copy_of
            if ts.errors:
                e["error"] = "; ".join(filter(None, [e.get("error"), *ts.errors]))
    order = {r: i for i, r in enumerate(ctx.all_regions)}
    return [
        InventoryEntry(**e)
        for _, e in sorted(entries.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1]))
    ]


def run_audit(
    policy: Policy,
    clients: ClientProvider,
    *,
    policy_path: str | Path,
    regions: Iterable[str] | None = None,
    extra_regions: Iterable[str] | None = None,
    checks: Iterable[str] | None = None,
    source: Literal["scan", "export"] = "scan",
    sample: int | None = None,
    progress: ProgressFn | None = None,
    drill_history: str | Path = DEFAULT_DRILL_HISTORY,
    now: datetime | None = None,
    table_prefix: str = "",
    account_id: str | None = None,
    conflict_window: timedelta = timedelta(days=7),
    export_bucket: str | None = None,
    export_prefix: str = "regionkit-audit",
    export_arns: Iterable[str] = (),
    export_timeout_s: float = 3600.0,
    export_poll_s: float = 2.0,
    segments: int | None = None,
    max_segments: int = 8,
    workers: int | None = None,
    max_findings_per_resource: int = 100,
    value_every: int = 20,
    deep: bool = False,
    pseudonymizer: Pseudonymizer | None = None,
    merge_modules: Sequence[str] = (),
    detector_alarms: bool = False,
    signer: Signer | None = None,
) -> AuditReport:
    """Audit the deployment against ``policy``; return the signed report.

    :param clients: ``dynamodb(region)`` and ``client(service, region)`` (sts, kms, s3).
    :param policy_path: the policy file; its SHA-256 goes in the report.
    :param regions: the policy regions to audit (default: all).
    :param extra_regions: more regions to list for misplaced tables and copies (``"all"``:
        every commercial region; ``"enabled"``: every region enabled in the account).
    :param checks: check ids or family names (default: every check).
    :param source: ``scan`` the live tables, or read point-in-time ``export`` s from S3
        (``export_bucket``, may hold ``{region}``; or existing ``export_arns``).
    :param sample: read at most this many items per table.
    :param progress: called with :class:`ProgressEvent` s, from worker threads.
    :param now: the reference time for drill ages and the conflict window.
    :param value_every: check the values of 1 item in N for PII (names and keys are
        checked on every item); ``deep``: every item.
    :param pseudonymizer: names items in findings (default: the process's).
    :param signer: signs the report (default: a throw-away Ed25519 key).
    :param detector_alarms: AWS: ``operations.conflicts`` is ERROR in a region whose
        conflict detector's alarms are missing or in ALARM.
    """
    started_wall = datetime.now(UTC)
    t0 = time.perf_counter()
    if source not in ("scan", "export"):
        raise ConfigError(message=f"source must be 'scan' or 'export', not {source!r}")
    if sample is not None and sample < 1:
        raise ConfigError(message=f"sample must be a positive number of items, not {sample}")
    if value_every < 1:
        raise ConfigError(message=f"value_every must be at least 1, not {value_every}")
    if segments is not None and segments < 1:
        raise ConfigError(message=f"segments must be at least 1, not {segments}")
    export_arns = tuple(export_arns)
    if source == "export" and not export_bucket and not export_arns:
        raise ConfigError(
            message="--source export needs --export-bucket (may contain {region}) or "
            "--export-arn of existing exports"
        )
    path = Path(policy_path)
    selected = select_checks(list(checks) if checks is not None else None)
    chosen = _regions(policy, regions)
    n_workers = workers or min(32, max(4, 4 * len(chosen)))
    options = AuditOptions(
        policy_path=path,
        regions=chosen,
        extra_regions=_extra(policy, extra_regions, clients),
        drill_history=Path(drill_history),
        now=(now or started_wall).astimezone(UTC),
        run_id=started_wall.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3),
        table_prefix=table_prefix,
        source=source,
        sample=sample,
        segments=segments,
        max_segments=max_segments,
        workers=n_workers,
        export_bucket=export_bucket,
        export_prefix=export_prefix,
        export_arns=export_arns,
        export_timeout_s=export_timeout_s,
        export_poll_s=export_poll_s,
        conflict_window=conflict_window,
        max_findings_per_resource=max_findings_per_resource,
        detector_alarms=detector_alarms,
        account_id=account_id,
        progress=progress,
        value_every=1 if deep else value_every,
        pseudonymizer=pseudonymizer,
        merge_modules=tuple(merge_modules),
    )
    policy_sha = _policy_sha256(path)
    needs_aws = any(c.meta.permissions for c in selected)
    ctx = AuditContext(policy, clients, options, selected, resolve_account=needs_aws)
    findings: list[Finding] = []
    for family in FAMILIES:
        for c in (c for c in selected if c.meta.family == family):
            findings.extend(_run_check(ctx, c))
    order = {c.id: i for i, c in enumerate(selected)}
    status_rank = {"ERROR": 0, "FAIL": 1, "PASS": 2}
    findings.sort(
        key=lambda f: (order[f.check_id], status_rank[f.status], f.region, f.resource, f.uid)
    )
    ended_wall = datetime.now(UTC)
    report = AuditReport.build(
        tool={"name": "regionkit", "version": __version__},
        policy=PolicyEvidence(name=policy.name, path=str(path), sha256=policy_sha),
        account=ctx.account,
        started_at=iso(started_wall),
        ended_at=iso(ended_wall),
        duration_ms=int((time.perf_counter() - t0) * 1000),
        parameters={
            "checks": [c.id for c in selected],
            "regions": list(options.regions),
            "extra_regions": list(options.extra_regions),
            "source": source,
            "sample": sample,
            "table_prefix": table_prefix,
            "reference_time": iso(options.now),
            "conflict_window_days": int(conflict_window.total_seconds() // 86400),
            "drill_history": str(options.drill_history),
            "account_source": ctx.account_source,
            "export_bucket": export_bucket,
            "export_arns": list(export_arns),
            "run_id": options.run_id,
            "deep": deep,
            "value_sample_every": options.value_every,
        },
        regions=ctx.all_regions,
        checks=[CheckInfo(id=c.id, title=c.meta.title, severity=c.meta.severity) for c in selected],
        inventory=_inventory_entries(ctx),
        transfer_evidence=transfer_evidence(ctx),
        findings=findings,
        pseudonym_key_id=ctx.pn.key_id,
        signer=signer or LocalSigner.generate(),
    )
    log.info(
        "audit.done",
        policy=policy.name,
        findings=len(findings),
        failing=len(report.failing("info")),
        ms=report.duration_ms,
    )
    return report
