"""The ``regionkit`` command. The only module that talks to the terminal.

Exit codes: 0 done; 1 done, but a check failed (or the operation could not be
carried out); 2 bad input or configuration.

Start-up matters (``regionkit --help`` is run by people and scripts alike), so
this module imports only typer and regionkit's error tree at the top. boto3,
moto, aws_cdk, pydantic and rich are imported inside the commands that use them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from residency.__about__ import __version__
from residency.errors import ConfigError, OperationError, RegionkitError

if TYPE_CHECKING:
    from rich.console import Console

    from residency.policy import Policy
    from residency.settings import Settings

app = typer.Typer(
    name="regionkit",
    help="Run one product in many AWS regions on DynamoDB without breaking data-residency law.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Validate, explain and export the residency policy.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


# --- shared plumbing ----------------------------------------------------------------


@dataclass
class _State:
    policy_path: Path | None = None
    log_format: str | None = None


_state = _State()


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _settings(**overrides: Any) -> Settings:
    from residency.settings import load_settings

    return load_settings(policy=_state.policy_path, log_format=_state.log_format, **overrides)


def _policy(path: Path | None = None) -> Policy:
    from residency.policy import load_policy

    return load_policy(path or _settings().policy)


def _configure_logging(policy: Policy | None = None) -> None:
    from residency.logs import configure_logging

    s = _settings()
    configure_logging(
        log_format=s.log_format,
        level=s.log_level,
        pii_attributes=policy.pii_attributes() if policy else (),
    )


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def _esc(text: object) -> str:
    from rich.markup import escape

    return escape(str(text))


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    _console(stderr=True).print(f"[bold red]error:[/] {_esc(message)}", markup=True)
    raise typer.Exit(code)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"regionkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", "-p", help="Policy file (env REGIONKIT_POLICY, default "
                     "policies/social-network.yaml)."),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="Log format on stderr: console or json."),
    ] = None,
) -> None:
    if log_format is not None and log_format not in {"console", "json"}:
        _fail(f"--log-format must be 'console' or 'json', not {log_format!r}")
    _state.policy_path = policy
    _state.log_format = log_format


# --- regionkit policy ---------------------------------------------------------------


@policy_app.command("validate")
def policy_validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="Policy files (default: --policy).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate policy files; exit 2 naming the file, line and field of every problem."""
    from residency.errors import PolicyError
    from residency.policy import load_policy

    targets = paths or [_settings().policy]
    results: list[dict[str, Any]] = []
    for path in targets:
        try:
            p = load_policy(path)
        except PolicyError as exc:
            results.append({"file": str(path), "valid": False,
                            "problems": [vars(pr) for pr in exc.problems]})
        else:
            results.append({"file": str(path), "valid": True, "name": p.name,
                            "jurisdictions": len(p.jurisdictions),
                            "regions": len(p.regions), "data_classes": len(p.data_classes)})
    if as_json:
        _print_json(results)
    else:
        out, err = _console(), _console(stderr=True)
        for r in results:
            if r["valid"]:
                out.print(f"[green]ok[/]  {r['file']}: policy {r['name']!r}, "
                          f"{r['jurisdictions']} jurisdictions, {r['regions']} regions, "
                          f"{r['data_classes']} data classes")
            else:
                for pr in r["problems"]:
                    where = f"{pr['file']}:{pr['line']}" if pr["line"] else pr["file"]
                    fix = f"\n      fix: {pr['fix']}" if pr["fix"] else ""
                    err.print(f"[bold red]error[/] {_esc(where)}: [bold]{_esc(pr['field'])}[/]: "
                              f"{_esc(pr['message'])}{_esc(fix)}", markup=True, highlight=False)
    if not all(r["valid"] for r in results):
        raise typer.Exit(EXIT_BAD_INPUT)


@policy_app.command("schema")
def policy_schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to a file.")] = None,
) -> None:
    """Print the JSON schema of policy files (committed as policies/schema.json)."""
    from residency.schema import policy_json_schema

    text = policy_json_schema()
    if out:
        out.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


@policy_app.command("explain")
def policy_explain(
    country: Annotated[str, typer.Option("--country", "-c", help="ISO 3166-1 alpha-2 code.")],
    data_class: Annotated[
        list[str] | None, typer.Option("--data-class", "-d", help="Only these data classes.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Where a resident's data lives, and the failover chain with the reason for each step."""
    from dataclasses import asdict

    from residency.explain import explain_country, region_label

    ex = explain_country(_policy(), country, data_class)
    if as_json:
        _print_json(asdict(ex))
        return
    from rich.table import Table

    con = _console()
    how = " (default jurisdiction)" if ex.by_default else ""
    con.print(f"[bold]{ex.country}[/] → jurisdiction [bold]{ex.jurisdiction}[/]{how}: {ex.law}")
    con.print(f"home regions, in order: {', '.join(region_label(r) for r in ex.home_regions)}")
    for dc in ex.data_classes:
        t = Table(title=f"{dc.data_class} ({dc.kind}, table {dc.table})", title_justify="left",
                  show_lines=False)
        t.add_column("#", justify="right")
        t.add_column("region")
        t.add_column("why")
        for i, step in enumerate(dc.chain, 1):
            t.add_row(str(i), region_label(step.region), step.reason)
        t.add_row("", "[red]stop[/]", dc.stop)
        con.print(t)


# --- entry point ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; map regionkit's error tree to exit codes, with no traceback."""
    import click

    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="regionkit", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except ConfigError as exc:
        _console(stderr=True).print(f"[bold red]error:[/] {_esc(exc)}", markup=True, highlight=False)
        sys.exit(EXIT_BAD_INPUT)
    except OperationError as exc:
        _console(stderr=True).print(f"[bold red]failed:[/] {_esc(exc)}", markup=True, highlight=False)
        sys.exit(EXIT_CHECK_FAILED)
    except RegionkitError as exc:  # pragma: no cover - every error is in one branch
        _console(stderr=True).print(f"[bold red]error:[/] {_esc(exc)}", markup=True, highlight=False)
        sys.exit(EXIT_CHECK_FAILED)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)


if __name__ == "__main__":
    main()
