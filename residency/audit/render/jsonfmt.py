"""The JSON report: the report model itself, digest included (see residency.audit.model)."""

from __future__ import annotations

import json

from residency.audit.model import AuditReport

__all__ = ["render_json"]


def render_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
