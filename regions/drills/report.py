"""Drill reports: the journal as JSON, Markdown and a self-contained HTML page.

The HTML page has no external resource at all (inline CSS, no scripts, no
fonts, no CDN), so it opens the same on an air-gapped laptop years later, and
Jinja2 autoescaping keeps any text in it inert.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, select_autoescape

from regions.drills.journal import DrillJournal

__all__ = ["render_html", "render_markdown", "write_reports"]


def _fmt(v: float | None, unit: str = " s") -> str:
    return "n/a" if v is None else f"{v:.3f}{unit}"


def _rows(j: DrillJournal) -> list[tuple[str, str, str, bool]]:
    """(figure, measured, target, ok) rows."""
    f, t = j.figures, j.targets
    rto_ok = f.rto_seconds is None or f.rto_seconds <= t.get("rto_seconds", float("inf"))
    conv_ok = f.converged and (f.convergence_seconds or 0) <= t.get(
        "convergence_seconds", float("inf")
    )
    rpo_ok = f.rpo_exposure_max_age_seconds <= t.get("rpo_seconds", float("inf"))
    return [
        (
            "RTO (max over data classes)",
            _fmt(f.rto_seconds),
            f"≤ {t.get('rto_seconds', 0):g} s",
            rto_ok,
        ),
        (
            "RPO exposure",
            f"{f.rpo_exposure_count} writes, oldest {_fmt(f.rpo_exposure_max_age_seconds)}",
            f"≤ {t.get('rpo_seconds', 0):g} s",
            rpo_ok,
        ),
        (
            "Convergence after heal",
            _fmt(f.convergence_seconds) if f.converged else "NOT converged",
            f"≤ {t.get('convergence_seconds', 0):g} s",
            conv_ok,
        ),
        ("Residency violations", str(f.residency_violations), "0", f.residency_violations == 0),
        (
            "Conflicts",
            ", ".join(f"{k}: {v}" for k, v in sorted(f.conflicts.items())) or "none",
            "logged",
            True,
        ),
        (
            "Client errors",
            ", ".join(f"{k}: {v}" for k, v in sorted(f.client_errors.items())) or "none",
            "reported",
            True,
        ),
    ]


def render_markdown(j: DrillJournal) -> str:
    lines = [
        f"# Drill {j.drill_id}: {j.scenario}",
        "",
        f"- **Verdict:** {j.verdict.upper()}" + (f" ({'; '.join(j.reasons)})" if j.reasons else ""),
        f"- **Target:** {j.target}; **policy:** {j.policy} (sha256 `{j.policy_sha256[:16]}…`)",
        f"- **Fault regions:** {', '.join(j.regions)}; **parameters:** "
        + ", ".join(f"{k}={v}" for k, v in j.parameters.items()),
        f"- **Started:** {j.started_at.isoformat()}; **ended:** "
        f"{j.ended_at.isoformat() if j.ended_at else '-'}",
        "",
        "## Figures against targets",
        "",
        "| figure | measured | target | ok |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {'yes' if ok else '**NO**'} |" for a, b, c, ok in _rows(j)]
    lines += [
        "",
        "## Per data class",
        "",
        "| data class | kind | RTO | writes ok / failed | "
        "failover writes | no compliant failover |",
        "|---|---|---|---|---|---|",
    ]
    for d in j.figures.data_classes:
        lines.append(
            f"| {d.data_class} | {d.kind} | {_fmt(d.rto_seconds)} | {d.writes_ok} / "
            f"{d.writes_failed} | {d.failover_writes} | "
            f"{', '.join(d.no_compliant_failover) or '-'} |"
        )
    lines += [
        "",
        "## Per region",
        "",
        "| region | writes ok | writes failed | reads ok | "
        "reads failed | failover writes | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in j.figures.regions:
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "-"
        lines.append(
            f"| {r.region} | {r.writes_ok} | {r.writes_failed} | {r.reads_ok} | "
            f"{r.reads_failed} | {r.failover_writes} | {errs} |"
        )
    lines += ["", "## Timeline", "", "| phase | start | seconds | ok |", "|---|---|---|---|"]
    for p in j.phases:
        lines.append(
            f"| {p.name} | {p.started_at.strftime('%H:%M:%S.%f')[:-3]} | "
            f"{p.seconds:.3f} | {'yes' if p.ok else '**NO**'} |"
        )
    return "\n".join(lines) + "\n"


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>regionkit drill {{ j.drill_id }}: {{ j.scenario }}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:70rem;
color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.8rem 0 .5rem}
.verdict{display:inline-block;padding:.2rem .7rem;border-radius:.3rem;font-weight:700;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}.error{background:#9a6700}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #d8dee4;padding:.35rem .5rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;
font-variant-numeric:tabular-nums}.no{color:#cf222e;font-weight:700}.yes{color:#1a7f37}
.timeline{position:relative;height:{{ 26 * phases|length + 10 }}px;border:1px solid #d8dee4;
border-radius:.3rem;background:#fbfcfd}
.bar{position:absolute;height:18px;border-radius:3px;background:#54aeff;font-size:12px;color:#0b2440;
white-space:nowrap;padding-left:4px;overflow:visible}.bar.bad{background:#ff8182}
.meta{color:#57606a}
.bar.late{display:flex;justify-content:flex-end;padding:0 4px 0 0}
.bar.late span{white-space:nowrap}
</style></head><body>
<h1>Drill {{ j.drill_id }}: {{ j.scenario }}</h1>
<p><span class="verdict {{ j.verdict }}">{{ j.verdict|upper }}</span>
{% for r in j.reasons %}<br><span class="no">{{ r }}</span>{% endfor %}</p>
<p class="meta">target {{ j.target }} · policy {{ j.policy }} (sha256 {{ j.policy_sha256[:16] }}…)
· fault regions {{ j.regions|join(", ") }} · {{ j.started_at.isoformat() }} →
{{ j.ended_at.isoformat() if j.ended_at else "-" }} · regionkit {{ j.tool_version }}</p>
<p class="meta">{{ j.description }}</p>
<h2>Figures against targets</h2>
<table><tr><th>figure</th><th>measured</th><th>target</th><th>ok</th></tr>
{% for a, b, c, ok in rows %}<tr><td>{{ a }}</td><td>{{ b }}</td><td>{{ c }}</td>
<td class="{{ 'yes' if ok else 'no' }}">{{ 'yes' if ok else 'NO' }}</td></tr>{% endfor %}
</table>
<h2>Timeline</h2>
<div class="timeline">{% for p in phases %}<div class="bar{{ '' if p.ok else ' bad' }}{{
' late' if p.late }}"
style="top:{{ 6 + 26 * loop.index0 }}px;left:{{ p.left }}%;width:{{ p.width }}%"><span>{{
p.name }} ({{ '%.2f' % p.seconds }} s)</span></div>{% endfor %}</div>
<h2>Per data class</h2>
<table><tr><th>data class</th><th>kind</th><th>RTO</th><th>RTO by writer region</th>
<th>writes ok</th><th>failed</th><th>failover</th><th>no compliant failover</th></tr>
{% for d in j.figures.data_classes %}<tr><td>{{ d.data_class }}</td><td>{{ d.kind }}</td>
<td class="num">{{ fmt(d.rto_seconds) }}</td>
<td>{% for r, s in d.rto_by_region.items() %}{{ r }}: {{ '%.3f' % s }} s<br>{% endfor %}</td>
<td class="num">{{ d.writes_ok }}</td><td class="num">{{ d.writes_failed }}</td>
<td class="num">{{ d.failover_writes }}</td><td>{{ d.no_compliant_failover|join(", ") or "-" }}</td>
</tr>{% endfor %}</table>
<h2>Per region</h2>
<table><tr><th>region</th><th>writes ok</th><th>writes failed</th><th>reads ok</th>
<th>reads failed</th><th>failover writes</th><th>errors</th></tr>
{% for r in j.figures.regions %}<tr><td>{{ r.region }}</td><td class="num">{{ r.writes_ok }}</td>
<td class="num">{{ r.writes_failed }}</td><td class="num">{{ r.reads_ok }}</td>
<td class="num">{{ r.reads_failed }}</td><td class="num">{{ r.failover_writes }}</td>
<td>{% for k, v in r.errors.items() %}{{ k }}: {{ v }}<br>{% endfor %}</td></tr>{% endfor %}
</table>
</body></html>
"""

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def render_html(j: DrillJournal) -> str:
    start = j.started_at.timestamp()
    end = max((j.ended_at or j.started_at).timestamp(), start + 1e-6)
    span = end - start
    phases = []
    for p in j.phases:
        left = (p.started_at.timestamp() - start) / span * 100
        width = max(p.seconds / span * 100, 0.6)
        phases.append(
            {
                "name": p.name,
                "ok": p.ok,
                "seconds": p.seconds,
                "late": left > 70,
                "left": f"{min(left, 99):.2f}",
                "width": f"{min(width, 100 - left):.2f}",
            }
        )
    return _env.from_string(_HTML).render(j=j, rows=_rows(j), phases=phases, fmt=_fmt)


def write_reports(j: DrillJournal, out_dir: Path) -> dict[str, Path]:
    """Write ``drill-<id>.json``, ``.md`` and ``.html`` into ``out_dir``."""
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
    return paths
