"""``regionkit drill``: failover drills, their plans, journals, comparisons and history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from _cli.common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    JsonOpt,
    console,
    drill_log_file,
    esc,
    fail,
    finite,
    get_policy,
    get_settings,
    new_app,
    print_json,
    require_extra,
    sigterm_as_exit,
    split_regions,
    writable_dir,
)

if TYPE_CHECKING:
    from regions.drills.compare import Comparison
    from regions.drills.journal import DrillJournal
    from residency.policy import Policy
    from residency.settings import Settings

app = new_app(
    help="Failover drills: region outage, replication pause, partition, clock skew, failback."
)

_ScenarioArg = Annotated[str, typer.Argument(help="Scenario name (see `regionkit drill list`).")]
_RegionOpt = Annotated[str, typer.Option("--region", "-r", help="The region the fault hits.")]
_TargetOpt = Annotated[
    str, typer.Option("--target", help="local (default: ephemeral or `local up` cluster) or aws.")
]
_ModeOpt = Annotated[str | None, typer.Option("--mode", help="Outage: stop or refuse.")]
_MsOpt = Annotated[
    int | None,
    typer.Option(
        "--ms", help="Clock skew in ms (-3,600,000 to 3,600,000).", min=-3_600_000, max=3_600_000
    ),
]
_GroupOpt = Annotated[list[str] | None, typer.Option("--group", help="Partition group a,b.")]


def _drill_params(
    name: str, region: str, mode: str | None, ms: int | None, groups: list[str] | None
) -> tuple[Any, Any]:
    from regions.drills import get_scenario

    policy = get_policy()
    scenario = get_scenario(name)
    raw: dict[str, Any] = {"region": region}
    if mode is not None:
        raw["mode"] = mode
    if ms is not None:
        raw["ms"] = ms
    if groups:
        raw["groups"] = [split_regions(g) for g in groups]
    return scenario, scenario.parse(policy, raw)


@app.command("list")
def drill_list(
    as_json: JsonOpt = False,
) -> None:
    """The registered scenarios and their parameters."""
    from regions.drills import SCENARIOS

    rows = [
        {
            "name": s.name,
            "description": s.description,
            "parameters": {k: (f.description or "") for k, f in s.params.model_fields.items()},
            "fis_action": s.fis_action,
        }
        for s in SCENARIOS.values()
    ]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    t = Table(title="drill scenarios", title_justify="left")
    for col in ("scenario", "what it does", "parameters"):
        t.add_column(col, overflow="fold")  # a long word breaks, never "…"
    for s in SCENARIOS.values():
        t.add_row(s.name, s.description, ", ".join(s.params.model_fields))
    console().print(t)


def _drill_steps(
    sc: Any, params: Any, policy: Policy, target: str, duration: float | None, rate: float
) -> list[str]:
    """The steps a drill takes on ``target``: only those that will actually run."""
    t = policy.targets.drills
    classes = ", ".join(n for n in policy.data_classes if n != policy.system.directory)
    verdict = (
        f"verdict: RTO ≤ {t.rto_seconds:g} s, RPO ≤ {t.rpo_seconds:g} s, convergence ≤ "
        f"{t.convergence_seconds:g} s, 0 residency violations"
    )
    load = (
        f"load: writers in all {len(policy.regions)} regions on {classes} through the router, "
        f"{rate:g} rounds/s each, from the steady state to after the heal"
    )
    if target == "aws":
        how_long = (
            f"{duration:g} s (a template of that duration, created with --create-template)"
            if duration is not None
            else "the deployed template's own duration (PT10M as deployed by regionkit)"
        )
        return [
            "account: refuse unless --confirm-account names the credentials' account",
            f"template: the regionkit FIS template for {params.region}, found by its tags",
            f"steady state: canary writes through the router replicate within "
            f"{t.convergence_seconds:g} s",
            load,
            f"inject: start the FIS experiment ({sc.fis_action}) on the tagged replicas in "
            f"{params.region}; wait until it runs",
            f"workload: the load goes on during the experiment, for {how_long}",
            "heal: the experiment ends at its duration (stopped at duration x 1.1 + 120 s, or "
            "at once on Ctrl-C/SIGTERM); then the tables' resource policies are checked for "
            "the pause statement, removed loudly if FIS left it",
            "convergence: the drill's own writes read back from every replica (no table scan; "
            "CloudWatch's ReplicationLatency is not waited for)",
            verdict,
        ]
    seconds = duration if duration is not None else 5.0
    return [
        "plan: validate the scenario against the policy",
        f"steady state: canary writes in every region replicate within {t.convergence_seconds:g} s",
        load,
        f"inject: {sc.name} on {params.region} ({sc.description})",
        f"workload: the load goes on under the fault for {seconds:g} s",
        "heal: remove the fault, then check that none is left in place",
        "recovery: the load goes on for 2 s",
        "convergence: every write made before the heal on every replica, then replicas "
        "identical item for item (SHA-256 digests)",
        verdict,
    ]


_PlanDurationOpt = Annotated[
    float | None,
    typer.Option(
        "--duration",
        help="Fault duration, s (0.1 to 3600; local default 5; aws: the template's).",
        callback=finite("--duration", 0.1, 3600),
    ),
]
_PlanRateOpt = Annotated[
    float,
    typer.Option("--rate", help="Load, rounds/s per region.", callback=finite("--rate", 0.1, 1000)),
]


@app.command("plan")
def drill_plan(
    scenario: _ScenarioArg,
    region: _RegionOpt,
    target: _TargetOpt = "local",
    mode: _ModeOpt = None,
    ms: _MsOpt = None,
    group: _GroupOpt = None,
    duration: _PlanDurationOpt = None,
    rate: _PlanRateOpt = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """The steps a drill will take (only those); for --target aws, the FIS template too."""
    sc, params = _drill_params(scenario, region, mode, ms, group)
    policy = get_policy()
    steps = _drill_steps(sc, params, policy, target, duration, rate)
    out: dict[str, Any] = {
        "scenario": sc.name,
        "parameters": params.model_dump(),
        "target": target,
        "steps": steps,
    }
    if target == "aws":
        if sc.fis_action is None:
            fail(
                f"scenario {sc.name} cannot run on AWS: only replication-pause has an FIS "
                "action (aws:dynamodb:global-table-pause-replication)"
            )
        from residency.fis_template import experiment_template

        seconds = max(1, int(duration or 600))
        out["fis_experiment_template"] = experiment_template(
            policy,
            params.region,
            duration=f"PT{seconds}S",
            table_prefix=get_settings().table_prefix,
        )
    elif target != "local":
        fail(f"--target must be 'local' or 'aws', not {target!r}")
    if as_json:
        print_json(out)
        return
    con = console()
    con.print(f"[bold]drill plan[/]: {esc(sc.name)} on {esc(params.region)} (target {target})")
    for i, step in enumerate(steps, 1):
        con.print(f"  {i}. {esc(step)}", soft_wrap=False)
    if "fis_experiment_template" in out:
        con.print("\n[bold]AWS FIS experiment template[/] (CreateExperimentTemplate request):")
        typer.echo(json.dumps(out["fis_experiment_template"], indent=2))


def _run(
    target: str,
    sc: Any,
    params: Any,
    policy: Policy,
    settings: Settings,
    options: Any,
    aws: dict[str, Any],
) -> tuple[DrillJournal, int]:
    """Run the drill; on Ctrl-C (130) or SIGTERM (143) the journal of the healed drill."""
    from _cli.drill_run import run

    box: list[Any] = []
    with sigterm_as_exit():
        try:
            return run(target, sc, params, policy, settings, options, box, aws), EXIT_OK
        except (KeyboardInterrupt, SystemExit) as exc:
            code = 143 if isinstance(exc, SystemExit) else 130
            if not box:
                raise
            journal: DrillJournal = box[0].journal
            return journal, code


def _print_run(journal: DrillJournal, paths: dict[str, Path], history: Path, log: Path) -> None:
    print_drill(journal)
    con = console()
    con.print("reports:")
    for p in paths.values():
        con.print(f"  {esc(p)}")
    con.print(f"history: {esc(history)}\nlog: {esc(log)}")


_RunDurationOpt = Annotated[
    float | None,
    typer.Option(
        "--duration",
        help="Load under fault, s (0.1 to 3600; default 5; aws: the template's own).",
        callback=finite("--duration", 0.1, 3600),
    ),
]
_RunRateOpt = Annotated[
    float,
    typer.Option(
        "--rate",
        help="Load: rounds/s per writer region, from steady state to after heal (0.1 to 1000).",
        callback=finite("--rate", 0.1, 1000),
    ),
]
_LagOpt = Annotated[
    float | None,
    typer.Option(
        "--lag",
        help="local/sim: base replication lag on every link, s (0 to 600).",
        callback=finite("--lag", 0, 600),
    ),
]
_ReportDirOpt = Annotated[
    Path, typer.Option("--report-dir", help="Where to write JSON, Markdown and HTML.")
]
_JunitOpt = Annotated[
    str, typer.Option("--format", help="Also write: junit (one test case per target).")
]
_ConfirmAccountOpt = Annotated[
    str | None, typer.Option("--confirm-account", help="aws: the account ID, to confirm.")
]
_CreateTemplateOpt = Annotated[
    bool, typer.Option("--create-template", help="aws: create the FIS template if missing.")
]


@app.command("run")
def drill_run(
    scenario: _ScenarioArg,
    region: _RegionOpt,
    target: _TargetOpt = "local",
    mode: _ModeOpt = None,
    ms: _MsOpt = None,
    group: _GroupOpt = None,
    duration: _RunDurationOpt = None,
    rate: _RunRateOpt = 10.0,
    lag: _LagOpt = None,
    report_dir: _ReportDirOpt = Path("regionkit-report"),
    fmt: _JunitOpt = "",
    confirm_account: _ConfirmAccountOpt = None,
    create_template: _CreateTemplateOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the journal as JSON.")] = False,
) -> None:
    """Run a drill; exit 1 when a target is missed. The journal joins the drill history.

    Ctrl-C or SIGTERM heals the fault first, writes the journal, then exits (130/143).
    """
    from regions.drills import DrillOptions, save_journal
    from regions.drills.report import write_reports

    sc, params = _drill_params(scenario, region, mode, ms, group)
    settings = get_settings()
    policy = get_policy()
    if target not in {"local", "aws", "sim"}:
        fail(f"--target must be 'local', 'sim' or 'aws', not {target!r}")
    if fmt not in {"", "junit"}:
        fail(f"--format must be 'junit', not {fmt!r}")
    writable_dir(report_dir, "--report-dir")
    writable_dir(settings.drill_history, "REGIONKIT_DRILL_HISTORY")
    log_file = drill_log_file(report_dir, policy)
    if target == "local" and not settings.state_file.is_file():
        require_extra("local")  # an ephemeral cluster of moto servers
    options = DrillOptions(duration=duration if duration is not None else 5.0, rate=rate, lag=lag)
    aws = {
        "duration": duration,
        "confirm_account": confirm_account,
        "create_template": create_template,
    }
    journal, code = _run(target, sc, params, policy, settings, options, aws)
    history = save_journal(journal, settings.drill_history)
    paths = write_reports(journal, report_dir, junit=fmt == "junit")
    if as_json:
        typer.echo(journal.model_dump_json(indent=2))
    else:
        _print_run(journal, paths, history, log_file)
    if code:
        console(stderr=True).print(
            "[bold red]interrupted:[/] "
            + esc("; ".join(journal.cleanup) or "no fault was in place")
        )
        raise typer.Exit(code)
    raise typer.Exit(EXIT_OK if journal.verdict == "pass" else EXIT_CHECK_FAILED)


def print_drill(j: DrillJournal) -> None:
    """The journal for a terminal: short headers, cells that wrap, fits 80 columns."""
    from rich.table import Table

    from regions.drills.report import rows

    con = console()
    colour = {"pass": "green", "fail": "red"}.get(j.verdict, "yellow")
    con.print(
        f"[bold]drill {j.drill_id}[/] {esc(j.scenario)} on {esc(', '.join(j.regions))}:"
        f" [bold {colour}]{j.verdict.upper()}[/]",
        soft_wrap=False,
    )
    for r in j.reasons:
        con.print(f"  [red]- {esc(r)}[/]", soft_wrap=False)
    t = Table(title="figures against targets", title_justify="left")
    t.add_column("figure", ratio=2)
    t.add_column("measured", ratio=5)
    t.add_column("target", ratio=1)
    t.add_column("ok", no_wrap=True)
    for a, b, c, ok in rows(j):
        t.add_row(esc(a), esc(b), esc(c), "[green]yes[/]" if ok else "[red]NO[/]")
    con.print(t)
    if j.figures.data_classes:
        d = Table(title="per data class", title_justify="left")
        for col in ("class", "kind", "RTO s", "writes ok", "failed", "failover", "waits by law"):
            d.add_column(col)
        for x in j.figures.data_classes:
            rto = "n/a" if x.rto_seconds is None else f"{x.rto_seconds:.3f}"
            d.add_row(
                esc(x.data_class),
                x.kind,
                rto,
                str(x.writes_ok),
                str(x.writes_failed),
                str(x.failover_writes),
                esc(", ".join(x.no_compliant_failover) or "none"),
            )
        con.print(d)


def _fmt_figure(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "s":
        return f"{v:.3f} s"
    if unit == "%":
        return f"{v:.1f} %"
    if unit == "ms":
        return f"{v:.1f} ms"
    return f"{v:g}" + (f" {unit}" if unit else "")


def _load_journals(paths: tuple[Path, Path]) -> list[DrillJournal]:
    from regions.drills.journal import DrillJournal

    journals = []
    for path in paths:
        try:
            journals.append(DrillJournal.model_validate_json(path.read_text("utf-8")))
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or type(exc).__name__}")
        except ValueError:
            fail(f"{path} is not a regionkit drill journal (fix: pass a drill-*.json report)")
    return journals


def _comparison_json(cmp: Comparison, threshold: float) -> dict[str, Any]:
    return {
        "a": cmp.a.drill_id,
        "b": cmp.b.drill_id,
        "threshold": threshold,
        "warnings": cmp.warnings,
        "changes": [
            {
                "figure": c.label,
                "unit": c.unit,
                "a": c.a,
                "b": c.b,
                "delta": c.delta,
                "regressed": c.regressed,
                "note": c.note,
            }
            for c in cmp.changes
        ],
        "regressed": [c.label for c in cmp.regressed],
    }


def _changes_table(cmp: Comparison, threshold: float) -> Any:
    from rich.table import Table

    t = Table(title=f"B against A (regression: worse by > {threshold:.0%})", title_justify="left")
    for col in ("figure", "A", "B", "change"):
        t.add_column(col)
    for c in cmp.changes:
        if c.delta is not None:
            change = f"{'+' if c.delta >= 0 else ''}{_fmt_figure(c.delta, c.unit)}"
        else:
            change = c.note or "-"
        a = c.note.split(" -> ")[0] if c.label == "verdict" else _fmt_figure(c.a, c.unit)
        b = c.note.split(" -> ")[-1] if c.label == "verdict" else _fmt_figure(c.b, c.unit)
        if c.label == "verdict":
            change = "" if c.regressed else "-"
        mark = "[red]worse[/] " if c.regressed else ""
        t.add_row(esc(c.label), esc(a), esc(b), (mark + esc(change)).strip())
    return t


def _print_comparison(cmp: Comparison, threshold: float) -> None:
    con = console()
    con.print(
        f"[bold]drill compare[/]: A {esc(cmp.a.drill_id)} ({esc(cmp.a.scenario)}, "
        f"{cmp.a.started_at:%Y-%m-%d %H:%M}) against B {esc(cmp.b.drill_id)} "
        f"({esc(cmp.b.scenario)}, {cmp.b.started_at:%Y-%m-%d %H:%M})",
        soft_wrap=False,
    )
    for w in cmp.warnings:
        con.print(f"[yellow]note:[/] {esc(w)}", soft_wrap=False)
    con.print(_changes_table(cmp, threshold))
    if cmp.regressed:
        con.print(
            "[red]regressed:[/] " + esc(", ".join(c.label for c in cmp.regressed)),
            soft_wrap=False,
        )


@app.command("compare")
def drill_compare(
    baseline: Annotated[Path, typer.Argument(help="Journal A (the baseline), JSON.")],
    current: Annotated[Path, typer.Argument(help="Journal B (the new run), JSON.")],
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            help="Relative worsening that counts as a regression (0 to 10; 0.2 = 20 %).",
            callback=finite("--threshold", 0, 10),
        ),
    ] = 0.2,
    as_json: JsonOpt = False,
) -> None:
    """Two drills side by side with the change; exit 1 when a figure of B regressed."""
    from regions.drills.compare import compare

    journals = _load_journals((baseline, current))
    cmp = compare(journals[0], journals[1], threshold=threshold)
    if as_json:
        print_json(_comparison_json(cmp, threshold))
    else:
        _print_comparison(cmp, threshold)
    raise typer.Exit(EXIT_CHECK_FAILED if cmp.regressed else EXIT_OK)


@app.command("history")
def drill_history(
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", help="Most recent N drills (1 to 100,000).", min=1, max=100_000
        ),
    ] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Past drills, newest last, with each region's last successful drill."""
    from regions.drills import load_history

    journals = load_history(get_settings().drill_history)[-limit:]
    if as_json:
        print_json(
            [
                j.summary().model_dump(mode="json")
                | {
                    "rto_seconds": j.figures.rto_seconds,
                    "convergence_seconds": j.figures.convergence_seconds,
                    "residency_violations": j.figures.residency_violations,
                }
                for j in journals
            ]
        )
        return
    from rich.table import Table

    t = Table(title=f"drill history ({get_settings().drill_history})", title_justify="left")
    for col in ("when (UTC)", "drill", "scenario", "verdict", "RTO s", "conv. s"):
        t.add_column(col, overflow="fold")
    for j in journals:
        f = j.figures
        t.add_row(
            j.started_at.strftime("%m-%d %H:%M"),
            j.drill_id,
            f"{esc(j.scenario)}\n{esc(', '.join(j.regions))} ({j.target})",
            j.verdict,
            "n/a" if f.rto_seconds is None else f"{f.rto_seconds:.3f}",
            "n/a" if f.convergence_seconds is None else f"{f.convergence_seconds:.3f}",
        )
    console().print(t)
    last: dict[str, str] = {}
    for j in journals:
        if j.verdict == "pass":
            for r in j.regions:
                last[r] = j.started_at.strftime("%Y-%m-%d %H:%M")
    policy = get_policy()
    console().print(
        "last successful drill per region: "
        + ", ".join(f"{r}: {last.get(r, 'never')}" for r in policy.regions),
        soft_wrap=False,
    )


# --- regionkit demo -----------------------------------------------------------------------
