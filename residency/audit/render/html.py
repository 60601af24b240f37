"""The HTML report: one self-contained file (inline CSS, no script, no external URL).

Rendered with jinja2 and autoescaping on, so nothing in a finding can inject markup.
"""

from __future__ import annotations

import functools

from jinja2 import Environment, PackageLoader, StrictUndefined

from residency.audit.model import SEVERITIES, AuditReport

__all__ = ["render_html"]


@functools.cache
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("residency.audit.render", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(report: AuditReport, *, signed_json: str) -> str:
    data = report.to_dict()
    findings = data["findings"]
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            report=data,
            severities=SEVERITIES,
            failing=[f for f in findings if f["status"] != "PASS"],
            passed=[f for f in findings if f["status"] == "PASS"],
            signed_json=signed_json,
        )
    )
