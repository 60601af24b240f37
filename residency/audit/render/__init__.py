"""Report renderers. Each takes an :class:`~residency.audit.model.AuditReport`.

========== ============================================ ==========================
format     what                                         function
========== ============================================ ==========================
terminal   a rich renderable (the CLI prints it)        :func:`terminal.renderable`
json       the report itself, with its digest           :func:`jsonfmt.render_json`
markdown   GitHub-flavoured Markdown                    :func:`markdown.render_markdown`
html       one self-contained file (inline CSS, no      :func:`html.render_html`
           script, no external URL)
junit      JUnit XML: a testcase per check + resource   :func:`junit.render_junit`
ocsf       OCSF 1.1 Detection Findings (class 2004)     :func:`ocsf.render_ocsf`
========== ============================================ ==========================

:func:`render` returns text for every format (the terminal one as plain text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from residency.errors import UnknownName

if TYPE_CHECKING:
    from residency.audit.model import AuditReport

__all__ = ["FORMATS", "SUFFIXES", "render", "signed_json_name"]

FORMATS = ("terminal", "json", "markdown", "html", "junit", "ocsf")
SUFFIXES = {
    "terminal": ".txt",
    "json": ".json",
    "markdown": ".md",
    "html": ".html",
    "junit": ".xml",
    "ocsf": ".ocsf.json",
}


def signed_json_name(report: AuditReport) -> str:
    """The default file name of a report's signed JSON: ``audit-<run id>.json``."""
    return f"audit-{report.parameters.get('run_id', 'report')}.json"


def render(
    report: AuditReport, fmt: str, *, show_passed: bool = False, signed_json: str | None = None
) -> str:
    """The report as text in ``fmt``.

    Every format carries the signature and ``signed_json``: the name of the signed JSON
    report it renders (the CLI writes that file beside it; default
    :func:`signed_json_name`).
    """
    ref = signed_json or signed_json_name(report)
    if fmt == "json":
        from residency.audit.render.jsonfmt import render_json

        return render_json(report)
    if fmt == "markdown":
        from residency.audit.render.markdown import render_markdown

        return render_markdown(report, show_passed=show_passed, signed_json=ref)
    if fmt == "html":
        from residency.audit.render.html import render_html

        return render_html(report, signed_json=ref)
    if fmt == "junit":
        from residency.audit.render.junit import render_junit

        return render_junit(report, signed_json=ref)
    if fmt == "ocsf":
        from residency.audit.render.ocsf import render_ocsf

        return render_ocsf(report, signed_json=ref)
    if fmt == "terminal":
        from residency.audit.render.terminal import render_text

        return render_text(report, show_passed=show_passed, signed_json=ref)
    raise UnknownName(kind="report format", name=fmt, known=", ".join(FORMATS))
