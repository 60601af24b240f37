"""What the sub-apps share: console, settings and policy loading, checks, exit codes.

Exit codes: 0 done; 1 done, but a check failed (or the operation could not be carried
out); 2 bad input or configuration. A ``ConfigError`` raised anywhere is exit 2 and an
``OperationError`` exit 1: :func:`cli.main` maps them and prints the message.

Like every module of the CLI, this one imports only typer and regionkit's error tree at
the top; rich, pydantic, boto3 and the rest are imported inside the functions that use
them, so ``regionkit --help`` starts fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from residency.errors import ConfigError, OperationError

if TYPE_CHECKING:
    from rich.console import Console

    from residency.policy import Policy
    from residency.settings import Settings

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class WholeSentenceGroup(TyperGroup):
    """Lists each command with the whole first sentence of its help, wrapped to the
    terminal as rich's panels did; click's plain help cuts it at one line with "..."."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def new_app(help: str, **kwargs: Any) -> typer.Typer:
    """A Typer app (the root or a sub-app) with plain, click-style help.

    Why not typer's rich help panels: rendering them imports ``typer.rich_utils``, which
    imports rich's Markdown (markdown-it) and Traceback whether used or not. That doubled
    the time of ``regionkit --help`` (about 250 against 130 ms, ``bench_cli_startup``).
    Command output still uses rich.
    """
    return typer.Typer(
        help=help, no_args_is_help=True, rich_markup_mode=None, cls=WholeSentenceGroup, **kwargs
    )


@dataclass
class State:
    """What the root callback parsed, for every command of this process."""

    policy_path: Path | None = None
    log_format: str | None = None
    allow_example: bool = False  # demo and local up may fall back to the packaged example
    example_said: bool = False


state = State()

# Where the policy comes from, first match wins (also in the --policy help).
POLICY_LOOKUP = (
    "--policy, then REGIONKIT_POLICY, then ./regionkit.yaml, then "
    "./policies/social-network.yaml; `demo` and `local up` then fall back to the "
    "example policy packaged with regionkit"
)
POLICY_CANDIDATES = (Path("regionkit.yaml"), Path("policies") / "social-network.yaml")


def packaged_example() -> Path:
    """The example policy shipped in the wheel (``policies/`` beside ``cli.py``)."""
    return Path(__file__).resolve().parent.parent / "policies" / "social-network.yaml"


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    # soft_wrap: never break "file:line: message" lines; tables still fit the width
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def get_settings(**overrides: Any) -> Settings:
    """Settings, with the policy path found in the order of :data:`POLICY_LOOKUP`."""
    from residency.settings import load_settings

    s = load_settings(policy=state.policy_path, log_format=state.log_format, **overrides)
    if "policy" in s.model_fields_set:  # --policy or REGIONKIT_POLICY (env or .env)
        return s
    found = next((c for c in POLICY_CANDIDATES if c.is_file()), None)
    if found is None and state.allow_example:
        found = packaged_example()
        if not state.example_said:
            state.example_said = True
            console(stderr=True).print(
                f"note: no policy given and none in {esc(Path.cwd())}: using the example "
                f"policy packaged with regionkit ({esc(found)}); pass --policy or set "
                "REGIONKIT_POLICY to use your own",
                markup=True,
            )
    return s.model_copy(update={"policy": found}) if found else s


def policy_path() -> Path:
    """The policy file to use; exit 2 naming the lookup order when there is none."""
    s = get_settings()
    if "policy" not in s.model_fields_set and not s.policy.exists():
        raise ConfigError(
            message=f"no policy file found in {Path.cwd()} (looked for {POLICY_LOOKUP}); "
            "fix: pass --policy FILE or set REGIONKIT_POLICY"
        )
    return s.policy


def get_policy(path: Path | None = None) -> Policy:
    """Load and validate the policy: size limit and merge modules from the settings."""
    from residency.policy import load_policy

    s = get_settings()
    if path is None or path == s.policy:
        path = policy_path()
    return load_policy(path, max_bytes=s.policy_max_bytes, merge_modules=s.merge_modules)


def configure_logging(policy: Policy | None = None) -> None:
    from residency.logs import configure_logging as configure

    s = get_settings()
    configure(
        log_format=s.log_format,
        level=s.log_level,
        pii_attributes=policy.pii_attributes() if policy else (),
    )


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def esc(text: object) -> str:
    from rich.markup import escape

    return escape(str(text))


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    if code == EXIT_BAD_INPUT:  # main() prints it, and the --json error object
        raise ConfigError(message=message)
    console(stderr=True).print(f"[bold red]error:[/] {esc(message)}", markup=True)
    raise typer.Exit(code)


def finite(option: str, low: float, high: float) -> Any:
    """An option callback: a finite number within [low, high] (click's ranges let NaN by)."""
    import math

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value) or not low <= value <= high:
            raise typer.BadParameter(f"must be a finite number from {low:g} to {high:g}")
        return value

    return check


def split_regions(text: str) -> list[str]:
    return [r.strip() for r in text.split(",") if r.strip()]


# --- paths checked before any work -----------------------------------------------------


def _nearest_dir(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def writable_dir(path: Path, option: str, shown: Path | None = None) -> Path:
    """Check before any work that ``path`` is, or can be made, a writable directory."""
    import os
    import tempfile

    shown = shown or path
    base = _nearest_dir(path)
    if not base.is_dir():
        what = "exists and is not a directory" if base == shown else f"{base} is not a directory"
        fail(f"{option} {shown}: {what}; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        fail(f"{option} {shown}: {base} is not writable; choose a writable directory")
    try:  # access() says yes to root even on a read-only mount: try it
        fd, probe = tempfile.mkstemp(dir=base, prefix=".regionkit-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        fail(f"{option} {shown}: {base} is not writable ({exc.strerror})")
    return path


def writable_file(path: Path, option: str) -> Path:
    """Check before any work that ``path`` can be written as a file (missing parent
    directories are created later, if the nearest existing one is writable)."""
    import os

    if path.is_dir():
        fail(f"{option} {path}: is a directory; give a file name")
    if path.exists():
        import stat

        if not stat.S_ISREG(path.stat().st_mode):
            # A FIFO would block the probe below (and the write) for ever.
            fail(f"{option} {path}: is not a regular file (a FIFO, device or socket)")
        if not os.access(path, os.W_OK):
            fail(f"{option} {path}: the file is not writable")
        try:
            with path.open("ab"):
                pass
        except OSError as exc:
            fail(f"{option} {path}: cannot be written ({exc.strerror})")
        return path
    writable_dir(path.parent, option, shown=path)
    return path


def write_text(path: Path, text: str, option: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"{option} {path}: cannot be written ({exc.strerror})")


_EXTRAS = {
    "infra": ("aws_cdk", "constructs", "cdk_nag"),
    "local": ("moto", "werkzeug"),
}


def require_extra(extra: str) -> None:
    """Exit 2 with the one `pip install` line when an optional extra is missing."""
    import importlib.util

    for module in _EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # ValueError: sys.modules holds None for it
            found = False
        if not found:
            fail(
                f"this command needs the '{extra}' extra ({module} is not installed); "
                f"fix: pip install 'regionkit[{extra}]'"
            )


# --- commands that talk to a cluster --------------------------------------------------


def quick_settings() -> Settings:
    """Settings for interactive commands: fail fast on a region that does not answer."""
    return get_settings(connect_timeout=0.5, read_timeout=1.0, max_attempts=1, failover_attempts=2)


def no_cluster_reason(settings: Settings) -> str | None:
    """Why nothing can be reached (local mode without a running cluster), or None."""
    if settings.mode == "local" and not settings.endpoints:
        return (
            f"no local cluster is running (no endpoints in the settings or in the state file "
            f"{settings.state_file}); start one with `regionkit local up`, or set "
            "REGIONKIT_STATE_FILE / REGIONKIT_ENDPOINTS"
        )
    return None


def backend_hint(settings: Settings) -> str:
    if settings.mode == "local":
        return (
            "; is the local cluster running? (`regionkit local status`; state file "
            f"{settings.state_file})"
        )
    return "; check credentials and network access to AWS"


def reach_failed(settings: Settings, what: str, exc: BaseException) -> NoReturn:
    """Exit 1 (main prints "failed: ..."): the request was fine, the backend did not answer."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    raise OperationError(
        message=f"{what}: {type(exc).__name__}: {detail}{backend_hint(settings)}"
    ) from None


def cluster_policy(settings: Settings) -> Policy:
    """The policy of a command that needs a cluster: exit 1 when none runs, then logging."""
    reason = no_cluster_reason(settings)
    if reason:
        raise OperationError(message=reason)
    policy = get_policy(settings.policy)
    configure_logging(policy)
    return policy


def audit_signer(settings: Settings, policy: Policy) -> Any:
    """The deployment's signing key: KMS in aws mode (when named), else the local key file."""
    from regions.pool import control_plane_pool
    from residency.signing import deployment_signer

    if settings.mode == "aws" and settings.region is None:
        settings = get_settings(region=policy.regions[0])
    try:
        return deployment_signer(settings, control_plane_pool(settings).client)
    except Exception as exc:
        from residency.audit.clients import error_reason

        where = settings.signing_kms_key or settings.signing_key_file
        raise OperationError(
            message=f"the signing key {where} cannot be used ({error_reason(exc)}); check "
            "REGIONKIT_SIGNING_KMS_KEY or REGIONKIT_SIGNING_KEY_FILE"
        ) from None


# --- long-running commands (drills, the demo) -------------------------------------------


class sigterm_as_exit:  # lower case: used like a function, `with sigterm_as_exit():`
    """SIGTERM raises SystemExit(143) in the main thread, so ``finally`` blocks heal."""

    def __enter__(self) -> None:
        import signal

        def handler(signum: int, frame: Any) -> None:
            raise SystemExit(143)

        try:
            self._old: Any = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            self._old = None

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def drill_log_file(report_dir: Path, policy: Policy) -> Path:
    """Send logs to a file in the report directory, so they never cut into progress lines."""
    from residency.logs import configure_logging as configure

    s = get_settings()
    path = report_dir / "regionkit.log"
    report_dir.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", encoding="utf-8")
    configure(
        log_format=s.log_format,
        level=s.log_level,
        pii_attributes=policy.pii_attributes(),
        stream=stream,
    )
    return path
