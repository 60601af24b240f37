"""JUnit XML: one testsuite per check, one testcase per check + resource.

A FAIL finding is a ``<failure>``, an ERROR finding an ``<error>``, a PASS an empty
testcase. CI systems show the audit like a test run; the report's digests are
kept as ``<properties>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict

from residency.audit.model import AuditReport, Finding

__all__ = ["render_junit"]


def _case_name(f: Finding) -> str:
    key = f.details.get("item") or f.details.get("attribute") or f.details.get("subject")
    name = f"{f.region} {f.resource}"
    return f"{name} [{key}]" if isinstance(key, str) and key else name


def render_junit(report: AuditReport, *, signed_json: str) -> str:
    by_check: dict[str, list[Finding]] = defaultdict(list)
    for f in report.findings:
        by_check[f.check_id].append(f)
    s = report.summary["by_status"]
    root = ET.Element(
        "testsuites",
        name=f"regionkit audit {report.policy.name}",
        tests=str(len(report.findings)),
        failures=str(s["FAIL"]),
        errors=str(s["ERROR"]),
        time=f"{report.duration_ms / 1000:.3f}",
        timestamp=report.started_at,
    )
    props = ET.SubElement(root, "properties")
    for name, value in (
        ("policy", report.policy.name),
        ("policy_sha256", report.policy.sha256),
        ("tool_version", report.tool["version"]),
        ("account", report.account),
        ("report_sha256", report.report_sha256),
        ("signed_json", signed_json),
        ("signature_algorithm", report.signature.algorithm if report.signature else ""),
        ("signature_key_id", report.signature.key_id if report.signature else ""),
        ("signature_key_fingerprint", report.signature.key_fingerprint if report.signature else ""),
        ("signature", report.signature.value if report.signature else ""),
        ("pseudonym_key_id", report.pseudonym_key_id),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    for j in report.transfer_evidence:
        found = "; ".join(
            f"{f.region}/{f.table}={f.items}{'' if f.inside else ' OUTSIDE'}" for f in j.found
        )
        ET.SubElement(
            props,
            "property",
            name=f"transfer_evidence.{j.jurisdiction}",
            value=f"found: {found or 'none'}; outside: {j.outside}; "
            f"none in: {', '.join(j.regions_without) or '-'}; "
            f"unknown: {', '.join(j.regions_unknown) or '-'}; "
            f"last inside drill: {j.last_inside_drill.drill_id if j.last_inside_drill else 'none'}",
        )
    for c in report.checks:
        findings = by_check.get(c.id, [])
        suite = ET.SubElement(
            root,
            "testsuite",
            name=c.id,
            tests=str(len(findings)),
            failures=str(sum(f.status == "FAIL" for f in findings)),
            errors=str(sum(f.status == "ERROR" for f in findings)),
            skipped="0",
            timestamp=report.started_at,
        )
        for f in findings:
            case = ET.SubElement(suite, "testcase", classname=c.id, name=_case_name(f))
            if f.status == "PASS":
                continue
            tag = "failure" if f.status == "FAIL" else "error"
            el = ET.SubElement(case, tag, message=f.reason, type=f.severity)
            el.text = (
                f"[{f.severity}] {f.reason}\nregion: {f.region}\nresource: {f.resource}\n"
                f"remediation: {f.remediation}\nfinding: {f.uid}"
            )
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
