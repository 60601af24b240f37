"""The ``regionkit`` command. The only code that talks to the terminal: this module and
the private package ``_cli`` beside it.

Exit codes: 0 done; 1 done, but a check failed (or the operation could not be
carried out); 2 bad input or configuration.

Layout: this module holds the Typer ``app``, its root options, :func:`main` (which maps
regionkit's error tree to exit codes and ``--json`` error objects) and registers the
sub-apps. Each sub-app lives in its own module of ``_cli`` (``_cli/policy.py`` for
``regionkit policy``, ``_cli/local.py``, ``_cli/infra.py``, ``_cli/config.py``,
``_cli/users.py``, ``_cli/subject.py``, ``_cli/conflicts.py``, ``_cli/audit.py``,
``_cli/drill.py``; ``_cli/route.py`` and ``_cli/demo.py`` for the two top-level
commands), with what they share in ``_cli/common.py``. Why: each sub-app is a screenful
a reviewer can read on its own, and the leading underscore says the package is no
library API; only this module and ``_cli`` itself import it (``tests/test_exports.py``
enforces that, and that the CLI parses arguments and renders: the work is done by the
library, ``residency``, ``regions`` and ``infra``, which return values the CLI renders).

Start-up matters (``regionkit --help`` is run by people and scripts alike), so
this module and ``_cli`` import only typer and regionkit's error tree at the top. boto3,
moto, aws_cdk, pydantic and rich are imported inside the commands that use them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from _cli import (
    audit,
    common,
    config,
    conflicts,
    demo,
    drill,
    infra,
    local,
    policy,
    route,
    subject,
    users,
)
from _cli.common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    POLICY_LOOKUP,
    console,
    esc,
    fail,
    new_app,
)
from residency.__about__ import __version__
from residency.errors import ConfigError, OperationError, RegionkitError

app = new_app(
    name="regionkit",
    help="Run one product in many AWS regions on DynamoDB without breaking data-residency law.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(policy.app, name="policy")
app.add_typer(local.app, name="local")
app.add_typer(infra.app, name="infra")
app.add_typer(config.app, name="config")
app.command("route")(route.route_cmd)
app.add_typer(users.app, name="users")
app.add_typer(subject.app, name="subject")
app.add_typer(conflicts.app, name="conflicts")
app.add_typer(audit.app, name="audit")
app.add_typer(drill.app, name="drill")
app.command("demo")(demo.demo)

__all__ = ["EXIT_BAD_INPUT", "EXIT_CHECK_FAILED", "EXIT_OK", "app", "main"]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"regionkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            "-p",
            help=f"Policy file. Looked up in this order: {POLICY_LOOKUP}.",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="Log format on stderr: console or json."),
    ] = None,
) -> None:
    if log_format is not None and log_format not in {"console", "json"}:
        fail(f"--log-format must be 'console' or 'json', not {log_format!r}")
    common.state.policy_path = policy
    common.state.log_format = log_format


# --- entry point ------------------------------------------------------------------------


def _wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for --json (before any ``--``)."""
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


def _error_object(exc: BaseException, code: int) -> dict[str, Any]:
    """The ``{"error": {...}}`` a --json command prints on stdout when it fails."""
    from dataclasses import asdict

    from residency.errors import PolicyError

    error: dict[str, Any] = {"type": type(exc).__name__, "exit_code": code}
    if isinstance(exc, RegionkitError):
        error["message"] = str(exc)
        if isinstance(exc, PolicyError):
            error["problems"] = [asdict(p) for p in exc.problems]
        else:  # the facts never hold PII (residency.errors)
            error["facts"] = {k: v for k, v in exc.facts.items() if k != "message"}
    else:  # a usage error
        fmt = getattr(exc, "format_message", None)
        error["message"] = fmt() if callable(fmt) else str(exc)
    return {"error": error}


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; map regionkit's error tree to exit codes, with no traceback.

    When the command line has --json, a failure also prints ``{"error": {...}}`` on
    stdout (type, exit_code, message, and the problems or facts), so a script that
    parses stdout always gets JSON; the human message still goes to stderr.
    """
    # Recent typer vendors click: its usage errors derive from typer.TyperException,
    # not from click's ClickException (catching only the latter printed tracebacks).
    usage_error: Any = getattr(typer, "TyperException", None)
    if usage_error is None:  # an older typer that raises click's own exceptions
        import click

        usage_error = click.exceptions.ClickException
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)

    def fail(exc: BaseException, label: str, code: int) -> NoReturn:
        if as_json:
            typer.echo(json.dumps(_error_object(exc, code), indent=2, default=str))
        console(stderr=True).print(
            f"[bold red]{label}:[/] {esc(exc)}", markup=True, highlight=False
        )
        sys.exit(code)

    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="regionkit", standalone_mode=False)
    except usage_error as exc:
        if as_json:
            typer.echo(json.dumps(_error_object(exc, exc.exit_code), indent=2))
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except ConfigError as exc:
        fail(exc, "error", EXIT_BAD_INPUT)
    except OperationError as exc:
        fail(exc, "failed", EXIT_CHECK_FAILED)
    except RegionkitError as exc:  # pragma: no cover - every error is in one branch
        fail(exc, "error", EXIT_CHECK_FAILED)
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)


if __name__ == "__main__":
    main()
