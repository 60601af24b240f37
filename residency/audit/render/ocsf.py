"""OCSF 1.1 Detection Findings (class_uid 2004, category_uid 2), one per finding.

Plain dicts, validated in the test suite against ``py-ocsf-models`` (the pydantic
models Prowler's own OCSF output is built on), which stays a test dependency.
Field choices follow the OCSF 1.1.0 Detection Finding class and what Prowler emits:

* ``activity_id`` 1 (Create), ``type_uid`` 200401 = class_uid * 100 + activity_id;
* ``severity_id``: 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical;
* ``status_id`` 1 (New) with the check outcome in ``status_code`` (PASS, FAIL,
  ERROR) and the reason in ``status_detail`` and ``message``, as Prowler does;
* ``finding_info`` {uid, title, desc, types, created_time}; ``resources``
  [{uid: ARN, name, region, type, cloud_partition, group}]; ``remediation``
  {desc}; ``cloud`` {provider, region, account {uid, name, type_id}}; ``metadata`` {version, product
  {name, vendor_name, uid, version}, event_code: the check id, profiles};
* ``unmapped``: the report and policy digests, the signature (algorithm, key,
  value), the signed JSON's file name, the report's transfer evidence in short
  (per jurisdiction: where its data was found, items outside, regions holding
  none, regions unknown, the last drill inside), and the finding's details
  (pseudonyms, attribute names, kinds, counts: never values).

``time`` is OCSF's ``timestamp_t``: milliseconds since the epoch.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from residency.audit.model import AuditReport, Finding

__all__ = ["OCSF_VERSION", "ocsf_findings", "render_ocsf"]

OCSF_VERSION = "1.1.0"
CLASS_UID = 2004
CATEGORY_UID = 2
ACTIVITY_CREATE = 1
SEVERITY_ID = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
SEVERITY_NAME = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
AWS_ACCOUNT_TYPE_ID = 10  # OCSF account type "AWS Account"


def _ms(iso_time: str) -> int:
    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp() * 1000)


def _partition(resource: str) -> str | None:
    """The ARN's partition (``aws``, ``aws-cn``, ``aws-us-gov``), or None if no ARN."""
    parts = resource.split(":", 3)
    return parts[1] if len(parts) > 2 and parts[0] == "arn" and parts[1] else None


def _resource_type(resource: str) -> tuple[str, str]:
    if _partition(resource) and resource.split(":", 3)[2] == "dynamodb":
        return (
            ("AWS::DynamoDB::Export", "dynamodb")
            if "/export/" in resource
            else ("AWS::DynamoDB::Table", "dynamodb")
        )
    if resource.startswith("regionkit:"):
        kind = resource.split(":", 1)[1].split("/", 1)[0]
        return f"regionkit::{kind.capitalize()}", "regionkit"
    return "Other", "other"


def _name(resource: str) -> str:
    return resource.rsplit("/", 1)[-1] if "/" in resource else resource


def transfer_summary(report: AuditReport) -> dict[str, Any]:
    """The transfer evidence in short, for formats that carry no section of their own."""
    return {
        j.jurisdiction: {
            "found": [
                f"{f.region}/{f.table}={f.items}" + ("" if f.inside else " OUTSIDE")
                for f in j.found
            ],
            "outside": j.outside,
            "none_in": j.regions_without,
            "unknown": j.regions_unknown,
            "last_inside_drill": j.last_inside_drill.drill_id if j.last_inside_drill else None,
        }
        for j in report.transfer_evidence
    }


def _one(
    report: AuditReport,
    f: Finding,
    rationale: dict[str, str],
    when: int,
    signed_json: str,
    transfer: dict[str, Any],
) -> dict[str, Any]:
    sev = SEVERITY_ID[f.severity]
    rtype, group = _resource_type(f.resource)
    resource: dict[str, Any] = {
        "uid": f.resource,
        "name": _name(f.resource),
        "type": rtype,
        "group": {"name": group},
    }
    if f.region != "global":
        resource["region"] = f.region
    partition = _partition(f.resource)
    if partition:
        resource["cloud_partition"] = partition
    out: dict[str, Any] = {
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "time": when,
        "time_dt": report.ended_at,
        "severity_id": sev,
        "severity": SEVERITY_NAME[sev],
        "status_id": 1,
        "status": "New",
        "status_code": f.status,
        "status_detail": f.reason,
        "message": f.reason,
        "finding_info": {
            "uid": f.uid,
            "title": f.title,
            "desc": rationale.get(f.check_id, f.title),
            "types": [f.check_id.split(".", 1)[0], f.check_id],
            "created_time": when,
            "product_uid": "regionkit",
        },
        "resources": [resource],
        "remediation": {"desc": f.remediation},
        "risk_details": rationale.get(f.check_id, ""),
        "cloud": {
            "provider": "AWS",
            "account": {
                "uid": report.account,
                "name": report.account,
                "type_id": AWS_ACCOUNT_TYPE_ID,
                "type": "AWS Account",
            },
        },
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "regionkit",
                "vendor_name": "regionkit",
                "uid": "regionkit",
                "version": report.tool["version"],
            },
            "event_code": f.check_id,
            "profiles": ["cloud", "datetime"],
        },
        "unmapped": {
            "report_sha256": report.report_sha256,
            "policy_sha256": report.policy.sha256,
            "policy": report.policy.name,
            "signed_json": signed_json,
            "transfer_evidence": transfer,
            "signature": (
                {
                    "algorithm": report.signature.algorithm,
                    "key_id": report.signature.key_id,
                    "key_fingerprint": report.signature.key_fingerprint,
                    "value": report.signature.value,
                }
                if report.signature
                else None
            ),
            "details": f.details,
        },
    }
    if f.region != "global":
        out["cloud"]["region"] = f.region
    return out


def ocsf_findings(report: AuditReport, *, signed_json: str = "") -> list[dict[str, Any]]:
    from residency.audit.registry import all_checks

    rationale = {c.id: c.meta.rationale for c in all_checks()}
    when = _ms(report.ended_at)
    transfer = transfer_summary(report)
    return [_one(report, f, rationale, when, signed_json, transfer) for f in report.findings]


def render_ocsf(report: AuditReport, *, signed_json: str) -> str:
    findings = ocsf_findings(report, signed_json=signed_json)
    return json.dumps(findings, indent=2, ensure_ascii=False) + "\n"
