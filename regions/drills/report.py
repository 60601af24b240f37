"""Drill reports: the journal as JSON, Markdown, JUnit and a self-contained HTML page.

The HTML page has no external resource at all (inline CSS, inline SVG charts, no
scripts, no fonts, no CDN), so it opens the same on an air-gapped laptop years
later, and Jinja2 autoescaping keeps any text in it inert.

Every figure is formatted for people: no Python repr, no ``None``; a figure that
does not apply says "n/a" and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from jinja2 import Environment, select_autoescape
from markupsafe import Markup

from regions.drills.journal import DrillJournal
from regions.drills.svg import Marker, line_chart

__all__ = [
    "Row",
    "charts",
    "fault_window",
    "human",
    "render_html",
    "render_junit",
    "render_markdown",
    "rows",
    "write_reports",
]

Row = tuple[str, str, str, bool]


def human(v: Any) -> str:
    """Any journal value as text for people: never a repr, never ``None``."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:.3g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {human(x)}" for k, x in v.items()) or "none"
    if isinstance(v, list | tuple | set):
        items = list(v)
        if not items:
            return "none"
        sep = " | " if isinstance(items[0], list | tuple) else ", "
        return sep.join(human(x) for x in items)
    return str(v)


def _secs(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f} s"


def rows(j: DrillJournal) -> list[Row]:
    """(figure, measured, target, ok) rows: the verdict's inputs, for people."""
    f, t = j.figures, j.targets
    rto_ok = f.rto_seconds is None or f.rto_seconds <= t.get("rto_seconds", float("inf"))
    conv_ok = f.converged and (f.convergence_seconds or 0) <= t.get(
        "convergence_seconds", float("inf")
    )
    rpo_ok = f.rpo_exposure_max_age_seconds <= t.get("rpo_seconds", float("inf"))
    rto = (
        _secs(f.rto_seconds)
        if f.rto_seconds is not None
        else "n/a, " + (f.rto_not_applicable or "no write failed")
    )
    if f.rpo_exposure_count:
        rpo = (
            f"{f.rpo_exposure_count} writes unreplicated at the fault, oldest "
            f"{f.rpo_exposure_max_age_seconds:.3f} s; {f.rpo_recovered} recovered, "
            f"{f.rpo_lost} lost"
        )
    else:
        rpo = "0 writes unreplicated at the fault"
        if f.writes_in_flight_expected is not None:
            rpo += f" (about {f.writes_in_flight_expected:g} expected in flight at this rate)"
    out: list[Row] = [
        ("RTO", rto, f"≤ {t.get('rto_seconds', 0):g} s", rto_ok),
        ("RPO exposure", rpo, f"≤ {t.get('rpo_seconds', 0):g} s", rpo_ok and not f.rpo_lost),
        (
            "Convergence after heal",
            _secs(f.convergence_seconds) if f.converged else "NOT converged",
            f"≤ {t.get('convergence_seconds', 0):g} s",
            conv_ok,
        ),
        ("Residency violations", str(f.residency_violations), "0", f.residency_violations == 0),
        ("Conflicts", human(dict(sorted(f.conflicts.items()))), "logged", True),
        ("Client errors", human(dict(sorted(f.client_errors.items()))), "reported", True),
    ]
    if j.scenario == "failback":
        out.append(("Failback", _secs(f.failback_seconds), "reported", True))
    return out


def fault_window(j: DrillJournal) -> tuple[float, float] | None:
    """(fault injected, healed) in seconds since the drill started, if a fault was injected."""
    start = next((e.t for e in j.events if e.kind == "fault-injected"), None)
    if start is None:
        return None
    end = next(
        (e.t for e in j.events if e.kind in {"fault-healed", "cleanup"} and e.t >= start), None
    )
    if end is None:
        end = (j.ended_at - j.started_at).total_seconds() if j.ended_at else start
    return start, end


def charts(j: DrillJournal) -> list[str]:
    """The four SVG charts of the HTML report (empty when the drill ran no load)."""
    s = j.series
    if not s.buckets:
        return []
    window = fault_window(j)
    windows = [window] if window else []
    common: dict[str, Any] = {"t0": s.t0, "dt": s.bucket_seconds, "windows": windows}
    regions = [k for k in s.writes_ok if "/" not in k]
    per_s = 1.0 / s.bucket_seconds
    writes = {r: [v * per_s for v in s.writes_ok[r]] for r in regions}
    out = [
        line_chart("Successful writes per region", writes, unit="writes/s", **common),
        line_chart(
            "p99 write latency per region",
            {r: s.latency_p99_ms.get(r, []) for r in regions},
            unit="ms",
            **common,
        ),
        line_chart(
            "Replication lag per link",
            s.replication_lag_ms,
            unit="ms",
            connect_gaps=True,
            **common,
        ),
    ]
    oldest: list[float | None] = []
    for i in range(s.buckets):
        sampled = [x for v in s.replication_lag_ms.values() if (x := v[i]) is not None]
        oldest.append(max(sampled) / 1000 if sampled else None)
    markers = []
    conv = j.figures.convergence_seconds
    if window:
        markers.append(Marker(window[1], "heal", "#1a7f37"))
        if conv is not None:
            markers.append(Marker(window[1] + conv, f"converged +{conv:.2f} s", "#0969da"))
    out.append(
        line_chart(
            "Time to convergence: oldest unreplicated write",
            {"oldest unreplicated write": oldest},
            unit="s",
            markers=markers,
            connect_gaps=True,
            **common,
        )
    )
    return out


def render_markdown(j: DrillJournal) -> str:
    f = j.figures
    lines = [
        f"# Drill {j.drill_id}: {j.scenario}",
        "",
        f"- **Verdict:** {j.verdict.upper()}" + (f" ({'; '.join(j.reasons)})" if j.reasons else ""),
        f"- **Target:** {j.target}; **policy:** {j.policy} (sha256 `{j.policy_sha256[:16]}…`)",
        f"- **Fault regions:** {', '.join(j.regions)}; **parameters:** "
        + (", ".join(f"{k}={human(v)}" for k, v in j.parameters.items()) or "none"),
        f"- **Started:** {j.started_at.isoformat()}; **ended:** "
        f"{j.ended_at.isoformat() if j.ended_at else 'not recorded'}",
    ]
    if j.settings:
        lines.append(f"- **Client settings:** {human(j.settings)}")
    if j.cleanup:
        lines.append(f"- **Cleanup:** {'; '.join(j.cleanup)}")
    lines += [
        "",
        "## Figures against targets",
        "",
        "| figure | measured | target | ok |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {'yes' if ok else '**NO**'} |" for a, b, c, ok in rows(j)]
    lines += [
        "",
        "## Per data class",
        "",
        "| data class | kind | RTO | writes ok / failed | "
        "failover writes | no compliant failover |",
        "|---|---|---|---|---|---|",
    ]
    for d in f.data_classes:
        lines.append(
            f"| {d.data_class} | {d.kind} | {_secs(d.rto_seconds)} | {d.writes_ok} / "
            f"{d.writes_failed} | {d.failover_writes} | "
            f"{', '.join(d.no_compliant_failover) or 'none'} |"
        )
    lines += [
        "",
        "## Per region",
        "",
        "| region | writes ok | writes failed | reads ok | "
        "reads failed | failover writes | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in f.regions:
        lines.append(
            f"| {r.region} | {r.writes_ok} | {r.writes_failed} | {r.reads_ok} | "
            f"{r.reads_failed} | {r.failover_writes} | {human(dict(sorted(r.errors.items())))} |"
        )
    if j.events:
        lines += ["", "## Events", "", "| s | event | region | detail |", "|---|---|---|---|"]
        for e in j.events[:60]:
            lines.append(f"| {e.t:.2f} | {e.kind} | {e.region or '-'} | {e.detail or '-'} |")
    lines += ["", "## Timeline", "", "| phase | start | seconds | ok |", "|---|---|---|---|"]
    for p in j.phases:
        lines.append(
            f"| {p.name} | {p.started_at.strftime('%H:%M:%S.%f')[:-3]} | "
            f"{p.seconds:.3f} | {'yes' if p.ok else '**NO**'} |"
        )
    return "\n".join(lines) + "\n"


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>regionkit drill {{ j.drill_id }}: {{ j.scenario }}</title>
<style>
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:70rem;
color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .3rem;overflow-wrap:break-word}
h2{font-size:1.1rem;margin:1.8rem 0 .5rem}
.verdict{display:inline-block;padding:.2rem .7rem;border-radius:.3rem;font-weight:700;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}.error{background:#9a6700}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #d8dee4;padding:.35rem .5rem;text-align:left;vertical-align:top;
overflow-wrap:break-word}th{background:#f6f8fa}td.yes,td.no{white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}.no{color:#cf222e;font-weight:700}
.yes{color:#1a7f37}.meta{color:#57606a;overflow-wrap:anywhere}
@media (max-width:900px){body{margin:1rem auto}th,td{padding:.3rem .3rem}}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,30rem),1fr));gap:1rem}
.charts figure{margin:0;border:1px solid #d8dee4;border-radius:.3rem;padding:.4rem;min-width:0}
svg.chart{width:100%;height:auto;display:block;font-family:system-ui,sans-serif}
svg.chart text{fill:#1d2330}
</style></head><body>
<h1>Drill {{ j.drill_id }}: {{ j.scenario }}</h1>
<p><span class="verdict {{ j.verdict }}">{{ j.verdict|upper }}</span>
{% for r in j.reasons %}<br><span class="no">{{ r }}</span>{% endfor %}</p>
<p class="meta">target {{ j.target }} · policy {{ j.policy }} (sha256 {{ j.policy_sha256[:16] }}…)
· fault regions {{ j.regions|join(", ") }} · {{ j.started_at.isoformat() }} →
{{ j.ended_at.isoformat() if j.ended_at else "not recorded" }} · regionkit {{ j.tool_version }}</p>
<p class="meta">{{ j.description }}</p>
{% if j.settings %}<p class="meta">client settings: {{ human(j.settings) }}</p>{% endif %}
{% if j.cleanup %}<p class="meta">cleanup: {{ j.cleanup|join("; ") }}</p>{% endif %}
<h2>Figures against targets</h2>
<div class="scroll"><table><tr><th>figure</th><th>measured</th><th>target</th><th>ok</th></tr>
{% for a, b, c, ok in rows %}<tr><td>{{ a }}</td><td>{{ b }}</td><td>{{ c }}</td>
<td class="{{ 'yes' if ok else 'no' }}">{{ 'yes' if ok else 'NO' }}</td></tr>{% endfor %}
</table></div>
{% if charts %}<h2>Over time</h2>
<p class="meta">x axis: seconds since the drill started; the fault window is shaded.</p>
<div class="charts">{% for c in charts %}<figure>{{ c }}</figure>{% endfor %}</div>{% endif %}
<h2>Per data class</h2>
<div class="scroll"><table><tr><th>data class</th><th>kind</th><th>RTO</th>
<th>RTO by writer region</th><th>writes ok</th><th>failed</th><th>failover</th>
<th>no compliant failover</th></tr>
{% for d in j.figures.data_classes %}<tr><td>{{ d.data_class }}</td><td>{{ d.kind }}</td>
<td class="num">{{ secs(d.rto_seconds) }}</td>
<td>{% for r, s in d.rto_by_region.items() %}{{ r }}: {{ '%.3f' % s }} s<br>
{% else %}none{% endfor %}</td>
<td class="num">{{ d.writes_ok }}</td><td class="num">{{ d.writes_failed }}</td>
<td class="num">{{ d.failover_writes }}</td>
<td>{{ d.no_compliant_failover|join(", ") or "none" }}</td>
</tr>{% endfor %}</table></div>
<h2>Per region</h2>
<div class="scroll"><table><tr><th>region</th><th>writes ok</th><th>writes failed</th>
<th>reads ok</th><th>reads failed</th><th>failover writes</th><th>errors</th></tr>
{% for r in j.figures.regions %}<tr><td>{{ r.region }}</td><td class="num">{{ r.writes_ok }}</td>
<td class="num">{{ r.writes_failed }}</td><td class="num">{{ r.reads_ok }}</td>
<td class="num">{{ r.reads_failed }}</td><td class="num">{{ r.failover_writes }}</td>
<td>{% for k, v in r.errors.items() %}{{ k }}: {{ v }}<br>{% else %}none{% endfor %}</td></tr>
{% endfor %}</table></div>
{% if j.events %}<h2>Events</h2>
<div class="scroll"><table><tr><th>s</th><th>event</th><th>region</th><th>detail</th></tr>
{% for e in j.events[:60] %}<tr><td class="num">{{ '%.2f' % e.t }}</td><td>{{ e.kind }}</td>
<td>{{ e.region or "-" }}</td><td>{{ e.detail or "-" }}</td></tr>{% endfor %}</table></div>
{% endif %}
<h2>Phases</h2>
<div class="scroll"><table><tr><th>phase</th><th>start</th><th>seconds</th><th>ok</th></tr>
{% for p in j.phases %}<tr><td>{{ p.name }}</td>
<td>{{ p.started_at.strftime('%H:%M:%S.%f')[:-3] }}</td>
<td class="num">{{ '%.3f' % p.seconds }}</td>
<td class="{{ 'yes' if p.ok else 'no' }}">{{ 'yes' if p.ok else 'NO' }}</td></tr>{% endfor %}
</table></div>
</body></html>
"""

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def render_html(j: DrillJournal) -> str:
    # the charts are built by svg.line_chart, which escapes every text it places
    svgs = [Markup(c) for c in charts(j)]
    return _env.from_string(_HTML).render(j=j, rows=rows(j), charts=svgs, secs=_secs, human=human)


def render_junit(j: DrillJournal) -> str:
    """One test case per target (RTO, RPO, convergence, residency), for CI systems."""
    name = f"regionkit drill {j.scenario} {','.join(j.regions)}"
    cases: list[str] = []
    failures = skipped = errors = 0
    by_name = {r[0]: r for r in rows(j)}
    for label in ("RTO", "RPO exposure", "Convergence after heal", "Residency violations"):
        _, measured, target, ok = by_name[label]
        body = ""
        if j.verdict == "error" and not j.figures.writes_acknowledged:
            errors += 1
            body = f"<error message={quoteattr('; '.join(j.reasons) or 'drill error')}/>"
        elif label == "RTO" and measured.startswith("n/a"):
            skipped += 1
            body = f"<skipped message={quoteattr(measured)}/>"
        elif not ok:
            failures += 1
            body = f"<failure message={quoteattr(f'{measured}; target {target}')}/>"
        out = f"<system-out>{escape(f'measured {measured}; target {target}')}</system-out>"
        cases.append(
            f"  <testcase classname={quoteattr(name)} name={quoteattr(label)}>"
            f"{body}{out}</testcase>"
        )
    seconds = (j.ended_at - j.started_at).total_seconds() if j.ended_at else 0.0
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuites><testsuite name={quoteattr(name)} tests="{len(cases)}" '
        f'failures="{failures}" errors="{errors}" skipped="{skipped}" '
        f'time="{seconds:.3f}" timestamp="{j.started_at.isoformat()}">\n'
        + "\n".join(cases)
        + "\n</testsuite></testsuites>\n"
    )


def write_reports(j: DrillJournal, out_dir: Path, *, junit: bool = False) -> dict[str, Path]:
    """Write ``drill-<scenario>-<id>.json``, ``.md``, ``.html`` (and ``.junit.xml``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"drill-{j.scenario}-{j.drill_id}"
    paths = {
        "json": base.with_suffix(".json"),
        "markdown": base.with_suffix(".md"),
        "html": base.with_suffix(".html"),
    }
    paths["json"].write_text(j.model_dump_json(indent=2), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(j), encoding="utf-8")
    paths["html"].write_text(render_html(j), encoding="utf-8")
    if junit:
        paths["junit"] = base.with_suffix(".junit.xml")
        paths["junit"].write_text(render_junit(j), encoding="utf-8")
    return paths
