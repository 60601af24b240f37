"""The Markdown report (GitHub-flavoured tables)."""

from __future__ import annotations

from residency.audit.model import SEVERITIES, AuditReport

__all__ = ["render_markdown"]


def _cell(text: object) -> str:
    return (
        str(text)
        .replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("\n", " ")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def render_markdown(report: AuditReport, *, show_passed: bool = False) -> str:
    s = report.summary["by_status"]
    out = [
        f"# regionkit compliance audit: policy `{report.policy.name}`",
        "",
        "| | |",
        "|---|---|",
        f"| policy file | `{_cell(report.policy.path)}` |",
        f"| policy SHA-256 | `{report.policy.sha256}` |",
        f"| tool | {_cell(report.tool['name'])} {_cell(report.tool['version'])} |",
        f"| account | `{_cell(report.account)}` |",
        f"| regions | {_cell(', '.join(report.regions))} |",
        f"| started | {report.started_at} |",
        f"| ended | {report.ended_at} ({report.duration_ms / 1000:.1f} s) |",
        f"| findings | {s['PASS']} PASS, {s['FAIL']} FAIL, {s['ERROR']} ERROR |",
        f"| report SHA-256 | `{report.report_sha256}` |",
        "",
        "## Summary by severity",
        "",
        "| severity | FAIL | ERROR | PASS |",
        "|---|---:|---:|---:|",
    ]
    for sev in SEVERITIES:
        row = report.summary["by_severity"][sev]
        out.append(f"| {sev} | {row['FAIL']} | {row['ERROR']} | {row['PASS']} |")
    shown = [f for f in report.findings if show_passed or f.status != "PASS"]
    out += ["", "## Findings", ""]
    if shown:
        out += [
            "| status | severity | check | region | resource | reason | remediation |",
            "|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {f.status} | {f.severity} | `{f.check_id}` | {_cell(f.region)} | "
            f"`{_cell(f.resource)}` | {_cell(f.reason)} | {_cell(f.remediation)} |"
            for f in shown
        ]
    else:
        out.append("No FAIL or ERROR finding.")
    hidden = sum(1 for f in report.findings if f.status == "PASS") if not show_passed else 0
    if hidden:
        out += ["", f"{hidden} PASS findings are listed in the JSON report."]
    out += [
        "",
        "## Checks run",
        "",
        "| check | title | severity |",
        "|---|---|---|",
    ]
    out += [f"| `{c.id}` | {_cell(c.title)} | {c.severity} |" for c in report.checks]
    out += [
        "",
        "## Inspected",
        "",
        "| region | table | kind | placed here | exists | items read | source |",
        "|---|---|---|---|---|---:|---|",
    ]
    for e in report.inventory:
        exists = "?" if e.exists is None else ("yes" if e.exists else "no")
        items = "" if e.items_scanned is None else f"{e.items_scanned:,}"
        out.append(
            f"| {e.region} | `{_cell(e.table)}` | {e.kind} | {'yes' if e.expected else 'no'} | "
            f"{exists} | {items} | {e.source or ''} |"
        )
    out += [
        "",
        "## Verifying this report",
        "",
        "The JSON form of this report carries `report_sha256`: the SHA-256 of the canonical "
        "JSON (keys sorted, no whitespace, UTF-8) of every other field. "
        "`residency.audit.verify_report(json.load(f))` checks it.",
        "",
    ]
    return "\n".join(out)
