"""The main job, end to end, on the embedded local cluster: what ``regionkit demo`` runs.

Starts a cluster for the policy, signs up users in every jurisdiction, runs a
traffic mix with concurrent cross-region edits, runs a region-outage and a
replication-pause drill under load, audits the result, and returns a
:class:`DemoSummary` (counts and figures only, never a PII value). The CLI renders
it for the terminal and as ``demo-summary.json`` / ``.md``; this module prints
nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from residency.errors import OperationError
from residency.policy import Policy

__all__ = [
    "DemoDrill",
    "DemoSummary",
    "demo_regions",
    "group_findings",
    "render_demo_markdown",
    "run_demo",
]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DemoRouting(_M):
    jurisdiction: str
    law: str
    users: int
    home_regions: list[str]
    profiles_written_in: list[str]
    stayed_inside: bool


class DemoDrill(_M):
    scenario: str
    region: str
    verdict: str
    reasons: list[str] = Field(default_factory=list)
    rto_seconds: float | None = None
    rto_note: str = ""
    rpo_exposure: int = 0
    rpo_max_age_seconds: float = 0.0
    rpo_recovered: int = 0
    rpo_lost: int = 0
    convergence_seconds: float | None = None
    conflicts: dict[str, int] = Field(default_factory=dict)
    residency_violations: int = 0
    targets: dict[str, float] = Field(default_factory=dict)
    report: str = ""


class DemoFinding(_M):
    status: str
    severity: str
    check: str
    reason: str
    region: str


class DemoAudit(_M):
    by_status: dict[str, int]
    failing_high_or_worse: int
    findings: list[DemoFinding]
    report_sha256: str


class DemoConflicts(_M):
    total: int
    by_kind: dict[str, int]
    by_resolution: dict[str, int]
    by_data_class: dict[str, int]


class DemoSummary(_M):
    policy: str
    regions: list[str]
    routing: list[DemoRouting] = Field(default_factory=list)
    traffic: dict[str, int] = Field(default_factory=dict)
    traffic_errors: dict[str, int] = Field(default_factory=dict)
    drills: list[DemoDrill] = Field(default_factory=list)
    conflicts: DemoConflicts | None = None
    audit: DemoAudit | None = None
    seconds: float = 0.0
    log_file: str = ""

    @property
    def failed(self) -> bool:
        return any(d.verdict != "pass" for d in self.drills) or bool(
            self.audit and self.audit.failing_high_or_worse
        )


def demo_regions(policy: Policy) -> tuple[str, str]:
    """An outage region in a multi-region jurisdiction, and a pause region elsewhere."""
    multi = [j for j in policy.jurisdictions.values() if len(j.regions) > 1]
    if not multi:
        raise OperationError(message="the demo needs a jurisdiction with two regions")
    outage = multi[0].home_regions[0]
    others = [r for j in multi[1:] for r in j.regions] or [r for r in policy.regions if r != outage]
    pause = others[-1] if others else outage
    return outage, pause


def group_findings(findings: list[Any]) -> list[DemoFinding]:
    """Non-passing findings, worst first; the same finding in several regions is one line."""
    from residency.audit import SEVERITIES

    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for f in findings:
        if f.status != "PASS":
            groups.setdefault((f.status, f.severity, f.check_id, f.reason), []).append(
                f.region or "-"
            )
    rank: dict[str, int] = {str(sev): i for i, sev in enumerate(SEVERITIES)}
    out = [
        DemoFinding(
            status=str(st),
            severity=str(sev),
            check=check,
            reason=reason,
            region=", ".join(sorted(set(regions))),
        )
        for (st, sev, check, reason), regions in groups.items()
    ]
    return sorted(out, key=lambda g: (rank.get(g.severity, 9), g.check))[:20]


def _drill_line(j: Any, report: Path) -> DemoDrill:
    f = j.figures
    return DemoDrill(
        scenario=j.scenario,
        region=j.regions[0],
        verdict=j.verdict,
        reasons=list(j.reasons),
        rto_seconds=f.rto_seconds,
        rto_note=f.rto_not_applicable,
        rpo_exposure=f.rpo_exposure_count,
        rpo_max_age_seconds=f.rpo_exposure_max_age_seconds,
        rpo_recovered=f.rpo_recovered,
        rpo_lost=f.rpo_lost,
        convergence_seconds=f.convergence_seconds,
        conflicts=dict(sorted(f.conflicts.items())),
        residency_violations=f.residency_violations,
        targets=dict(j.targets),
        report=report.name,
    )


def run_demo(
    policy: Policy,
    settings: Any,
    *,
    duration: float,
    users: int,
    rounds: int,
    report_dir: Path,
    signer: Any = None,
    rate: float = 5.0,
    say: Callable[[str], None] = lambda text: None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> DemoSummary:
    """Run the demo (see the module docstring); ``say`` gets one line per step."""
    from regions.conflicts import ConflictLog
    from regions.drills import DrillOptions, DrillRunner, get_scenario, save_journal
    from regions.drills.backends import LocalClusterBackend
    from regions.drills.report import write_reports
    from regions.local.cluster import LocalCluster
    from regions.pool import ClientPool
    from regions.traffic import run_traffic, sign_up_users
    from residency.audit import render, run_audit

    started = time.monotonic()
    outage_region, pause_region = demo_regions(policy)
    report_dir.mkdir(parents=True, exist_ok=True)
    summary = DemoSummary(policy=policy.name, regions=list(policy.regions))
    say(
        f"1/6 starting the local cluster: {len(policy.regions)} moto servers, "
        f"tables provisioned from {policy.name}"
    )
    with (
        contextlib.ExitStack() as stack,
        LocalCluster(
            policy, table_prefix=settings.table_prefix, policy_file=settings.policy
        ) as cluster,
    ):
        backend = LocalClusterBackend(cluster, settings=cluster.config(settings))
        stack.callback(backend.close)
        routers = {r: backend.router(r) for r in policy.regions}
        say("2/6 signing up users in every jurisdiction")
        signups = sign_up_users(routers, policy, per_country=users)
        say(
            f"3/6 traffic mix from every region: {len(signups)} users, {rounds} rounds, "
            "concurrent cross-region edits"
        )
        stats = run_traffic(routers, policy, signups, rounds=rounds)
        assert cluster.replicator is not None
        cluster.replicator.wait_converged(30)
        summary.routing = [
            DemoRouting(
                jurisdiction=jid,
                law=j.law,
                users=stats.signups.get(jid, 0),
                home_regions=list(j.home_regions),
                profiles_written_in=sorted(stats.profile_placement.get(jid, set())),
                stayed_inside=stats.profile_placement.get(jid, set()) <= set(j.regions),
            )
            for jid, j in policy.jurisdictions.items()
        ]
        summary.traffic = {
            "signups": len(signups),
            "profile_writes": sum(stats.profile_writes.values()),
            "profile_reads": stats.profile_reads,
            "posts": stats.posts,
            "reads": stats.reads,
            "concurrent_edits": stats.concurrent_edits,
            "stale_writes": stats.stale_writes,
            "reactions": stats.reactions,
        }
        summary.traffic_errors = dict(sorted(stats.errors.items()))
        for i, (name, region) in enumerate(
            (("region-outage", outage_region), ("replication-pause", pause_region)), 4
        ):
            sc = get_scenario(name)
            say(f"{i}/6 drill {name} on {region} under load ({duration:g} s under fault)")
            with contextlib.closing(
                LocalClusterBackend(cluster, settings=cluster.config(settings))
            ) as drill_backend:
                j = DrillRunner(
                    drill_backend,
                    sc,
                    sc.parse(policy, {"region": region}),
                    options=DrillOptions(duration=duration, rate=rate),
                    policy_path=settings.policy,
                    on_event=on_event,
                ).run()
            save_journal(j, settings.drill_history)
            paths = write_reports(j, report_dir)
            summary.drills.append(_drill_line(j, paths["html"]))

        say("6/6 compliance audit of the deployed tables and the stored data")
        cluster.replicator.wait_converged(30)
        # The audit scans whole tables: ordinary timeouts and botocore's retries, not the
        # router's fail-fast ones (a loaded machine answers a scan page slowly).
        pool = ClientPool(cluster.config(read_timeout=30.0), retries="botocore")
        report = run_audit(
            policy,
            pool,
            policy_path=settings.policy,
            drill_history=settings.drill_history,
            table_prefix=settings.table_prefix,
            pseudonymizer=settings.pseudonymizer(),
            signer=signer,
        )
        for fmt, ext in (
            ("json", "json"),
            ("markdown", "md"),
            ("html", "html"),
            ("junit", "junit.xml"),
            ("ocsf", "ocsf.json"),
        ):
            (report_dir / f"audit.{ext}").write_text(
                render(report, fmt, signed_json="audit.json"), encoding="utf-8"
            )
        log = ConflictLog(policy, pool, table_prefix=settings.table_prefix).scan(policy.regions[0])
        summary.conflicts = DemoConflicts(
            total=len(log),
            by_kind=dict(sorted(Counter(c.kind for c in log).items())),
            by_resolution=dict(sorted(Counter(c.resolution for c in log).items())),
            by_data_class=dict(sorted(Counter(c.data_class for c in log).items())),
        )
        summary.audit = DemoAudit(
            by_status=dict(report.summary["by_status"]),
            failing_high_or_worse=len(report.failing("high")),
            findings=group_findings(report.findings),
            report_sha256=report.report_sha256,
        )
    summary.seconds = round(time.monotonic() - started, 1)
    say(f"done in {summary.seconds:g} s; the cluster is stopped")
    return summary


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def rto_text(d: DemoDrill) -> str:
    if d.rto_seconds is not None:
        return f"{d.rto_seconds:.2f} s"
    # the drill report's own words when no write failed (regions.drills.report)
    return f"n/a, {d.rto_note or 'no write failed'}"


def rpo_text(d: DemoDrill) -> str:
    if not d.rpo_exposure:
        return "0 writes exposed"
    return (
        f"{d.rpo_exposure} writes exposed, oldest {d.rpo_max_age_seconds:.2f} s; "
        f"{d.rpo_recovered} recovered, {d.rpo_lost} lost"
    )


def conv_text(d: DemoDrill) -> str:
    return "not converged" if d.convergence_seconds is None else f"{d.convergence_seconds:.2f} s"


def render_demo_markdown(s: DemoSummary) -> str:
    """``demo-summary.md``: every figure for people, no Python repr, no None."""
    lines = [
        f"# regionkit demo: {s.policy}",
        "",
        f"Ran in {s.seconds:g} s on the embedded local cluster ({len(s.regions)} regions).",
    ]
    if s.log_file:
        lines.append(f"Logs: `{s.log_file}`.")
    lines += [
        "",
        "## Routing per jurisdiction",
        "",
        "| jurisdiction | users | home regions | profiles written in | inside |",
        "|---|---|---|---|---|",
    ]
    for r in s.routing:
        lines.append(
            f"| {r.jurisdiction} | {r.users} | {', '.join(r.home_regions)} | "
            f"{', '.join(r.profiles_written_in) or 'none'} | "
            f"{'yes' if r.stayed_inside else '**NO**'} |"
        )
    t = s.traffic
    if t:
        lines += ["", "## Traffic", "", _counts({k.replace("_", " "): v for k, v in t.items()})]
        if s.traffic_errors:
            lines.append(f"Errors: {_counts(s.traffic_errors)}.")
    lines += ["", "## Drills (faults injected under load)", ""]
    for d in s.drills:
        t_ = d.targets
        lines += [
            f"### {d.scenario} on {d.region}: {d.verdict.upper()}",
            "",
            "| figure | measured | target |",
            "|---|---|---|",
            f"| RTO | {rto_text(d)} | ≤ {t_.get('rto_seconds', 0):g} s |",
            f"| RPO exposure | {rpo_text(d)} | ≤ {t_.get('rpo_seconds', 0):g} s |",
            f"| convergence | {conv_text(d)} | ≤ {t_.get('convergence_seconds', 0):g} s |",
            f"| conflicts | {_counts(d.conflicts)} | logged |",
            f"| residency violations | {d.residency_violations} | 0 |",
            "",
        ]
        lines += [f"- {r}" for r in d.reasons]
        if d.report:
            lines.append(f"Report: `{d.report}`.")
        lines.append("")
    if s.conflicts is not None:
        c = s.conflicts
        lines += [
            "## Conflicts",
            "",
            f"{c.total} logged. By kind: {_counts(c.by_kind)}. "
            f"Resolutions: {_counts(c.by_resolution)}.",
            "",
        ]
    if s.audit is not None:
        a = s.audit
        st = a.by_status
        lines += [
            "## Audit",
            "",
            f"{st.get('PASS', 0)} PASS, {st.get('FAIL', 0)} FAIL, {st.get('ERROR', 0)} ERROR; "
            f"{a.failing_high_or_worse} findings of high severity or worse; report sha256 "
            f"`{a.report_sha256}`.",
            "",
        ]
        lines += [
            f"- {f.status} {f.severity} {f.check} ({f.region or '-'}): {f.reason}"
            for f in a.findings
        ]
    return "\n".join(lines).rstrip() + "\n"
