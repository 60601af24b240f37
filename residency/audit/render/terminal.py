"""The terminal view: a rich renderable; the CLI prints it (the library never prints)."""

from __future__ import annotations

import io
from collections import Counter

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from residency.audit.model import SEVERITIES, AuditReport

__all__ = ["render_text", "renderable"]

_STATUS_STYLE = {"PASS": "green", "FAIL": "bold red", "ERROR": "bold magenta"}
_SEV_STYLE = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}


def _header(report: AuditReport, signed_json: str) -> Panel:
    s = report.summary["by_status"]
    lines = [
        f"[bold]policy[/] {escape(report.policy.name)}  ({escape(report.policy.path)})",
        f"[bold]policy sha256[/] {report.policy.sha256}",
        f"[bold]account[/] {escape(report.account)}   [bold]regions[/] "
        f"{escape(', '.join(report.regions))}",
        f"[bold]started[/] {report.started_at}   [bold]ended[/] {report.ended_at}   "
        f"({report.duration_ms / 1000:.1f} s)",
        f"[bold]findings[/] [green]{s['PASS']} pass[/], [red]{s['FAIL']} fail[/], "
        f"[magenta]{s['ERROR']} error[/]",
        f"[bold]report sha256[/] {report.report_sha256}",
    ]
    if report.signature is not None:
        sig = report.signature
        lines.append(
            f"[bold]signed[/] {sig.algorithm} by {escape(sig.key_id)} ({sig.key_fingerprint})"
        )
        lines.append(f"[bold]signature[/] {sig.value}")
    lines.append(f"[bold]signed JSON[/] {escape(signed_json)}")
    tool = report.tool
    return Panel(
        "\n".join(lines),
        title=f"regionkit audit ({tool['name']} {tool['version']})",
        title_align="left",
        box=box.ROUNDED,
    )


def _summary(report: AuditReport) -> Table:
    t = Table(title="by severity", title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("severity")
    for status in ("FAIL", "ERROR", "PASS"):
        t.add_column(status, justify="right")
    for sev in SEVERITIES:
        row = report.summary["by_severity"][sev]
        if not any(row.values()):
            continue
        t.add_row(
            Text(sev, style=_SEV_STYLE[sev]), str(row["FAIL"]), str(row["ERROR"]), str(row["PASS"])
        )
    return t


def _findings(report: AuditReport, show_passed: bool) -> Table:
    t = Table(title="findings", title_justify="left", box=box.SIMPLE_HEAD, show_lines=False)
    for col in ("status", "severity", "check", "region", "resource", "reason"):
        t.add_column(col, overflow="fold")
    shown = [f for f in report.findings if show_passed or f.status != "PASS"]
    for f in shown:
        t.add_row(
            Text(f.status, style=_STATUS_STYLE[f.status]),
            Text(f.severity, style=_SEV_STYLE[f.severity]),
            f.check_id,
            f.region,
            Text(f.resource),
            Text(f.reason),
        )
    if not show_passed:
        passed = Counter(f.check_id for f in report.findings if f.status == "PASS")
        if passed:
            t.caption = f"{sum(passed.values())} PASS findings hidden (--show-passed)"
    return t


def _inventory(report: AuditReport) -> Table:
    t = Table(title="inspected", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("region", "table", "kind", "placed", "exists", "items read", "source"):
        t.add_column(col, justify="right" if col == "items read" else "left")
    for e in report.inventory:
        exists = "?" if e.exists is None else ("yes" if e.exists else "no")
        t.add_row(
            e.region,
            escape(e.table),
            e.kind + (f" (copy of {escape(e.copy_of)})" if e.copy_of else ""),
            "yes" if e.expected else "[red]no[/]",
            exists if e.exists or not e.expected else f"[red]{exists}[/]",
            "" if e.items_scanned is None else f"{e.items_scanned:,}",
            e.source or "",
        )
    return t


def _evidence(report: AuditReport) -> Table:
    t = Table(title="transfer evidence", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("jurisdiction", "found (region/table: items)", "outside", "none in", "unknown"):
        t.add_column(col, overflow="fold")
    t.add_column("last drill inside", overflow="fold")
    for j in report.transfer_evidence:
        found = ", ".join(
            f"{f.region}/{f.table}: {f.items:,}" + ("" if f.inside else " [red]OUTSIDE[/]")
            for f in j.found
        )
        t.add_row(
            f"{j.jurisdiction} ({escape(j.law)})",
            found or "none",
            Text(str(j.outside), style="bold red" if j.outside else ""),
            ", ".join(j.regions_without) or "-",
            ", ".join(j.regions_unknown) or "-",
            escape(j.last_inside_drill.drill_id) if j.last_inside_drill else "[red]none[/]",
        )
    return t


def renderable(
    report: AuditReport, *, show_passed: bool = False, signed_json: str = ""
) -> RenderableType:
    ref = signed_json or f"audit-{report.parameters.get('run_id', 'report')}.json"
    parts: list[RenderableType] = [_header(report, ref), _summary(report)]
    if report.findings:
        parts.append(_findings(report, show_passed))
    if report.transfer_evidence:
        parts.append(_evidence(report))
    elif report.findings:
        parts.append(Text("transfer evidence: not collected (the data checks did not run)"))
    if report.inventory:
        parts.append(_inventory(report))
    return Group(*parts)


def render_text(
    report: AuditReport, *, show_passed: bool = False, width: int = 160, signed_json: str = ""
) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, highlight=False)
    console.print(renderable(report, show_passed=show_passed, signed_json=signed_json))
    return buf.getvalue()
