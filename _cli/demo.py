"""``regionkit demo``: the main job end to end on the embedded local cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from _cli import common
from _cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    audit_signer,
    console,
    drill_log_file,
    esc,
    finite,
    get_policy,
    get_settings,
    require_extra,
    sigterm_as_exit,
    writable_dir,
)

if TYPE_CHECKING:
    from regions.demo import DemoSummary
    from residency.policy import Policy
    from residency.settings import Settings

DurationOpt = Annotated[
    float,
    typer.Option(
        "--duration",
        help="Seconds under each fault (0.1 to 600).",
        callback=finite("--duration", 0.1, 600),
    ),
]
UsersOpt = Annotated[
    int, typer.Option("--users", help="Sign-ups per country (1 to 1000).", min=1, max=1000)
]
RoundsOpt = Annotated[
    int, typer.Option("--rounds", help="Traffic rounds (1 to 1000).", min=1, max=1000)
]
ReportDirOpt = Annotated[Path, typer.Option("--report-dir", help="Where every report goes.")]
RateOpt = Annotated[
    float,
    typer.Option(
        "--rate",
        help="Drill load: rounds/s per writer region (0.1 to 1000).",
        callback=finite("--rate", 0.1, 1000),
    ),
]


def _run_demo(policy: Policy, settings: Settings, report_dir: Path, **options: Any) -> DemoSummary:
    """``run_demo`` with each step said on stderr (timed) and a spinner on a terminal."""
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from regions.demo import run_demo

    started = time.monotonic()
    err = console(stderr=True)
    with (
        sigterm_as_exit(),
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as progress,
    ):
        step = progress.add_task("", total=None)

        def say(text: str) -> None:
            progress.update(step, description=text)
            progress.console.print(
                f"[dim]{time.monotonic() - started:6.1f}s[/] {esc(text)}", soft_wrap=False
            )

        def on_event(kind: str, detail: dict[str, Any]) -> None:
            if kind == "phase":
                progress.update(step, description=f"drill: {detail['name']}")

        return run_demo(
            policy,
            settings,
            report_dir=report_dir,
            signer=audit_signer(settings, policy),
            say=say,
            on_event=on_event,
            **options,
        )


def demo(
    duration: DurationOpt = 4.0,
    users: UsersOpt = 3,
    rounds: RoundsOpt = 2,
    report_dir: ReportDirOpt = Path("regionkit-report"),
    rate: RateOpt = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """The main job, end to end, on the embedded local cluster (no AWS account needed).

    Starts a cluster for the policy, signs up users in every jurisdiction, runs a
    traffic mix with concurrent cross-region edits, runs a region-outage and a
    replication-pause drill with faults injected under load, audits the result,
    prints a summary and writes every report to --report-dir (logs go to
    regionkit.log there, never between the progress lines). Exit 1 when the audit
    finds a problem of high severity or worse; a drill that misses a target is
    reported, and `regionkit drill run` is the gate for drill targets.
    Without --policy, REGIONKIT_POLICY, ./regionkit.yaml or ./policies/, it runs
    the example policy packaged with regionkit, and says so.
    """
    require_extra("local")
    common.state.allow_example = True
    writable_dir(report_dir, "--report-dir")

    from regions.demo import render_demo_markdown

    settings = get_settings()
    policy = get_policy()
    log_file = drill_log_file(report_dir, policy)
    summary = _run_demo(
        policy, settings, report_dir, duration=duration, users=users, rounds=rounds, rate=rate
    )
    summary.log_file = str(log_file)
    (report_dir / "demo-summary.json").write_text(
        summary.model_dump_json(indent=2), encoding="utf-8"
    )
    (report_dir / "demo-summary.md").write_text(render_demo_markdown(summary), encoding="utf-8")
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        print_demo(summary, report_dir)
    # The demo shows the job end to end: a drill that misses a target is reported above
    # (and in every report) but is not a failed demo; a residency breach found by the
    # audit is. `regionkit drill run` is the gate for drill targets.
    audit_failed = bool(summary.audit and summary.audit.failing_high_or_worse)
    raise typer.Exit(EXIT_CHECK_FAILED if audit_failed else EXIT_OK)


# --- the summary on a terminal ----------------------------------------------------------


def _routing_table(s: DemoSummary) -> Any:
    from rich.table import Table

    t = Table(title="routing per jurisdiction", title_justify="left")
    for col in ("where", "law", "users", "home", "written in", "inside"):
        t.add_column(col)
    for r in s.routing:
        t.add_row(
            esc(r.jurisdiction),
            esc(r.law),
            str(r.users),
            esc(", ".join(r.home_regions)),
            esc(", ".join(r.profiles_written_in) or "none"),
            "[green]yes[/]" if r.stayed_inside else "[red]NO[/]",
        )
    return t


def _traffic_line(s: DemoSummary) -> str:
    tr = s.traffic
    return (
        f"traffic: {tr.get('signups', 0)} sign-ups, {tr.get('profile_writes', 0)} profile "
        f"writes, {tr.get('posts', 0)} posts, {tr.get('reads', 0)} reads, "
        f"{tr.get('concurrent_edits', 0)} concurrent edits ({tr.get('stale_writes', 0)} "
        f"stale), {tr.get('reactions', 0)} reactions"
    )


def _drills_table(s: DemoSummary) -> Any:
    """Drills transposed, one per column, so that the table fits 80 columns."""
    from rich.table import Table

    from regions.demo import conv_text, rpo_text, rto_text

    d = Table(title="drills against the policy's targets (faults under load)", title_justify="left")
    d.add_column("figure", no_wrap=True)
    for x in s.drills:
        d.add_column(f"{esc(x.scenario)}\n{esc(x.region)}", ratio=1)
    first = s.drills[0].targets if s.drills else {}
    rows: list[tuple[str, list[str]]] = [
        (
            "verdict",
            [f"[{'green' if x.verdict == 'pass' else 'red'}]{x.verdict}[/]" for x in s.drills],
        ),
        (f"RTO ≤ {first.get('rto_seconds', 0):g} s", [esc(rto_text(x)) for x in s.drills]),
        (f"RPO ≤ {first.get('rpo_seconds', 0):g} s", [esc(rpo_text(x)) for x in s.drills]),
        (
            f"converge ≤ {first.get('convergence_seconds', 0):g} s",
            [esc(conv_text(x)) for x in s.drills],
        ),
        (
            "conflicts",
            [
                esc(", ".join(f"{k} {v}" for k, v in x.conflicts.items()) or "none")
                for x in s.drills
            ],
        ),
        ("violations", [str(x.residency_violations) for x in s.drills]),
    ]
    for label, cells in rows:
        d.add_row(label, *cells)
    return d


def _outcome_lines(s: DemoSummary) -> list[str]:
    """Drill reasons, conflicts and the audit, one line each."""
    lines = [
        f"  [red]- {esc(x.scenario)}: {esc(reason)}[/]" for x in s.drills for reason in x.reasons
    ]
    if s.conflicts is not None:
        c = s.conflicts
        lines.append(
            f"conflicts logged: {c.total} "
            f"({esc(', '.join(f'{k} {v}' for k, v in c.by_kind.items()) or 'none')}); "
            f"resolutions: {esc(', '.join(f'{k} {v}' for k, v in c.by_resolution.items()))}"
        )
    if s.audit is not None:
        a = s.audit
        st = a.by_status
        lines.append(
            f"audit: {st.get('PASS', 0)} PASS, {st.get('FAIL', 0)} FAIL, {st.get('ERROR', 0)} "
            f"ERROR; {a.failing_high_or_worse} at high severity or worse"
        )
        lines += [
            f"  {f.status} {f.severity} {esc(f.check)} {esc(f.region or '')}: {esc(f.reason)}"
            for f in a.findings[:8]
        ]
    return lines


def print_demo(s: DemoSummary, report_dir: Path) -> None:
    """The demo summary for a terminal: fits 80 columns; drills transposed, one per column."""
    con = console()
    con.print(_routing_table(s))
    con.print(_traffic_line(s), soft_wrap=False)
    con.print(_drills_table(s))
    lines = _outcome_lines(s)
    lines.append(f"reports in {esc(report_dir)}/: demo-summary.md, audit.html, drill-*.html, ...")
    if s.log_file:
        lines.append(f"logs: {esc(s.log_file)}")
    for text in lines:
        con.print(text, soft_wrap=False)
