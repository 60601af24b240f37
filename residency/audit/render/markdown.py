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


def transfer_lines(report: AuditReport) -> list[str]:
    """The transfer-evidence section (Markdown)."""
    out = ["## Transfer evidence", ""]
    if not report.transfer_evidence:
        return [*out, "Not collected: the data checks did not run.", ""]
    for j in report.transfer_evidence:
        out += [
            f"### {_cell(j.jurisdiction)} ({_cell(j.law)}): regions {', '.join(j.regions)}",
            "",
            "| region | table | data class | items of its subjects | inside | read in full |",
            "|---|---|---|---:|---|---|",
        ]
        out += [
            f"| {f.region} | `{_cell(f.table)}` | {_cell(f.data_class)} | {f.items:,} | "
            f"{'yes' if f.inside else '**NO**'} | {'yes' if f.complete else 'no'} |"
            for f in j.found
        ] or ["| | none found | | | | |"]
        d = j.last_inside_drill
        drill = (
            f"`{_cell(d.drill_id)}` ({_cell(d.scenario)}, {', '.join(d.regions)}, "
            f"ended {d.ended_at})"
            if d
            else "none"
        )
        out += [
            "",
            f"- outside the jurisdiction: **{j.outside:,}** items",
            f"- regions holding none: {', '.join(j.regions_without) or 'none'}",
            f"- unknown (unreadable or sampled): {', '.join(j.regions_unknown) or 'none'}",
            f"- last passing drill inside the jurisdiction: {drill}",
            "",
        ]
    return out


def signature_lines(report: AuditReport, signed_json: str) -> list[str]:
    sig = report.signature
    out = ["## Verifying this report", ""]
    if sig is not None:
        out += [
            f"- signed JSON: `{_cell(signed_json)}`",
            f"- report SHA-256: `{report.report_sha256}`",
            f"- signature: {sig.algorithm} by key `{_cell(sig.key_id)}` (`{sig.key_fingerprint}`)",
            f"- signature value: `{sig.value}`",
            f"- pseudonym key: `{_cell(report.pseudonym_key_id)}`",
            "",
        ]
    out += [
        f"This file renders the signed JSON report `{_cell(signed_json)}`. Its `report_sha256` "
        "is the SHA-256 of the canonical JSON (keys sorted, no whitespace, UTF-8) of every field "
        "but the digest and the signature; the signature signs that digest. "
        f"`regionkit audit verify {_cell(signed_json)}` checks both and names the key. "
        "Items are named by keyed pseudonym (`pn-...`), which cannot be confirmed by guessing "
        "without the deployment's pseudonym key.",
        "",
    ]
    return out


def render_markdown(report: AuditReport, *, show_passed: bool = False, signed_json: str) -> str:
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
        f"| signed JSON | `{_cell(signed_json)}` |",
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
        kind = e.kind + (
            f" (copy of {_cell(e.copy_of)}, by {', '.join(e.classified_by)})" if e.copy_of else ""
        )
        out.append(
            f"| {e.region} | `{_cell(e.table)}` | {kind} | {'yes' if e.expected else 'no'} | "
            f"{exists} | {items} | {e.source or ''} |"
        )
    out += ["", *transfer_lines(report), *signature_lines(report, signed_json)]
    return "\n".join(out)
