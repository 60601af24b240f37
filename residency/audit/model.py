"""What an audit produces: findings, the inventory it inspected, and the signed report.

The report is evidence an auditor keeps, so it is self-describing and tamper-evident:

* ``policy.sha256``: SHA-256 of the policy file's bytes, as read at the start;
* ``tool``: regionkit's name and version (:data:`residency.__about__.__version__`);
* ``started_at`` / ``ended_at``: ISO 8601 UTC; ``duration_ms``;
* ``inventory``: every (region, table) inspected, with the items scanned there;
* ``findings`` and a ``summary`` by status and severity;
* ``report_sha256``: SHA-256 over the canonical JSON of everything else.

How to verify ``report_sha256`` (any language)::

    data = json.load(open("report.json"))
    claimed = data.pop("report_sha256")
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(body.encode("utf-8")).hexdigest() == claimed

or ``residency.audit.verify_report(data)``. The body holds only strings, integers,
booleans, nulls, lists and objects with ASCII keys (times are ISO strings, durations
integer milliseconds, no floats), so this canonical form is the RFC 8785 (JCS)
canonical form of the same document and any JCS implementation reproduces the digest.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "REPORT_SCHEMA",
    "SEVERITIES",
    "AuditReport",
    "CheckInfo",
    "Finding",
    "InventoryEntry",
    "PolicyEvidence",
    "Severity",
    "Status",
    "canonical_json",
    "finding_uid",
    "report_digest",
    "severity_at_least",
    "verify_report",
]

REPORT_SCHEMA = "regionkit.audit/1"

Severity = Literal["critical", "high", "medium", "low", "info"]
Status = Literal["PASS", "FAIL", "ERROR"]

#: Severities from the most to the least severe.
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")
_RANK: dict[str, int] = {s: len(SEVERITIES) - i for i, s in enumerate(SEVERITIES)}


def severity_at_least(severity: str, threshold: str) -> bool:
    """Whether ``severity`` is as severe as ``threshold`` or more."""
    return _RANK[severity] >= _RANK[threshold]


def finding_uid(check_id: str, region: str, resource: str, discriminator: str = "") -> str:
    """A stable ID: the same violation gets the same ID in every run."""
    raw = "\0".join((check_id, region, resource, discriminator))
    return "rk-" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DetailValue = str | int | bool | list[str]


class Finding(_Model):
    """One result of one check about one resource.

    ``resource`` is an ARN for AWS resources
    (``arn:aws:dynamodb:{region}:{account}:table/{name}``) and a ``regionkit:`` URI
    for the rest (``regionkit:policy/<name>``, ``regionkit:drills/<region>``).
    ``details`` holds keys, attribute *names*, regions and counts: never a value
    read from an item.
    """

    uid: str
    check_id: str
    title: str
    status: Status
    severity: Severity
    region: str = Field(description="An AWS region, or 'global' for region-less checks.")
    resource: str
    reason: str = Field(description="One sentence.")
    remediation: str
    details: dict[str, DetailValue] = Field(default_factory=dict)


class CheckInfo(_Model):
    id: str
    title: str
    severity: Severity


class InventoryEntry(_Model):
    """One table in one region, as the audit found it."""

    region: str
    table: str
    arn: str
    data_class: str = Field(description="The policy's data class, or 'conflict-log'.")
    kind: Literal["pinned", "global", "system"]
    expected: bool = Field(description="The policy places this table in this region.")
    exists: bool | None = Field(description="None when the region could not be listed.")
    items_scanned: int | None = None
    source: Literal["scan", "export"] | None = None
    segments: int | None = None
    scan_ms: int | None = None
    error: str | None = None


class PolicyEvidence(_Model):
    name: str
    path: str
    sha256: str


class AuditReport(_Model):
    """The whole report. ``report_sha256`` covers every other field (see the module doc)."""

    schema_: str = Field(default=REPORT_SCHEMA, alias="schema")
    tool: dict[str, str]
    policy: PolicyEvidence
    account: str
    started_at: str
    ended_at: str
    duration_ms: int
    parameters: dict[str, Any]
    regions: list[str]
    checks: list[CheckInfo]
    inventory: list[InventoryEntry]
    findings: list[Finding]
    summary: dict[str, Any]
    report_sha256: str = ""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # --- views ---

    def body(self) -> dict[str, Any]:
        """Everything but the digest, as plain JSON data."""
        data = self.model_dump(mode="json", by_alias=True)
        data.pop("report_sha256", None)
        return data

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def failing(self, threshold: str = "high") -> list[Finding]:
        """FAIL and ERROR findings of ``threshold`` severity or more."""
        return [
            f
            for f in self.findings
            if f.status != "PASS" and severity_at_least(f.severity, threshold)
        ]

    def verify(self) -> bool:
        return bool(self.report_sha256) and report_digest(self.body()) == self.report_sha256

    @classmethod
    def build(cls, **fields: Any) -> AuditReport:
        """Make a report and sign it."""
        fields.setdefault("summary", summarize(fields["findings"]))
        unsigned = cls.model_validate({**fields, "report_sha256": ""})
        return unsigned.model_copy(update={"report_sha256": report_digest(unsigned.body())})


def summarize(findings: list[Finding]) -> dict[str, Any]:
    by_status = Counter(f.status for f in findings)
    by_severity: dict[str, dict[str, int]] = {
        s: {"PASS": 0, "FAIL": 0, "ERROR": 0} for s in SEVERITIES
    }
    for f in findings:
        by_severity[f.severity][f.status] += 1
    return {
        "total": len(findings),
        "by_status": {s: by_status.get(s, 0) for s in ("PASS", "FAIL", "ERROR")},
        "by_severity": by_severity,
    }


def canonical_json(data: Any) -> str:
    """The canonical form the digest is computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def report_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def verify_report(data: dict[str, Any]) -> bool:
    """Check a report read back from its JSON: does ``report_sha256`` match the rest?"""
    body = dict(data)
    claimed = body.pop("report_sha256", None)
    return isinstance(claimed, str) and report_digest(body) == claimed


def iso(dt: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision."""
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
