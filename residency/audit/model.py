"""What an audit produces: findings, the inventory it inspected, and the signed report.

The report is evidence an auditor keeps, so it is self-describing and tamper-evident:

* ``policy.sha256``: SHA-256 of the policy file's bytes, as read at the start;
* ``tool``: regionkit's name and version (:data:`residency.__about__.__version__`);
* ``started_at`` / ``ended_at``: ISO 8601 UTC; ``duration_ms``;
* ``inventory``: every (region, table) inspected, with the items scanned there;
* ``transfer_evidence``: per jurisdiction, where its personal data was found;
* ``findings`` and a ``summary`` by status and severity;
* ``pseudonym_key_id``: which keyed-pseudonym secret named the items (never the key);
* ``report_sha256``: SHA-256 over the canonical JSON of the *body*: every field
  but ``report_sha256`` and ``signature``;
* ``signature``: a :class:`residency.signing.Signature` over the same digest
  (Ed25519 locally, KMS in aws mode).

The digest alone proves nothing (anyone can recompute it after an edit); the
signature does. How to verify (any language)::

    data = json.load(open("report.json"))
    claimed, sig = data.pop("report_sha256"), data.pop("signature")
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(body.encode("utf-8")).digest()
    assert digest.hex() == claimed == sig["digest_sha256"]
    # then check sig["value"] (base64) over the 32 digest bytes as the message, with the
    # public key you trust (Ed25519; ECDSA or RSA-PSS with SHA-256 for KMS keys)

or ``residency.audit.verify_report(data, trusted=[public_pem])`` /
``regionkit audit verify report.json``. The body holds only strings, integers,
booleans, nulls, lists and objects with ASCII keys (times are ISO strings,
durations integer milliseconds, no floats), so this canonical form is the RFC
8785 (JCS) canonical form of the same document.

The report's JSON Schema ships with the package (:data:`SCHEMA_PATH`,
``residency/audit/report.schema.json``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from residency.signing import (
    Signature,
    Signer,
    TrustedKey,
    Verification,
    body_digest,
    canonical_json,
    sign,
)
from residency.signing import verify as verify_signature

__all__ = [
    "REPORT_SCHEMA",
    "SCHEMA_PATH",
    "SEVERITIES",
    "AuditReport",
    "CheckInfo",
    "DataFound",
    "DrillEvidence",
    "Finding",
    "InventoryEntry",
    "JurisdictionEvidence",
    "PolicyEvidence",
    "Severity",
    "Status",
    "canonical_json",
    "finding_uid",
    "report_digest",
    "report_json_schema",
    "severity_at_least",
    "verify_report",
]

REPORT_SCHEMA = "regionkit.audit/2"
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")

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
    data_class: str = Field(
        description="The policy's data class, 'conflict-log', or '' for a table of no class."
    )
    kind: Literal["pinned", "global", "system", "other"]
    expected: bool = Field(description="The policy places this table in this region.")
    copy_of: str | None = Field(
        default=None, description="The pinned data class this unlisted table looks like a copy of."
    )
    classified_by: list[str] = Field(
        default_factory=list, description="How it was classed: name, tags, key-schema, sample."
    )
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


class DataFound(_Model):
    """Personal data of one jurisdiction's subjects found in one table of one region."""

    region: str
    table: str
    data_class: str
    items: int
    inside: bool = Field(description="The region belongs to the jurisdiction.")
    complete: bool = Field(description="The table was read in full (not sampled, no error).")


class DrillEvidence(_Model):
    drill_id: str
    scenario: str
    ended_at: str
    regions: list[str]
    journal: str


class JurisdictionEvidence(_Model):
    """The page an auditor asks for first: where one jurisdiction's personal data is."""

    jurisdiction: str
    law: str
    regions: list[str] = Field(description="The jurisdiction's own regions.")
    found: list[DataFound]
    regions_without: list[str] = Field(
        description="Regions read in full that hold none of its subjects' personal data."
    )
    regions_unknown: list[str] = Field(
        description="Regions that could not be read (or only a sample was read)."
    )
    outside: int = Field(description="Items found outside the jurisdiction.")
    last_inside_drill: DrillEvidence | None = Field(
        description="The last passing drill confined to the jurisdiction's regions."
    )


class AuditReport(_Model):
    """The whole report. ``report_sha256`` and ``signature`` cover every other field."""

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
    transfer_evidence: list[JurisdictionEvidence] = Field(default_factory=list)
    findings: list[Finding]
    summary: dict[str, Any]
    pseudonym_key_id: str = Field(
        default="", description="Names the keyed-pseudonym secret (pn-... values); not the key."
    )
    report_sha256: str = ""
    signature: Signature | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # --- views ---

    def body(self) -> dict[str, Any]:
        """Everything but the digest and the signature, as plain JSON data."""
        data = self.model_dump(mode="json", by_alias=True)
        data.pop("report_sha256", None)
        data.pop("signature", None)
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

    def verify(self, trusted: Iterable[str | TrustedKey] = ()) -> Verification:
        """Check the digest and the signature; ``trusted``: public keys (PEM) to accept."""
        return verify_report(self.to_dict(), trusted=trusted)

    @classmethod
    def build(cls, *, signer: Signer, **fields: Any) -> AuditReport:
        """Make a report and sign it."""
        fields.setdefault("summary", summarize(fields["findings"]))
        unsigned = cls.model_validate({**fields, "report_sha256": "", "signature": None})
        body = unsigned.body()
        return unsigned.model_copy(
            update={"report_sha256": report_digest(body), "signature": sign(body, signer)}
        )


def report_json_schema() -> dict[str, Any]:
    """The JSON Schema of the report's JSON form (shipped as :data:`SCHEMA_PATH`)."""
    schema = AuditReport.model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://regionkit.invalid/schemas/{REPORT_SCHEMA}.json"
    schema["title"] = "regionkit audit report"
    return schema


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


def report_digest(body: dict[str, Any]) -> str:
    return body_digest(body)


def verify_report(
    data: dict[str, Any], *, trusted: Iterable[str | TrustedKey] = ()
) -> Verification:
    """Check a report read back from its JSON: digest, signature, and trust in the key.

    The result is truthy only when all hold (``result.reason`` says what failed).
    """
    body = dict(data)
    claimed = body.pop("report_sha256", None)
    sig = body.pop("signature", None)
    if not isinstance(sig, dict):
        return Verification(False, "the report carries no signature")
    if not isinstance(claimed, str) or report_digest(body) != claimed:
        return Verification(
            False,
            "the report was changed after it was signed (report_sha256 does not match)",
            key_id=str(sig.get("key_id", "")),
        )
    return verify_signature(body, sig, trusted=trusted)


def iso(dt: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision."""
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
