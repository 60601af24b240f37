"""The compliance audit: checks, the runner, and report renderers.

::

    from residency.audit import run_audit, render, verify_report
    from residency.signing import LocalSigner
    signer = LocalSigner.load_or_create(path)          # or residency.signing.deployment_signer
    report = run_audit(policy, clients, policy_path="policies/social-network.yaml",
                       signer=signer, pseudonymizer=settings.pseudonymizer())
    html = render(report, "html", signed_json="audit.json")  # beside render(report, "json")
    assert report.verify(trusted=[signer.public_key_pem()])

* :mod:`residency.audit.registry`: checks register by id with validated metadata;
  ``iam_policy`` is the least-privilege policy for running them.
* :mod:`residency.audit.checks`: one module per family (policy, infra, data, operations).
* :mod:`residency.audit.runner`: :func:`run_audit`.
* :mod:`residency.audit.model`: findings, the transfer evidence and the signed report
  (how to verify its digest and signature is in its docstring); its JSON Schema ships
  as ``residency/audit/report.schema.json``.
* :mod:`residency.audit.severity`: the severity rules, one table by harm.
* :mod:`residency.audit.inventory`: every table of every audited region, classed.
* :mod:`residency.audit.datascan`: the parallel streaming reads; PII by name and by
  value (:mod:`residency.pii_detect`); items named by keyed pseudonym.
* :mod:`residency.audit.render`: terminal, JSON, Markdown, HTML, JUnit XML, OCSF; every
  format carries the signature and names the signed JSON.

The library never prints; the CLI (``regionkit audit``) does.
"""

from __future__ import annotations

from residency.audit.context import ProgressEvent, ProgressFn
from residency.audit.model import (
    SCHEMA_PATH,
    SEVERITIES,
    AuditReport,
    Finding,
    InventoryEntry,
    JurisdictionEvidence,
    Severity,
    Status,
    report_json_schema,
    severity_at_least,
    verify_report,
)
from residency.audit.registry import (
    Check,
    CheckMeta,
    all_checks,
    check,
    get_check,
    iam_policy,
    permissions_for,
    select_checks,
)
from residency.audit.render import FORMATS, render
from residency.audit.runner import run_audit

__all__ = [
    "FORMATS",
    "SCHEMA_PATH",
    "SEVERITIES",
    "AuditReport",
    "Check",
    "CheckMeta",
    "Finding",
    "InventoryEntry",
    "JurisdictionEvidence",
    "ProgressEvent",
    "ProgressFn",
    "Severity",
    "Status",
    "all_checks",
    "check",
    "get_check",
    "iam_policy",
    "permissions_for",
    "render",
    "report_json_schema",
    "run_audit",
    "select_checks",
    "severity_at_least",
    "verify_report",
]
