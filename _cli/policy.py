"""``regionkit policy``: validate, explain and export the residency policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from _cli.common import (
    EXIT_BAD_INPUT,
    JsonOpt,
    console,
    esc,
    get_policy,
    get_settings,
    new_app,
    policy_path,
    print_json,
    writable_file,
    write_text,
)

app = new_app(help="Validate, explain and export the residency policy.")


def _validate_files(paths: list[Path] | None) -> list[dict[str, Any]]:
    """One result per file: valid with its counts, or its problems."""
    from residency.errors import PolicyError, SettingsError
    from residency.policy import DEFAULT_MAX_POLICY_BYTES, load_policy

    max_bytes = DEFAULT_MAX_POLICY_BYTES
    merge_modules: list[str] = []
    try:
        s = get_settings()
        max_bytes, merge_modules = s.policy_max_bytes, s.merge_modules
    except SettingsError:
        if not paths:
            raise
        # explicit files need no settings: the defaults are the strictest limits
    results: list[dict[str, Any]] = []
    for path in paths or [policy_path()]:
        try:
            p = load_policy(path, max_bytes=max_bytes, merge_modules=merge_modules)
        except PolicyError as exc:
            results.append(
                {"file": str(path), "valid": False, "problems": [vars(pr) for pr in exc.problems]}
            )
        else:
            results.append(
                {
                    "file": str(path),
                    "valid": True,
                    "name": p.name,
                    "jurisdictions": len(p.jurisdictions),
                    "regions": len(p.regions),
                    "data_classes": len(p.data_classes),
                }
            )
    return results


def _print_validation_json(results: list[dict[str, Any]]) -> None:
    invalid = [r for r in results if not r["valid"]]
    if not invalid:
        print_json(results)
        return
    problems = [pr for r in invalid for pr in r["problems"]]
    print_json(
        {
            "error": {
                "type": "PolicyError",
                "exit_code": EXIT_BAD_INPUT,
                "message": f"{len(problems)} problem(s) in {len(invalid)} of "
                f"{len(results)} policy file(s)",
                "problems": problems,
            },
            "results": results,
        }
    )


def _problem_text(pr: dict[str, Any]) -> str:
    where = f"{pr['file']}:{pr['line']}" if pr["line"] else pr["file"]
    value = pr.get("value")
    shown = (
        f"\n      value: {value}"
        if value is not None and value.strip("'\"") not in pr["message"]
        else ""
    )
    fix = f"\n      fix: {pr['fix']}" if pr["fix"] else ""
    return (
        f"[bold red]error[/] {esc(where)}: [bold]{esc(pr['field'])}[/]: "
        f"{esc(pr['message'])}{esc(shown)}{esc(fix)}"
    )


@app.command("validate")
def policy_validate(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Policy files (default: --policy).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate policy files; exit 2 naming the file, line, field and value of every problem.

    Merge references are resolved too (regions.merges and REGIONKIT_MERGE_MODULES only).
    With --json, stdout holds the list of results, or on failure
    {"error": {...every problem...}, "results": [...]}.
    """
    results = _validate_files(paths)
    if as_json:
        _print_validation_json(results)
    out, err = console(), console(stderr=True)
    for r in results:
        if r["valid"] and not as_json:
            out.print(
                f"[green]ok[/]  {r['file']}: policy {r['name']!r}, "
                f"{r['jurisdictions']} jurisdictions, {r['regions']} regions, "
                f"{r['data_classes']} data classes"
            )
        for pr in r.get("problems", []):  # the human message goes to stderr, --json or not
            err.print(_problem_text(pr), markup=True, highlight=False)
    if any(not r["valid"] for r in results):
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command("schema")
def policy_schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to a file.")] = None,
) -> None:
    """Print the JSON schema of policy files (committed as policies/schema.json)."""
    from residency.schema import policy_json_schema

    if out:
        writable_file(out, "--out")
    text = policy_json_schema()
    if out:
        write_text(out, text, "--out")
    else:
        typer.echo(text, nl=False)


@app.command("explain")
def policy_explain(
    country: Annotated[str, typer.Option("--country", "-c", help="ISO 3166-1 alpha-2 code.")],
    data_class: Annotated[
        list[str] | None, typer.Option("--data-class", "-d", help="Only these data classes.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Where a resident's data lives, and the failover chain with the reason for each step."""
    from dataclasses import asdict

    from residency.explain import explain_country, region_label

    ex = explain_country(get_policy(), country, data_class)
    if as_json:
        print_json(asdict(ex))
        return
    from rich.table import Table

    con = console()
    how = " (default jurisdiction)" if ex.by_default else ""
    con.print(f"[bold]{ex.country}[/] → jurisdiction [bold]{ex.jurisdiction}[/]{how}: {ex.law}")
    con.print(f"home regions, in order: {', '.join(region_label(r) for r in ex.home_regions)}")
    for dc in ex.data_classes:
        t = Table(
            title=f"{dc.data_class} ({dc.kind}, table {dc.table})",
            title_justify="left",
            show_lines=False,
        )
        t.add_column("#", justify="right")
        t.add_column("region")
        t.add_column("why")
        for i, step in enumerate(dc.chain, 1):
            t.add_row(str(i), region_label(step.region), step.reason)
        t.add_row("", "[red]stop[/]", dc.stop)
        con.print(t)
