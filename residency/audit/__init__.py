"""The compliance audit: checks, the runner, and report renderers.

::

    from residency.audit import run_audit, render
    report = run_audit(policy, clients, policy_path="policies/social-network.yaml")
    html = render(report, "html")

* :mod:`residency.audit.registry`: checks register by id with validated metadata;
  ``iam_policy`` is the least-privilege policy for running them.
* :mod:`residency.audit.checks`: one module per family (policy, infra, data, operations).
* :mod:`residency.audit.runner`: :func:`run_audit`.
* :mod:`residency.audit.model`: findings and the signed report (how to verify the
  ``report_sha256`` is in its docstring).
* :mod:`residency.audit.render`: terminal, JSON, Markdown, HTML, JUnit XML, OCSF.

The library never prints; the CLI (``regionkit audit``) does.
"""

from __future__ import annotations

from residency.audit.clients import AuditClients
from residency.audit.context import ProgressEvent, ProgressFn
from residency.audit.model import (
    SEVERITIES,
    AuditReport,
    Finding,
    InventoryEntry,
    Severity,
    Status,
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
    "SEVERITIES",
    "AuditClients",
    "AuditReport",
    "Check",
    "CheckMeta",
    "Finding",
    "InventoryEntry",
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
    "run_audit",
    "select_checks",
    "severity_at_least",
    "verify_report",
]
