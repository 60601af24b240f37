"""OCSF 1.1 Detection Findings (class_uid 2004, category_uid 2), one per finding.

Hand-written dicts rather than the ``py-ocsf-models`` package: the shape is small
and stable, the package is not among regionkit's dependencies, and it would add
its own pydantic models for one output format. Field choices follow the OCSF
1.1.0 Detection Finding class and what Prowler (which uses py-ocsf-models) emits:

* ``activity_id`` 1 (Create), ``type_uid`` 200401 = class_uid * 100 + activity_id;
* ``severity_id``: 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical;
* ``status_id`` 1 (New) with the check outcome in ``status_code`` (PASS, FAIL,
  ERROR) and the reason in ``status_detail`` and ``message``, as Prowler does;
* ``finding_info`` {uid, title, desc, types, created_time}; ``resources``
  [{uid: ARN, name, region, type, cloud_partition, group}]; ``remediation``
  {desc}; ``cloud`` {provider, region, account}; ``metadata`` {version, product
  {name, vendor_name, uid, version}, event_code: the check id, profiles};
* ``unmapped``: the report and policy digests and the finding's details
  (keys, attribute names, counts: never values).

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


def _resource_type(resource: str) -> tuple[str, str]:
    if resource.startswith("arn:aws:dynamodb:"):
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


def _one(report: AuditReport, f: Finding, rationale: dict[str, str], when: int) -> dict[str, Any]:
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
    if f.resource.startswith("arn:aws:"):
        resource["cloud_partition"] = "aws"
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
            "details": f.details,
        },
    }
    if f.region != "global":
        out["cloud"]["region"] = f.region
    return out


def ocsf_findings(report: AuditReport) -> list[dict[str, Any]]:
    from residency.audit.registry import all_checks

    rationale = {c.id: c.meta.rationale for c in all_checks()}
    when = _ms(report.ended_at)
    return [_one(report, f, rationale, when) for f in report.findings]


def render_ocsf(report: AuditReport) -> str:
    return json.dumps(ocsf_findings(report), indent=2, ensure_ascii=False) + "\n"
