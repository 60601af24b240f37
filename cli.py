"""The ``regionkit`` command. The only module that talks to the terminal.

Exit codes: 0 done; 1 done, but a check failed (or the operation could not be
carried out); 2 bad input or configuration.

Start-up matters (``regionkit --help`` is run by people and scripts alike), so
this module imports only typer and regionkit's error tree at the top. boto3,
moto, aws_cdk, pydantic and rich are imported inside the commands that use them.
"""

from __future__ import annotations

import json
import os
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
policy_app = typer.Typer(
    help="Validate, explain and export the residency policy.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


# --- shared plumbing ----------------------------------------------------------------


@dataclass
class _State:
    policy_path: Path | None = None
    log_format: str | None = None
    allow_example: bool = False  # demo and local up may fall back to the packaged example
    example_said: bool = False


_state = _State()

# Where the policy comes from, first match wins (also in the --policy help).
POLICY_LOOKUP = (
    "--policy, then REGIONKIT_POLICY, then ./regionkit.yaml, then "
    "./policies/social-network.yaml; `demo` and `local up` then fall back to the "
    "example policy packaged with regionkit"
)
_POLICY_CANDIDATES = (Path("regionkit.yaml"), Path("policies") / "social-network.yaml")


def _packaged_example() -> Path:
    """The example policy shipped in the wheel (``policies/`` beside this module)."""
    return Path(__file__).resolve().parent / "policies" / "social-network.yaml"


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    # soft_wrap: never break "file:line: message" lines; tables still fit the width
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _settings(**overrides: Any) -> Settings:
    """Settings, with the policy path found in the order of :data:`POLICY_LOOKUP`."""
    from residency.settings import load_settings

    s = load_settings(policy=_state.policy_path, log_format=_state.log_format, **overrides)
    if "policy" in s.model_fields_set:  # --policy or REGIONKIT_POLICY (env or .env)
        return s
    found = next((c for c in _POLICY_CANDIDATES if c.is_file()), None)
    if found is None and _state.allow_example:
        found = _packaged_example()
        if not _state.example_said:
            _state.example_said = True
            _console(stderr=True).print(
                f"note: no policy given and none in {_esc(Path.cwd())}: using the example "
                f"policy packaged with regionkit ({_esc(found)}); pass --policy or set "
                "REGIONKIT_POLICY to use your own",
                markup=True,
            )
    return s.model_copy(update={"policy": found}) if found else s


def _policy_path() -> Path:
    """The policy file to use; exit 2 naming the lookup order when there is none."""
    s = _settings()
    if "policy" not in s.model_fields_set and not s.policy.exists():
        raise ConfigError(
            message=f"no policy file found in {Path.cwd()} (looked for {POLICY_LOOKUP}); "
            "fix: pass --policy FILE or set REGIONKIT_POLICY"
        )
    return s.policy


def _policy(path: Path | None = None) -> Policy:
    """Load and validate the policy: size limit and merge modules from the settings."""
    from residency.policy import load_policy

    s = _settings()
    if path is None or path == s.policy:
        path = _policy_path()
    return load_policy(path, max_bytes=s.policy_max_bytes, merge_modules=s.merge_modules)


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
    if code == EXIT_BAD_INPUT:  # main() prints it, and the --json error object
        raise ConfigError(message=message)
    _console(stderr=True).print(f"[bold red]error:[/] {_esc(message)}", markup=True)
    raise typer.Exit(code)


def _finite(option: str, low: float, high: float) -> Any:
    """An option callback: a finite number within [low, high] (click's ranges let NaN by)."""
    import math

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value) or not low <= value <= high:
            raise typer.BadParameter(f"must be a finite number from {low:g} to {high:g}")
        return value

    return check


def _nearest_dir(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _writable_dir(path: Path, option: str, shown: Path | None = None) -> Path:
    """Check before any work that ``path`` is, or can be made, a writable directory."""
    import os
    import tempfile

    shown = shown or path
    base = _nearest_dir(path)
    if not base.is_dir():
        what = "exists and is not a directory" if base == shown else f"{base} is not a directory"
        _fail(f"{option} {shown}: {what}; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        _fail(f"{option} {shown}: {base} is not writable; choose a writable directory")
    try:  # access() says yes to root even on a read-only mount: try it
        fd, probe = tempfile.mkstemp(dir=base, prefix=".regionkit-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        _fail(f"{option} {shown}: {base} is not writable ({exc.strerror})")
    return path


def _writable_file(path: Path, option: str) -> Path:
    """Check before any work that ``path`` can be written as a file (missing parent
    directories are created later, if the nearest existing one is writable)."""
    import os

    if path.is_dir():
        _fail(f"{option} {path}: is a directory; give a file name")
    if path.exists():
        if not os.access(path, os.W_OK):
            _fail(f"{option} {path}: the file is not writable")
        try:
            with path.open("ab"):
                pass
        except OSError as exc:
            _fail(f"{option} {path}: cannot be written ({exc.strerror})")
        return path
    _writable_dir(path.parent, option, shown=path)
    return path


def _write_text(path: Path, text: str, option: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"{option} {path}: cannot be written ({exc.strerror})")


_EXTRAS = {
    "infra": ("aws_cdk", "constructs", "cdk_nag"),
    "local": ("moto", "werkzeug"),
}


def _require_extra(extra: str) -> None:
    """Exit 2 with the one `pip install` line when an optional extra is missing."""
    import importlib.util

    for module in _EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # ValueError: sys.modules holds None for it
            found = False
        if not found:
            _fail(
                f"this command needs the '{extra}' extra ({module} is not installed); "
                f"fix: pip install 'regionkit[{extra}]'"
            )


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
        _fail(f"--log-format must be 'console' or 'json', not {log_format!r}")
    _state.policy_path = policy
    _state.log_format = log_format


# --- regionkit policy ---------------------------------------------------------------


@policy_app.command("validate")
def policy_validate(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Policy files (default: --policy).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Validate policy files; exit 2 naming the file, line, field and value of every problem.

    Merge references are resolved too (regions.merges and REGIONKIT_MERGE_MODULES only).
    With --json, stdout holds the list of results, or on failure
    {"error": {...every problem...}, "results": [...]}.
    """
    from residency.errors import PolicyError, SettingsError
    from residency.policy import DEFAULT_MAX_POLICY_BYTES, load_policy

    max_bytes = DEFAULT_MAX_POLICY_BYTES
    merge_modules: list[str] = []
    try:
        s = _settings()
        max_bytes, merge_modules = s.policy_max_bytes, s.merge_modules
    except SettingsError:
        if not paths:
            raise
        # explicit files need no settings: the defaults are the strictest limits
    targets = paths or [_policy_path()]
    results: list[dict[str, Any]] = []
    for path in targets:
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
    invalid = [r for r in results if not r["valid"]]
    if as_json and not invalid:
        _print_json(results)
    elif as_json:
        problems = [pr for r in invalid for pr in r["problems"]]
        _print_json(
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
    out, err = _console(), _console(stderr=True)
    for r in results:
        if r["valid"] and not as_json:
            out.print(
                f"[green]ok[/]  {r['file']}: policy {r['name']!r}, "
                f"{r['jurisdictions']} jurisdictions, {r['regions']} regions, "
                f"{r['data_classes']} data classes"
            )
        for pr in r.get("problems", []):  # the human message goes to stderr, --json or not
            where = f"{pr['file']}:{pr['line']}" if pr["line"] else pr["file"]
            value = pr.get("value")
            shown = (
                f"\n      value: {value}"
                if value is not None and value.strip("'\"") not in pr["message"]
                else ""
            )
            fix = f"\n      fix: {pr['fix']}" if pr["fix"] else ""
            err.print(
                f"[bold red]error[/] {_esc(where)}: [bold]{_esc(pr['field'])}[/]: "
                f"{_esc(pr['message'])}{_esc(shown)}{_esc(fix)}",
                markup=True,
                highlight=False,
            )
    if invalid:
        raise typer.Exit(EXIT_BAD_INPUT)


@policy_app.command("schema")
def policy_schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to a file.")] = None,
) -> None:
    """Print the JSON schema of policy files (committed as policies/schema.json)."""
    from residency.schema import policy_json_schema

    if out:
        _writable_file(out, "--out")
    text = policy_json_schema()
    if out:
        _write_text(out, text, "--out")
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


# --- regionkit local ----------------------------------------------------------------------

local_app = typer.Typer(
    help="Run the embedded local cluster (one moto server per region) and inject faults.",
    no_args_is_help=True,
)
app.add_typer(local_app, name="local")
fault_app = typer.Typer(
    help="Inject faults into the running local cluster (`regionkit local up`).",
    no_args_is_help=True,
)
local_app.add_typer(fault_app, name="fault")

_StateFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-file",
        help="Cluster state file (default: REGIONKIT_STATE_FILE or .regionkit/cluster.json).",
    ),
]


def _local_state_path(state_file: Path | None) -> Path:
    return state_file or _settings().state_file


def _local_control(state_file: Path | None) -> Any:
    from regions.local.control import ControlClient

    return ControlClient.from_state_file(_local_state_path(state_file))


def _split_regions(text: str) -> list[str]:
    return [r.strip() for r in text.split(",") if r.strip()]


@local_app.command("up")
def local_up(
    state_file: _StateFileOpt = None,
    table_prefix: Annotated[
        str, typer.Option("--table-prefix", help="Prefix of every table.")
    ] = "",
    replicate: Annotated[
        bool, typer.Option("--replicate/--no-replicate", help="Run the replication emulator.")
    ] = True,
    server: Annotated[
        str, typer.Option("--server", help="'fast' (keep-alive, default) or 'stock' moto_server.")
    ] = "fast",
    ttl_sweep: Annotated[
        float,
        typer.Option(
            "--ttl-sweep",
            help="Seconds between runs of the emulated TTL process (expired items are "
            "deleted, and the deletions replicate); 0 turns it off.",
            min=0,
        ),
    ] = 60.0,
) -> None:
    """Start the local cluster and keep it running in the foreground until Ctrl-C.

    Without --policy, REGIONKIT_POLICY, ./regionkit.yaml or ./policies/, it runs the
    example policy packaged with regionkit, and says so.
    """
    import signal
    import threading

    _require_extra("local")
    _state.allow_example = True
    from regions.local.cluster import LocalCluster

    if server not in {"fast", "stock"}:
        _fail(f"--server must be 'fast' or 'stock', not {server!r}")
    settings = _settings()
    policy = _policy(settings.policy)
    _configure_logging(policy)
    path = state_file or settings.state_file
    stop = threading.Event()
    cluster = LocalCluster(
        policy,
        table_prefix=table_prefix,
        replicate=replicate,
        state_file=path,
        server_kind="fast" if server == "fast" else "stock",
        control=True,
        on_stop_request=stop.set,
        policy_file=settings.policy,
        ttl_sweep_s=ttl_sweep if ttl_sweep > 0 and server == "fast" else None,
    )
    # SIGTERM and SIGHUP (terminal closed) stop the cluster in order, like Ctrl-C.
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    con = _console()
    try:
        cluster.start()
        from rich.table import Table

        t = Table(title=f"local cluster for policy {policy.name!r}", title_justify="left")
        t.add_column("region")
        t.add_column("jurisdiction")
        t.add_column("endpoint")
        t.add_column("pid", justify="right")
        for region, url in cluster.endpoints.items():
            t.add_row(region, policy.jurisdiction_of_region(region), url, str(cluster.pids[region]))
        con.print(t)
        con.print(
            f"replication: {'on' if cluster.replicator else 'off'}; "
            f"started in {cluster.timings.get('total_s', 0):.2f} s"
        )
        con.print(f"state file: {_esc(path)}  control: {cluster.control_url}")
        con.print("press Ctrl-C (or run `regionkit local down`) to stop")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        cluster.stop()
    con.print("local cluster stopped")


@local_app.command("status")
def local_status(
    state_file: _StateFileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Endpoints, server liveness and per-link replication metrics of the running cluster."""
    from regions.local.control import ControlClient
    from regions.local.state import pid_alive, read_state
    from residency.errors import ClusterError

    path = _local_state_path(state_file)
    state = read_state(path)
    if state is None:
        raise ClusterError(message=f"no local cluster is running (no state file at {path})")
    try:
        status: dict[str, Any] = ControlClient.from_state(state, timeout=5).status()
        status["control"] = {"url": state.get("control"), "answering": True}
    except RegionkitError as exc:
        servers = state.get("pids", {}).get("servers", {})
        status = {
            "policy": state.get("policy"),
            "running": False,
            "servers": {
                r: {
                    "url": state["endpoints"].get(r),
                    "pid": pid,
                    "alive": pid_alive(pid),
                    "state": "unknown",
                }
                for r, pid in servers.items()
            },
            "links": [],
            "clock_skew_ms": state.get("clock_skew_ms", {}),
            "control": {"url": state.get("control"), "answering": False, "error": str(exc)},
        }
    status["state_file"] = str(path)
    if as_json:
        _print_json(status)
    else:
        from rich import box
        from rich.table import Table

        con = _console()
        t = Table(
            title=f"local cluster {status.get('policy')!r} ({_esc(path)}; clock skew in ms)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for col in ("region", "jurisdiction", "endpoint", "pid", "state", "skew"):
            t.add_column(col, justify="right" if col in {"pid", "skew"} else "left", no_wrap=True)
        skew = status.get("clock_skew_ms", {})
        for region, s in status.get("servers", {}).items():
            now = str(s.get("state"))
            shown = {"up": "[green]up[/]", "unknown": "unknown"}.get(now, f"[yellow]{now}[/]")
            t.add_row(
                region,
                str(s.get("jurisdiction", "")),
                str(s.get("url")),
                str(s.get("pid")),
                shown if s.get("alive") else "[red]dead[/]",
                str(skew.get(region, 0)),
            )
        con.print(t)
        links = status.get("links", [])
        if links:
            lt = Table(
                title="replication links (lag in ms)",
                title_justify="left",
                box=box.SIMPLE_HEAD,
                pad_edge=False,
            )
            for col in ("link", "p50", "p99", "pending", "applied", "skipped", "paused"):
                lt.add_column(col, justify="left" if col == "link" else "right", no_wrap=True)

            def ms(v: Any) -> str:
                return "-" if v is None else f"{v:.0f}"

            table_name = None
            for m in links:
                if m["table"] != table_name:
                    table_name = m["table"]
                    lt.add_row(f"[bold]{_esc(table_name)}[/]")
                lt.add_row(
                    f"  {m['src']} → {m['dst']}",
                    ms(m.get("lag_p50_ms")),
                    ms(m.get("lag_p99_ms")),
                    str(m.get("pending")),
                    str(m.get("applied")),
                    str(m.get("skipped")),
                    "[yellow]yes[/]" if m.get("paused") else "no",
                )
            con.print(lt)
        elif status.get("control", {}).get("answering"):
            con.print("replication: off")
        if not status.get("control", {}).get("answering"):
            _console(stderr=True).print(
                f"[yellow]control endpoint not answering:[/] "
                f"{_esc(status['control'].get('error', ''))}"
            )
    if not status.get("control", {}).get("answering"):
        raise typer.Exit(EXIT_CHECK_FAILED)


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode("utf-8", "replace")
        )
    except OSError:
        return ""


@local_app.command("down")
def local_down(
    state_file: _StateFileOpt = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", help="Seconds to wait (0 to 600).", callback=_finite("--timeout", 0, 600)
        ),
    ] = 10.0,
) -> None:
    """Stop the running cluster; kill its recorded processes if it does not answer."""
    import os
    import signal
    import time

    from regions.local.control import ControlClient
    from regions.local.state import pid_alive, read_state, remove_state

    path = _local_state_path(state_file)
    state = read_state(path)
    con = _console()
    if state is None:
        con.print(f"no local cluster is running (no state file at {_esc(path)})")
        return
    pids = state.get("pids", {})
    owner = pids.get("owner") if isinstance(pids.get("owner"), int) else None
    servers = [p for p in pids.get("servers", {}).values() if isinstance(p, int)]
    try:
        ControlClient.from_state(state, timeout=2).stop()
        how = "asked it to stop"
    except RegionkitError:
        how = "its control endpoint did not answer"
    deadline = time.monotonic() + timeout
    everyone = [p for p in [owner, *servers] if p is not None]
    while any(pid_alive(p) for p in everyone) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = []
    for pid in everyone:
        if not pid_alive(pid):
            continue
        cmd = _cmdline(pid)
        mine = ("local" in cmd) if pid == owner else ("moto" in cmd or "_server_main" in cmd)
        if not mine:  # the PID was reused by an unrelated process: leave it alone
            continue
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
        killed.append(pid)
    remove_state(path)
    msg = f"local cluster stopped ({how}"
    msg += f"; killed pids {', '.join(map(str, killed))})" if killed else ")"
    con.print(msg)


def _link_text(src: str | None, dst: str | None) -> str:
    return f"{src or '*'} → {dst or '*'}"


def _fault_done(what: str) -> None:
    _console().print(f"[green]ok[/] {_esc(what)}")


_LinkRegionOpt = Annotated[
    str | None, typer.Option("--region", help="Every link into and out of this region.")
]
_SrcOpt = Annotated[str | None, typer.Option("--src", help="Source region (default: all).")]
_DstOpt = Annotated[str | None, typer.Option("--dst", help="Destination region (default: all).")]


def _links_fault(
    action: str, region: str | None, src: str | None, dst: str | None, state_file: Path | None
) -> None:
    if region and (src or dst):
        _fail("use --region, or --src/--dst, not both")
    getattr(_local_control(state_file), action)(src, dst, region=region)
    _fault_done(f"replication {action}d: {region or _link_text(src, dst)}")


@fault_app.command("pause")
def fault_pause(
    region: _LinkRegionOpt = None,
    src: _SrcOpt = None,
    dst: _DstOpt = None,
    state_file: _StateFileOpt = None,
) -> None:
    """Pause replication (like FIS global-table-pause-replication); nothing is lost."""
    _links_fault("pause", region, src, dst, state_file)


@fault_app.command("resume")
def fault_resume(
    region: _LinkRegionOpt = None,
    src: _SrcOpt = None,
    dst: _DstOpt = None,
    state_file: _StateFileOpt = None,
) -> None:
    """Resume paused replication; the backlog is applied."""
    _links_fault("resume", region, src, dst, state_file)


@fault_app.command("lag")
def fault_lag(
    ms: Annotated[
        float | None,
        typer.Option(
            "--ms",
            help="Replication lag in ms (0 to 3,600,000).",
            callback=_finite("--ms", 0, 3_600_000),
        ),
    ] = None,
    src: _SrcOpt = None,
    dst: _DstOpt = None,
    jitter_ms: Annotated[
        float,
        typer.Option(
            "--jitter-ms",
            help="Random extra lag in ms (0 to 3,600,000).",
            callback=_finite("--jitter-ms", 0, 3_600_000),
        ),
    ] = 0.0,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the lag.")] = False,
    state_file: _StateFileOpt = None,
) -> None:
    """Add replication lag on links src → dst."""
    if (ms is None) == (not clear):
        _fail("give --ms N, or --clear")
    _local_control(state_file).lag(src, dst, None if clear else ms, jitter_ms=jitter_ms)
    _fault_done(
        f"lag {_link_text(src, dst)}: "
        + ("cleared" if clear else f"{ms:g} ms (+ up to {jitter_ms:g} ms)")
    )


@fault_app.command("partition")
def fault_partition(
    group: Annotated[
        list[str], typer.Option("--group", help="Comma-separated regions; repeat for each side.")
    ],
    state_file: _StateFileOpt = None,
) -> None:
    """Cut replication between groups of regions (until `heal`)."""
    groups = [_split_regions(g) for g in group]
    if len(groups) < 2 or not all(groups):
        _fail("give at least two non-empty --group options, e.g. --group a,b --group c")
    _local_control(state_file).partition(groups)
    _fault_done("partitioned: " + " | ".join(",".join(g) for g in groups))


@fault_app.command("heal")
def fault_heal(state_file: _StateFileOpt = None) -> None:
    """Clear lag, pauses and partitions (region outages stay: use `restore`)."""
    _local_control(state_file).heal()
    _fault_done("replication healed")


@fault_app.command("outage")
def fault_outage(
    region: Annotated[str, typer.Option("--region", help="The region to take down.")],
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="'stop' (SIGSTOP: clients time out) or "
            "'refuse' (port closed: connections refused).",
        ),
    ] = "stop",
    state_file: _StateFileOpt = None,
) -> None:
    """Take a region down; its data is kept for `restore`."""
    if mode not in {"stop", "refuse"}:
        _fail(f"--mode must be 'stop' or 'refuse', not {mode!r}")
    _local_control(state_file).outage(region, mode)
    _fault_done(f"{region} is down ({mode})")


@fault_app.command("restore")
def fault_restore(
    region: Annotated[str, typer.Option("--region", help="The region to bring back.")],
    state_file: _StateFileOpt = None,
) -> None:
    """Bring a region back from an outage."""
    _local_control(state_file).restore(region)
    _fault_done(f"{region} is back")


@fault_app.command("skew")
def fault_skew(
    region: Annotated[str, typer.Option("--region", help="The writer's region.")],
    ms: Annotated[
        int,
        typer.Option(
            "--ms",
            help="Clock offset in ms, negative: behind (-3,600,000 to 3,600,000).",
            min=-3_600_000,
            max=3_600_000,
        ),
    ],
    state_file: _StateFileOpt = None,
) -> None:
    """Skew the clock of writers in a region (drill writers read it from the state file)."""
    _local_control(state_file).skew(region, ms)
    _fault_done(f"clock of {region} skewed by {ms} ms")


# --- regionkit infra ----------------------------------------------------------------------

infra_app = typer.Typer(
    help="The AWS CDK app built from the policy (needs the 'infra' extra).", no_args_is_help=True
)
app.add_typer(infra_app, name="infra")


@infra_app.command("synth")
def infra_synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Cloud assembly directory.")] = Path(
        "cdk.out"
    ),
    nag: Annotated[
        bool,
        typer.Option(
            "--nag/--no-nag",
            help="Run the cdk-nag AwsSolutions checks (a finding fails the synth).",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Write the CloudFormation templates of the policy and summarize every stack."""
    _require_extra("infra")
    _writable_dir(out, "--out")
    _policy()  # a bad policy is exit 2 with file:line before the CDK starts
    from infra.app import AppOptions, synth  # imports aws_cdk: only here, never at start-up

    s = _settings()
    result = synth(AppOptions(policy_path=s.policy, table_prefix=s.table_prefix, nag=nag), out)
    if as_json:
        _print_json(
            {
                "policy": result.policy_name,
                "out_dir": str(result.out_dir),
                "seconds": round(result.seconds, 2),
                "stacks": [st.as_dict() for st in result.stacks],
            }
        )
        return
    from rich.table import Table

    prefix = f"regionkit-{result.policy_name}-"
    all_regions = {st.region for st in result.stacks}
    t = Table(
        title=f"policy {result.policy_name}: {len(result.stacks)} stacks ({prefix}*) in {out}",
        title_justify="left",
    )
    for col in ("stack", "region", "tables"):
        t.add_column(col, no_wrap=True)
    t.add_column("replicas", overflow="fold")
    for col in ("keys", "alarms", "lambdas", "FIS"):
        t.add_column(col, justify="right")
    for st in result.stacks:
        replicas = [
            f"{len(rs)}: every region"
            if set(rs) == all_regions and len(rs) > 2
            else f"{len(rs)}: {' '.join(rs)}"
            for rs in st.replicas.values()
        ]
        t.add_row(
            _esc(st.stack.removeprefix(prefix)),
            st.region,
            "\n".join(_esc(name) for name in st.tables) or "-",
            "\n".join(replicas) or "-",
            str(st.keys),
            str(st.alarms),
            str(st.lambdas),
            str(st.fis_templates),
        )
    con = _console()
    con.print(t)
    con.print(
        f"[green]ok[/] synthesized in {result.seconds:.1f} s"
        f"{' (cdk-nag AwsSolutions: no unacknowledged finding)' if nag else ''}"
    )


@infra_app.command("guardrails")
def infra_guardrails(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for the SCP JSON documents.")
    ] = Path("guardrails"),
    export_principal: Annotated[
        list[str] | None,
        typer.Option(
            "--export-principal",
            help="ARN pattern of a principal allowed to export pinned tables (the audit's "
            "export role); repeatable. Without one, exports of pinned tables are denied.",
        ),
    ] = None,
    partition: Annotated[str, typer.Option("--partition", help="aws, aws-cn, ...")] = "aws",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Write service control policies that keep pinned tables in their jurisdictions."""
    import re

    from infra.guardrails import GAPS, guardrail_policies, minified
    from infra.plan import plan_deployment

    if not re.fullmatch(r"aws(-[a-z]+)*", partition):
        _fail(f"--partition must be an AWS partition name such as 'aws', not {partition!r}")
    _writable_dir(out, "--out")
    s = _settings()
    plan = plan_deployment(_policy(), table_prefix=s.table_prefix)
    docs = guardrail_policies(plan, partition=partition, export_principals=export_principal or [])
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, doc in enumerate(docs, 1):
        path = out / f"regionkit-{plan.policy_name}-scp-{i}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        files.append(
            {"file": str(path), "chars": len(minified(doc)), "statements": len(doc["Statement"])}
        )
    if as_json:
        _print_json({"policies": files, "gaps": list(GAPS)})
        return
    con = _console()
    for f in files:
        con.print(f"wrote {_esc(f['file'])}: {f['statements']} statements, {f['chars']} chars")
    con.print("[bold]not expressible in IAM[/] (see the README):", markup=True)
    for gap in GAPS:
        con.print(f"- {_esc(gap)}")


# --- regionkit config ---------------------------------------------------------------------

config_app = typer.Typer(help="The effective settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print every setting, its value and where it came from (secrets only as set/unset)."""
    from residency.settings import explain_settings

    given = {"policy": _state.policy_path, "log_format": _state.log_format}
    rows = explain_settings(_settings(), **given)
    if as_json:
        _print_json([r.__dict__ for r in rows])
        return
    from rich.table import Table

    t = Table(title="regionkit settings", title_justify="left")
    for col in ("setting", "value", "source", "note"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r.name, _esc(r.value), _esc(r.source), _esc(r.note))
    _console().print(t)


# --- regionkit route ----------------------------------------------------------------------


def _quick_settings() -> Settings:
    """Settings for interactive commands: fail fast on a region that does not answer."""
    return _settings(connect_timeout=0.5, read_timeout=1.0, max_attempts=1, failover_attempts=2)


def _no_cluster_reason(settings: Settings) -> str | None:
    """Why nothing can be reached (local mode without a running cluster), or None."""
    if settings.mode == "local" and not settings.endpoints:
        return (
            f"no local cluster is running (no endpoints in the settings or in the state file "
            f"{settings.state_file}); start one with `regionkit local up`, or set "
            "REGIONKIT_STATE_FILE / REGIONKIT_ENDPOINTS"
        )
    return None


def _backend_hint(settings: Settings) -> str:
    if settings.mode == "local":
        return (
            "; is the local cluster running? (`regionkit local status`; state file "
            f"{settings.state_file})"
        )
    return "; check credentials and network access to AWS"


def _reach_failed(settings: Settings, what: str, exc: BaseException) -> NoReturn:
    """Exit 1 (main prints "failed: ..."): the request was fine, the backend did not answer."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    raise OperationError(
        message=f"{what}: {type(exc).__name__}: {detail}{_backend_hint(settings)}"
    ) from None


def _probe_regions(router: Any, regions: list[str]) -> dict[str, str]:
    """Ask each region a cheap question, in parallel; mark the silent ones down for the router."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(region: str) -> str:
        try:
            router.clients.dynamodb(region).list_tables(Limit=1)
        except Exception as exc:  # any failure to answer is the answer
            router.health.mark_down(region, f"did not answer a probe: {type(exc).__name__}")
            return f"unreachable ({type(exc).__name__})"
        router.health.mark_up(region, "answered a probe")
        return "up"

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(regions)))) as pool:
        return dict(zip(regions, pool.map(ask, regions), strict=True))


@app.command("route")
def route_cmd(
    user_id: Annotated[str, typer.Argument(help="A user ID minted by the router.")],
    data_class: Annotated[
        str | None,
        typer.Option("--data-class", "-d", help="Default: the policy's first pinned class."),
    ] = None,
    from_region: Annotated[
        str | None,
        typer.Option(
            "--from-region",
            help="Where the request starts (global data goes to its nearest replica; "
            "default REGIONKIT_REGION, else the user's home).",
        ),
    ] = None,
    op: Annotated[str, typer.Option("--op", help="read or write.")] = "read",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Where a request for a user's data goes now, and why, with the failover chain.

    The decision needs no cluster: when the directory cannot be reached, the home
    region comes from the hint inside the user ID (and the output says so).
    """
    from regions.directory import DirectoryEntry
    from regions.ids import parse_user_id
    from regions.router import RegionRouter
    from residency.errors import RegionUnavailable
    from residency.policy import PinnedDataClass

    if op not in {"read", "write"}:
        _fail(f"--op must be 'read' or 'write', not {op!r}")
    uid = parse_user_id(user_id)  # MalformedId: exit 2, naming the expected format
    settings = _quick_settings()
    policy = _policy(settings.policy)
    _configure_logging(policy)
    if from_region is not None:
        policy.check_region(from_region)
    if data_class is None:
        pinned = [n for n, d in policy.data_classes.items() if isinstance(d, PinnedDataClass)]
        data_class = pinned[0] if pinned else policy.system.directory
    dc = policy.data_class(data_class)
    policy.check_region(uid.home_hint)
    router = RegionRouter(policy, region=from_region or settings.region, settings=settings)
    no_cluster = _no_cluster_reason(settings)
    unreachable = no_cluster
    entry = None
    if unreachable is None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            entry = router.home_of(user_id)
        except (RegionkitError, BotoCoreError, ClientError) as exc:
            unreachable = f"the directory cannot be reached ({type(exc).__name__}: {exc})"
    if entry is None:
        jid = policy.jurisdiction_of_region(uid.home_hint)
        entry = DirectoryEntry(user_id, uid.home_hint, jid, source="id-hint")
        router.directory.put(entry)
        directory_note = f"{unreachable}; using the home region in the user ID"
    elif entry.source == "id-hint" and router.health.unavailable:
        directory_note = (
            f"the directory could not be read ({', '.join(sorted(router.health.unavailable))} "
            "did not answer); using the home region in the user ID"
        )
    elif entry.source == "id-hint":
        directory_note = (
            "the directory has no entry for this user here (not assigned, or not replicated "
            "yet); using the home region in the user ID"
        )
    else:
        directory_note = "from the directory"
    pinned_class = isinstance(dc, PinnedDataClass)
    origin = entry.home_region if pinned_class else (router.region or entry.home_region)
    chain = router.chain(data_class, origin)
    health = (
        _probe_regions(router, [r.region for r in chain])
        if no_cluster is None
        else dict.fromkeys((r.region for r in chain), "not probed (no cluster)")
    )
    decision, refused = None, None
    try:
        decision = router.route(data_class, user_id, op)  # type: ignore[arg-type]
    except RegionUnavailable as exc:
        refused = exc
    jurisdiction = policy.jurisdictions[entry.jurisdiction]
    out: dict[str, Any] = {
        "user_id": user_id,
        "data_class": data_class,
        "kind": dc.kind,
        "op": op,
        "from_region": router.region,
        "home": {
            "region": entry.home_region,
            "jurisdiction": entry.jurisdiction,
            "status": entry.status,
            "source": entry.source,
        },
        "directory": {"reachable": unreachable is None, "note": directory_note},
        "decision": None
        if decision is None
        else {
            "region": decision.region,
            "table": decision.table_name,
            "failover": decision.failover,
            "reason": decision.reason,
        },
        "error": None if refused is None else str(refused),
        "chain": [
            {
                "region": r.region,
                "reason": r.reason,
                "health": health[r.region],
                "available": (r.region not in router.health.unavailable)
                if no_cluster is None
                else None,
            }
            for r in chain
        ],
    }
    if pinned_class:
        out["jurisdiction"] = {
            "id": entry.jurisdiction,
            "law": jurisdiction.law,
            "regions": list(jurisdiction.regions),
        }
    if as_json:
        _print_json(out)
    else:
        from rich.table import Table

        con = _console()
        con.print(f"[bold]{_esc(user_id)}[/] → {data_class} ({dc.kind}), {op}")
        status = "" if entry.status == "active" else f", {entry.status} to {entry.moving_to}"
        con.print(
            f"home: [bold]{entry.home_region}[/] (jurisdiction {entry.jurisdiction}{status}): "
            f"{_esc(directory_note)}"
        )
        if decision is not None:
            how = "[yellow]failover[/]" if decision.failover else "direct"
            con.print(
                f"route: [bold green]{decision.region}[/] table {_esc(decision.table_name)}, "
                f"{how}: {_esc(decision.reason)}"
            )
        if pinned_class:
            con.print(
                f"jurisdiction {entry.jurisdiction} ({_esc(jurisdiction.law)}): {data_class} "
                f"never leaves {', '.join(jurisdiction.regions)}"
            )
        t = Table(title="chain", title_justify="left")
        t.add_column("#", justify="right")
        t.add_column("region")
        t.add_column("health")
        t.add_column("why")
        for i, step in enumerate(out["chain"], 1):
            mark = "[green]" if step["health"] == "up" else "[yellow]"
            chosen = " ←" if decision is not None and step["region"] == decision.region else ""
            t.add_row(
                str(i),
                f"{step['region']}{chosen}",
                f"{mark}{_esc(step['health'])}[/]",
                _esc(step["reason"]),
            )
        con.print(t)
    if refused is not None:
        raise refused  # main(): "failed: ...", exit 1


# --- regionkit users ------------------------------------------------------------------------

users_app = typer.Typer(
    help="Users: seed fake users on the local cluster, move a user's home.", no_args_is_help=True
)
app.add_typer(users_app, name="users")


def _seed_countries(policy: Policy) -> list[str]:
    """One round of countries: each jurisdiction's next country, then a default-jurisdiction
    one (a country no jurisdiction lists, NG if possible)."""
    from iso3166 import countries_by_alpha2

    listed = {c for j in policy.jurisdictions.values() for c in j.countries}
    unlisted = "NG"
    if unlisted in listed:
        unlisted = next(c for c in countries_by_alpha2 if c not in listed)
    lists = [list(j.countries) for j in policy.jurisdictions.values() if j.countries]
    longest = max((len(c) for c in lists), default=1)
    out: list[str] = []
    for i in range(longest):
        out += [c[i % len(c)] for c in lists]
        out.append(unlisted)
    return out


def _fake_value(attribute: str, i: int) -> str:
    """A PII-looking but fake value (the CLI never prints it)."""
    a = attribute.lower()
    if "mail" in a:
        return f"seed.user{i:05d}@example.invalid"
    if "phone" in a:
        return f"+1 555 01{i % 100:02d} {i % 10_000:04d}"
    if "birth" in a or "date" in a:
        return f"19{70 + i % 30}-{1 + i % 12:02d}-{1 + i % 28:02d}"
    if "address" in a:
        return f"{i} Example Street, Springfield"
    if "name" in a:
        return f"Seed User {i}"
    return f"fake {attribute} {i}"


@users_app.command("seed")
def users_seed(
    count: Annotated[
        int,
        typer.Option("--count", "-n", min=1, max=100_000, help="Users to create (1 to 100,000)."),
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create fake users in every jurisdiction on the running local cluster.

    Countries cycle through every jurisdiction's countries plus one that only the
    default jurisdiction covers (NG). Each user gets a directory entry and a
    profile in its home region, with fake PII-like attributes that are never printed.
    """
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from botocore.exceptions import BotoCoreError, ClientError

    from regions.router import RegionRouter
    from residency.errors import BackendError, RegionUnavailable
    from residency.policy import PinnedDataClass

    settings = _quick_settings()
    if settings.mode != "local":
        _fail(
            "`users seed` writes fake users: it runs against the local cluster only "
            "(REGIONKIT_MODE=local)"
        )
    reason = _no_cluster_reason(settings)
    if reason:
        raise OperationError(message=reason)
    policy = _policy(settings.policy)
    _configure_logging(policy)
    router = RegionRouter(policy, region=settings.region, settings=settings)
    pinned = {n: d for n, d in policy.data_classes.items() if isinstance(d, PinnedDataClass)}
    rounds = _seed_countries(policy)
    countries = [rounds[i % len(rounds)] for i in range(count)]

    def create(i: int) -> dict[str, str]:
        country = countries[i]
        uid = router.new_user_id(country=country)
        entry = router.assign_home(uid, country=country)
        for name, d in pinned.items():
            fake = {a: _fake_value(a, i) for a in d.pii_attributes}
            router.put(name, {d.partition_key: uid, **fake})
        return {
            "user_id": uid,
            "country": country,
            "jurisdiction": entry.jurisdiction,
            "home_region": entry.home_region,
        }

    try:
        first = create(0)  # fail fast, and clearly, when the cluster does not answer
        with ThreadPoolExecutor(max_workers=8) as pool:
            users = [first, *pool.map(create, range(1, count))]
    except (BackendError, RegionUnavailable, BotoCoreError, ClientError) as exc:
        _reach_failed(settings, "seeding users failed", exc)
    by_j = Counter(u["jurisdiction"] for u in users)
    by_home = Counter((u["jurisdiction"], u["home_region"]) for u in users)
    attrs = sorted({a for d in pinned.values() for a in d.pii_attributes})
    if as_json:
        _print_json(
            {
                "created": len(users),
                "by_jurisdiction": dict(sorted(by_j.items())),
                "by_home_region": {
                    r: n for (_, r), n in sorted(by_home.items(), key=lambda kv: kv[0])
                },
                "fake_pii_attributes": attrs,
                "users": users,
            }
        )
        return
    from rich.table import Table

    t = Table(title=f"{len(users)} users created", title_justify="left")
    for col in ("jurisdiction", "home region", "countries", "users"):
        t.add_column(col, justify="right" if col == "users" else "left")
    samples = []
    for (jid, home), n in sorted(by_home.items()):
        mine = [u for u in users if (u["jurisdiction"], u["home_region"]) == (jid, home)]
        t.add_row(jid, home, ", ".join(sorted({u["country"] for u in mine})), str(n))
        samples.append(f"  {jid} {home}: {mine[0]['user_id']}")
    con = _console()
    con.print(t)
    con.print("for example:\n" + "\n".join(samples))
    con.print(
        f"profiles hold fake values for {', '.join(attrs) or 'no attribute'} (never printed); "
        "try `regionkit route <user id>`"
    )


@users_app.command("move")
def users_move(
    user_id: Annotated[
        str | None, typer.Argument(help="The user ID (omit with --resume: every pending move).")
    ] = None,
    country: Annotated[
        str | None, typer.Option("--country", "-c", help="The user's new country (ISO 3166).")
    ] = None,
    region: Annotated[
        str | None, typer.Option("--region", "-r", help="The new home region.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish recorded moves (directory 'moving').")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Move a user's home: copy, fence the old jurisdiction, switch the directory, verify.

    A move that could not finish (a region unreachable, a crash) is 'pending' and keeps
    its record in the directory; `regionkit users move --resume` finishes every one.
    Exit code 1 while any move is still pending.
    """
    from dataclasses import asdict

    from botocore.exceptions import BotoCoreError, ClientError

    from regions.ids import parse_user_id
    from regions.router import RegionRouter
    from residency.errors import BackendError, RegionUnavailable

    if not resume and (user_id is None or (country is None) == (region is None)):
        _fail("give a user ID and the new home as --country XX or --region R (exactly one)")
    if user_id is not None:
        parse_user_id(user_id)
    settings = _quick_settings()
    reason = _no_cluster_reason(settings)
    if reason:
        raise OperationError(message=reason)
    policy = _policy(settings.policy)
    _configure_logging(policy)
    if region is not None:
        policy.check_region(region)
    router = RegionRouter(policy, region=settings.region, settings=settings)
    try:
        if user_id is not None:
            results = [router.move_user(user_id, country=country, region=region)]
        else:
            results = [router.move_user(e.user_id) for e in router.pending_moves()]
    except (BackendError, RegionUnavailable, BotoCoreError, ClientError) as exc:
        _reach_failed(
            settings,
            "the move did not complete (its record stays in the directory; "
            "`regionkit users move --resume` finishes it)",
            exc,
        )
    pending = [r for r in results if r.status != "done"]
    if as_json:
        _print_json([asdict(r) for r in results] if user_id is None else asdict(results[0]))
    else:
        _render_moves(results)
    if pending:
        raise typer.Exit(1)


def _render_moves(results: list[Any]) -> None:
    con = _console()
    if not results:
        con.print("no pending move")
    for result in results:
        con.print(
            f"[bold]{_esc(result.user_id)}[/]: {result.from_region} "
            f"({result.from_jurisdiction}) → {result.to_region} ({result.to_jurisdiction})"
        )
        for i, step in enumerate(result.steps, 1):
            con.print(f"  {i}. {_esc(step)}")
        if result.status == "done":
            con.print("[green]ok[/] done")
        else:
            con.print(
                f"[yellow]pending[/]: {_esc(result.reason)}; run `regionkit users move "
                "--resume` to finish it"
            )


# --- regionkit subject ----------------------------------------------------------------------

subject_app = typer.Typer(
    help="Data-subject requests: locate, export and erase one user everywhere.",
    no_args_is_help=True,
)
app.add_typer(subject_app, name="subject")


def _subject_router() -> tuple[Settings, Any]:
    from regions.router import RegionRouter

    settings = _quick_settings()
    reason = _no_cluster_reason(settings)
    if reason:
        raise OperationError(message=reason)
    policy = _policy(settings.policy)
    _configure_logging(policy)
    return settings, RegionRouter(policy, region=settings.region, settings=settings)


def _subject_call(settings: Settings, what: str, fn: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    from residency.errors import BackendError, RegionUnavailable

    try:
        return fn()
    except (BackendError, RegionUnavailable, BotoCoreError, ClientError) as exc:
        _reach_failed(settings, what, exc)


@subject_app.command("locate")
def subject_locate(
    user_id: Annotated[str, typer.Argument(help="The user ID.")],
    scan: Annotated[
        bool, typer.Option("--scan", help="Scan every replica instead of the by-subject index.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every item of the user in every region and data class: keys by pseudonym, no values."""
    from regions.ids import parse_user_id

    parse_user_id(user_id)
    settings, router = _subject_router()
    loc = _subject_call(
        settings, "locate failed", lambda: router.locate_subject(user_id, scan=scan)
    )
    if as_json:
        _print_json(
            {
                "subject": loc.user,
                "method": loc.method,
                "items": [f.public() for f in loc.items],
                "unreadable": loc.unreadable,
                "requests": loc.requests,
            }
        )
        return
    con = _console()
    if scan:
        con.print("[yellow]scanning every replica[/] (--scan): slow on large tables")
    con.print(f"subject [bold]{loc.user}[/] ({len(loc.live())} live items, {loc.method})")
    for f in sorted(loc.items, key=lambda f: (f.data_class, f.region, f.key)):
        con.print(f"  {f.data_class:<10} {f.region:<15} {f.table:<20} {f.key} {f.state}")
    for region in loc.unreadable:
        con.print(f"  [red]{region}: unreadable[/] (what it holds is unknown)")


@subject_app.command("export")
def subject_export(
    user_id: Annotated[str, typer.Argument(help="The user ID.")],
    out: Annotated[Path, typer.Option("--out", help="The JSON file to write.")],
    transfer_basis: Annotated[
        str | None,
        typer.Option(
            "--transfer-basis",
            help="The legal basis for writing the export outside the subject's jurisdiction.",
        ),
    ] = None,
) -> None:
    """Write the user's own data (GDPR Art. 15/20) as JSON, read inside their jurisdiction.

    The file is itself a copy of personal data. It is written only where this process runs
    (REGIONKIT_REGION) inside the subject's jurisdiction, unless --transfer-basis names why
    the transfer is lawful; the basis is recorded in the file.
    """
    from datetime import UTC, datetime

    from regions.ids import parse_user_id

    parse_user_id(user_id)
    _writable_file(out, "--out")
    settings, router = _subject_router()
    entry = _subject_call(settings, "export failed", lambda: router.home_of(user_id))
    here = settings.region
    inside = here is not None and router.policy.jurisdiction_of_region(here) == entry.jurisdiction
    if not inside and not transfer_basis:
        _fail(
            f"the subject's data is in {entry.jurisdiction}, and this process runs in "
            f"{here or 'no declared region (REGIONKIT_REGION)'}: writing the export here is a "
            "transfer; run it from inside the jurisdiction, or name the basis with "
            "--transfer-basis"
        )
    data = _subject_call(settings, "export failed", lambda: router.export_subject(user_id))
    data["exported_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    data["written_in"] = here
    data["transfer_basis"] = transfer_basis
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
    counts = ", ".join(f"{k}: {len(v)}" for k, v in data["data"].items())
    _console().print(f"[green]ok[/] wrote {_esc(out)} (mode 0600; {counts})")


@subject_app.command("erase")
def subject_erase(
    user_id: Annotated[
        str | None, typer.Argument(help="The user ID (omit with --resume: every pending one).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish recorded erasures (directory 'erasing').")
    ] = False,
    receipts: Annotated[
        Path, typer.Option("--receipt-dir", help="Where the signed receipts go.")
    ] = Path("regionkit-receipts"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Erase the user everywhere, verify every replica, and write a signed receipt.

    Exit 1 while an erasure is pending (a region unreachable): its record stays in the
    directory, and `regionkit subject erase --resume` finishes it.
    """
    from regions.erasure import receipt_markdown
    from regions.ids import parse_user_id
    from residency.audit.model import report_digest
    from residency.signing import sign

    if user_id is None and not resume:
        _fail("give a user ID, or --resume to finish every pending erasure")
    if user_id is not None:
        parse_user_id(user_id)
    _writable_dir(receipts, "--receipt-dir")
    settings, router = _subject_router()
    signer = _audit_signer(settings, router.policy)
    ids = [user_id] if user_id else [e.user_id for e in router.pending_erasures()]
    results = [
        _subject_call(settings, "erase failed", lambda u=u: router.erase_subject(u)) for u in ids
    ]
    receipts.mkdir(parents=True, exist_ok=True)
    written = []
    for result in results:
        body = result.receipt()
        sig = sign(body, signer).model_dump()
        signed = {**body, "report_sha256": report_digest(body), "signature": sig}
        stem = receipts / f"erasure-{result.user}-{result.finished_at.replace(':', '')}"
        stem.with_suffix(".json").write_text(json.dumps(signed, indent=2), encoding="utf-8")
        md = receipt_markdown(body, {**sig, "digest": signed["report_sha256"]})
        md += f"\nSigned JSON: {stem.with_suffix('.json').name}\n"
        stem.with_suffix(".md").write_text(md, encoding="utf-8")
        written.append(
            {
                "subject": result.user,
                "status": result.status,
                "reason": result.reason,
                "receipt": str(stem.with_suffix(".json")),
            }
        )
    if as_json:
        _print_json(written)
    else:
        con = _console()
        if not written:
            con.print("no pending erasure")
        for w in written:
            mark = (
                "[green]done[/]"
                if w["status"] == "done"
                else f"[yellow]pending[/] ({_esc(w['reason'])})"
            )
            con.print(f"{w['subject']}: {mark}; receipt {_esc(w['receipt'])}")
    if any(r.status != "done" for r in results):
        raise typer.Exit(EXIT_CHECK_FAILED)


# --- regionkit conflicts ------------------------------------------------------------------

conflicts_app = typer.Typer(
    help="The conflict log: concurrent cross-region writes found by the detector.",
    no_args_is_help=True,
)
app.add_typer(conflicts_app, name="conflicts")

_CONFLICT_KINDS = ("concurrent", "inversion", "lost_write")


def _read_conflict_log() -> tuple[str, list[Any]]:
    """Every conflict record, from the nearest region that answers (settings.region first)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from regions.conflicts import ConflictLog
    from regions.pool import ClientPool

    settings = _quick_settings()
    reason = _no_cluster_reason(settings)
    if reason:
        raise OperationError(message=reason)
    policy = _policy(settings.policy)
    _configure_logging(policy)
    start = policy.check_region(settings.region) if settings.region else policy.regions[0]
    order = [start, *(r for r in policy.nearest_first(start, list(policy.regions)) if r != start)]
    log = ConflictLog(
        policy, ClientPool(settings, retries="botocore"), table_prefix=settings.table_prefix
    )
    errors: list[str] = []
    for region in order:
        try:
            return region, log.scan(region)
        except (RegionkitError, BotoCoreError, ClientError) as exc:
            errors.append(f"{region}: {type(exc).__name__}")
    raise OperationError(
        message=f"cannot read the conflict log: no region answered ({'; '.join(errors)})"
        f"{_backend_hint(settings)}"
    )


def _parse_since(text: str) -> Any:
    import re
    from datetime import UTC, datetime, timedelta

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m[2]]
        return datetime.now(UTC) - timedelta(seconds=float(m[1]) * unit)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        _fail(
            f"--since {text!r} is neither an ISO 8601 time (2026-01-01T12:00:00Z) "
            "nor a duration (90s, 15m, 1h, 2d, 1w)"
        )
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@conflicts_app.command("list")
def conflicts_list(
    since: Annotated[
        str | None,
        typer.Option("--since", help="ISO 8601 time, or a duration back from now: 15m, 1h, 2d."),
    ] = None,
    data_class: Annotated[
        str | None, typer.Option("--data-class", "-d", help="Only this data class.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", "-k", help="Only this kind: concurrent, inversion, lost_write."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List logged conflicts, oldest first (keys are opaque IDs; no item values are shown).

    ``--json`` adds the versions (HLC stamps) of winner and loser and where each was detected.
    """
    from datetime import UTC

    if kind is not None and kind not in _CONFLICT_KINDS:
        _fail(f"--kind must be one of {', '.join(_CONFLICT_KINDS)}, not {kind!r}")
    after = _parse_since(since) if since is not None else None
    if data_class is not None:
        _policy().data_class(data_class)  # UnknownDataClass: exit 2, naming the known ones
    region, records = _read_conflict_log()
    shown = [
        r
        for r in records
        if (after is None or r.occurred_at >= after)
        and (data_class is None or r.data_class == data_class)
        and (kind is None or r.kind == kind)
    ]
    if as_json:
        _print_json(
            {
                "region": region,
                "total": len(records),
                "shown": len(shown),
                "conflicts": [r.model_dump(mode="json") for r in shown],
            }
        )
        return
    from rich.table import Table

    t = Table(title=f"conflicts (read from {region})", title_justify="left")
    for col in ("occurred (UTC)", "kind", "data class", "key", "winner", "loser", "resolution"):
        t.add_column(col, overflow="fold", no_wrap=col not in {"key", "data class"})
    for r in shown:
        t.add_row(
            r.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.kind,
            _esc(r.data_class),
            _esc(r.key),
            r.winner_region,
            r.loser_region,
            r.resolution + (" (repaired)" if r.repaired else ""),
        )
    con = _console()
    con.print(t)
    con.print(f"{len(shown)} of {len(records)} logged conflicts")


@conflicts_app.command("stats")
def conflicts_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Conflict counts by kind, data class, resolution and region pair."""
    from collections import Counter

    region, records = _read_conflict_log()
    stats: dict[str, Any] = {
        "region": region,
        "total": len(records),
        "by_kind": dict(Counter(r.kind for r in records).most_common()),
        "by_data_class": dict(Counter(r.data_class for r in records).most_common()),
        "by_resolution": dict(Counter(r.resolution for r in records).most_common()),
        "by_regions": dict(
            Counter(f"{r.winner_region} > {r.loser_region}" for r in records).most_common()
        ),
        "repaired": sum(1 for r in records if r.repaired),
        "first": records[0].occurred_at.isoformat() if records else None,
        "last": records[-1].occurred_at.isoformat() if records else None,
    }
    if as_json:
        _print_json(stats)
        return
    from rich.table import Table

    con = _console()
    con.print(f"{stats['total']} logged conflicts (read from {region})")
    if records:
        con.print(f"from {stats['first']} to {stats['last']}; {stats['repaired']} repaired")
    for title, key in (
        ("by kind", "by_kind"),
        ("by data class", "by_data_class"),
        ("by resolution", "by_resolution"),
        ("winner > loser region", "by_regions"),
    ):
        if not stats[key]:
            continue
        t = Table(title=title, title_justify="left")
        t.add_column(title.removeprefix("by "))
        t.add_column("conflicts", justify="right")
        for name, n in stats[key].items():
            t.add_row(_esc(name), str(n))
        con.print(t)


# --- regionkit audit ----------------------------------------------------------------------

audit_app = typer.Typer(
    help="Compliance audit: check the deployed tables and the stored data against the policy.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")

_AUDIT_SEVERITIES = ("critical", "high", "medium", "low", "info")


@audit_app.command("checks")
def audit_checks(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    source: Annotated[
        str, typer.Option("--source", help="IAM policy for 'scan' or for 'export' runs.")
    ] = "scan",
    export_bucket: Annotated[
        str | None,
        typer.Option(
            "--export-bucket",
            help="For --source export: the bucket the S3 permissions are scoped to (may "
            "contain {region}).",
        ),
    ] = None,
) -> None:
    """List the audit checks and print the least-privilege IAM policy for running them."""
    from residency.audit import all_checks, iam_policy

    if source not in {"scan", "export"}:
        _fail(f"--source must be 'scan' or 'export', not {source!r}")
    checks = all_checks()
    if source == "export" and not export_bucket:
        _fail("--source export needs --export-bucket: the S3 permissions are scoped to it")
    partition = "aws"
    try:  # scope the table actions to the policy's tables when the policy loads
        settings = _settings()
        partition = settings.partition
        policy: Policy | None = _policy(settings.policy)
        prefix = settings.table_prefix
        signing_key = settings.signing_kms_key if settings.mode == "aws" else None
    except ConfigError:
        policy, prefix, signing_key = None, "", None
    doc = iam_policy(
        checks,
        export=source == "export",
        policy=policy,
        table_prefix=prefix,
        signing_key=signing_key,
        partition=partition,
        export_bucket=export_bucket,
    )
    if as_json:
        _print_json(
            {
                "checks": [
                    {
                        "id": c.id,
                        "title": c.meta.title,
                        "severity": c.meta.severity,
                        "rationale": c.meta.rationale,
                        "remediation": c.meta.remediation,
                        "permissions": list(c.meta.permissions),
                        "export_permissions": list(c.meta.export_permissions),
                        "summary": c.meta.summary,
                        "example": c.meta.example,
                    }
                    for c in checks
                ],
                "iam_policy": doc,
            }
        )
        return
    from rich import box
    from rich.table import Table

    con = _console()
    t = Table(title="audit checks", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("check", "severity", "title", "permissions"):
        t.add_column(col, overflow="fold")
    for c in checks:
        t.add_row(
            c.id, c.meta.severity, _esc(c.meta.title), ", ".join(c.meta.permissions) or "(none)"
        )
    con.print(t)
    scope = f"policy {policy.name!r}" if policy else "all tables (no policy loaded)"
    con.print(
        f"least-privilege IAM policy for `regionkit audit run --source {source}` ({_esc(scope)}):"
    )
    typer.echo(json.dumps(doc, indent=2))


def _audit_progress(console: Console) -> tuple[Any, Any]:
    """A rich progress bar over the data scans, and the callback that feeds it."""
    import threading

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from residency.audit import ProgressEvent

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, Any] = {}
    lock = threading.Lock()

    def on_event(event: ProgressEvent) -> None:
        if event.phase not in {"scan", "export"}:
            return
        with lock:
            task = tasks.get(event.key)
            if task is None:
                task = tasks[event.key] = bar.add_task(event.key, total=event.total or None)
            if event.advance:
                bar.advance(task, event.advance)
            if event.done:
                done = bar.tasks[task].completed
                bar.update(task, total=done, completed=done)

    return bar, on_event


@audit_app.command("run")
def audit_run(
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="terminal, json, markdown, html, junit or ocsf."),
    ] = "terminal",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the report to this file.")
    ] = None,
    fail_on: Annotated[
        str,
        typer.Option(
            "--fail-on",
            help="Exit 1 when a FAIL or ERROR finding has this severity or more: "
            "critical, high, medium, low or info.",
        ),
    ] = "high",
    sample: Annotated[
        int | None,
        typer.Option("--sample", help="Read at most N items per table.", min=1, max=10**9),
    ] = None,
    regions: Annotated[
        str | None, typer.Option("--regions", help="Comma-separated policy regions (default: all).")
    ] = None,
    extra_regions: Annotated[
        str | None,
        typer.Option(
            "--extra-regions",
            help="More regions to search for misplaced tables and copies, comma-separated; "
            "'enabled' for every region enabled in the account, 'all' for every commercial "
            "region.",
        ),
    ] = None,
    source: Annotated[
        str, typer.Option("--source", help="'scan' the live tables or read an S3 'export'.")
    ] = "scan",
    export_bucket: Annotated[
        str | None,
        typer.Option(
            "--export-bucket",
            help="S3 bucket for --source export; may contain {region}. Pinned tables "
            "only export to a bucket inside their jurisdiction.",
        ),
    ] = None,
    export_prefix: Annotated[
        str, typer.Option("--export-prefix", help="Key prefix of the exports.")
    ] = "regionkit-audit",
    export_arn: Annotated[
        list[str] | None,
        typer.Option("--export-arn", help="Read this existing export (repeat for each table)."),
    ] = None,
    checks: Annotated[
        str | None,
        typer.Option(
            "--checks",
            help="Comma-separated check ids or families (policy, infra, "
            "data, operations); default: all. See `regionkit audit checks`.",
        ),
    ] = None,
    account_id: Annotated[
        str | None,
        typer.Option("--account-id", help="AWS account for ARNs (default: STS GetCallerIdentity)."),
    ] = None,
    window_days: Annotated[
        int,
        typer.Option("--window-days", help="Conflict window in days (1 to 3650).", min=1, max=3650),
    ] = 7,
    drill_history: Annotated[
        Path | None,
        typer.Option(
            "--drill-history",
            help="Drill journals (default: REGIONKIT_DRILL_HISTORY or .regionkit/drills).",
        ),
    ] = None,
    show_passed: Annotated[
        bool, typer.Option("--show-passed", help="List PASS findings too (terminal, markdown).")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
    ] = True,
    deep: Annotated[
        bool, typer.Option("--deep", help="Check every item's values for PII, not a sample.")
    ] = False,
    value_every: Annotated[
        int,
        typer.Option(
            "--value-every", help="Check the values of 1 item in N for PII.", min=1, max=10**9
        ),
    ] = 20,
    evidence_dir: Annotated[
        Path,
        typer.Option(
            "--evidence-dir", help="Where the signed JSON goes when the report is not a file."
        ),
    ] = Path("regionkit-report"),
) -> None:
    """Audit the deployment and the data against the policy; write a signed report.

    The signed JSON report is always written: it is --out with --format json, else a
    .json file beside --out, else audit-<run>.json in --evidence-dir.
    Exit 0 when no FAIL or ERROR finding reaches --fail-on, 1 when one does, 2 on bad input.
    """
    from datetime import timedelta

    from residency.audit import FORMATS, render, run_audit, select_checks
    from residency.audit.render.terminal import render_text, renderable

    if fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fail_on not in _AUDIT_SEVERITIES:
        _fail(f"--fail-on must be one of {', '.join(_AUDIT_SEVERITIES)}, not {fail_on!r}")
    if out is not None:
        _writable_file(out, "--out")
    _writable_dir(evidence_dir, "--evidence-dir")
    if source not in {"scan", "export"}:
        _fail(f"--source must be 'scan' or 'export', not {source!r}")
    check_ids = _split_regions(checks) if checks else None
    selected = select_checks(check_ids)  # an unknown id is a ConfigError: exit 2
    settings = _settings()
    # Scans read 1 MB pages: give them more time than the router's interactive default.
    settings = _settings(read_timeout=max(settings.read_timeout, 10.0))
    policy = _policy(settings.policy)
    _configure_logging(policy)
    needs_aws = any(c.meta.permissions for c in selected)
    reason = _no_cluster_reason(settings) if needs_aws else None
    if reason:
        raise OperationError(message=reason)
    from regions.pool import ClientPool

    err = _console(stderr=True)
    bar, on_event = _audit_progress(err) if progress and err.is_terminal else (None, None)
    if bar is not None:
        bar.start()
    try:
        report = run_audit(
            policy,
            ClientPool(settings, retries="botocore"),  # scans retry throttling in botocore
            policy_path=settings.policy,
            merge_modules=settings.merge_modules,
            regions=_split_regions(regions) if regions else None,
            extra_regions=_split_regions(extra_regions) if extra_regions else None,
            checks=check_ids,
            source="export" if source == "export" else "scan",
            sample=sample,
            progress=on_event,
            drill_history=drill_history or settings.drill_history,
            table_prefix=settings.table_prefix,
            account_id=account_id,
            conflict_window=timedelta(days=window_days),
            export_bucket=export_bucket,
            export_prefix=export_prefix,
            export_arns=export_arn or (),
            deep=deep,
            value_every=value_every,
            pseudonymizer=settings.pseudonymizer(),
            signer=_audit_signer(settings, policy),
        )
    finally:
        if bar is not None:
            bar.stop()
    failing = report.failing(fail_on)
    signed = _signed_json_path(report, fmt, out, evidence_dir)
    signed.parent.mkdir(parents=True, exist_ok=True)
    signed.write_text(render(report, "json"), encoding="utf-8")
    if out is not None:
        text = (
            render_text(report, show_passed=show_passed, signed_json=signed.name)
            if fmt == "terminal"
            else render(report, fmt, show_passed=show_passed, signed_json=signed.name)
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        if out != signed:
            out.write_text(text, encoding="utf-8")
        s = report.summary["by_status"]
        _console().print(
            f"wrote {fmt} report to {_esc(out)}: {s['FAIL']} FAIL, {s['ERROR']} ERROR, "
            f"{s['PASS']} PASS; {len(failing)} at or above {fail_on}; "
            f"report sha256 {report.report_sha256}"
            + ("" if out == signed else f"; signed JSON {_esc(signed)}")
        )
    else:
        _console(stderr=True).print(f"signed JSON report: {_esc(signed)}")
        if fmt == "terminal":
            _console().print(renderable(report, show_passed=show_passed, signed_json=signed.name))
        else:
            typer.echo(
                render(report, fmt, show_passed=show_passed, signed_json=signed.name), nl=False
            )
    if failing:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _signed_json_path(report: Any, fmt: str, out: Path | None, evidence_dir: Path) -> Path:
    """Where the signed JSON goes: --out itself for json, beside --out, or --evidence-dir."""
    from residency.audit.render import SUFFIXES, signed_json_name

    if out is None:
        return evidence_dir / signed_json_name(report)
    if fmt == "json":
        return out
    name = out.name
    for suffix in sorted(set(SUFFIXES.values()), key=len, reverse=True):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = out.stem
    return out.with_name(name + ".json")


def _audit_signer(settings: Settings, policy: Policy) -> Any:
    """The deployment's signing key: KMS in aws mode (when named), else the local key file."""
    from regions.pool import ClientPool
    from residency.signing import deployment_signer

    if settings.mode == "aws" and settings.region is None:
        settings = _settings(region=policy.regions[0])
    try:
        return deployment_signer(settings, ClientPool(settings).client)
    except Exception as exc:
        from residency.audit.clients import error_reason

        where = settings.signing_kms_key or settings.signing_key_file
        raise OperationError(
            message=f"the signing key {where} cannot be used ({error_reason(exc)}); check "
            "REGIONKIT_SIGNING_KMS_KEY or REGIONKIT_SIGNING_KEY_FILE"
        ) from None


def _trusted_keys(settings: Settings, files: list[Path]) -> list[str]:
    """Public keys `audit verify` trusts: --public-key files, the local key, the KMS key."""
    from regions.pool import ClientPool
    from residency.signing import trusted_keys

    pems: list[str] = []
    for f in files:
        try:
            pems.append(f.read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError):
            _fail(f"--public-key {f} cannot be read as a PEM file")
    return trusted_keys(settings, ClientPool(settings).client, pems)


@audit_app.command("verify")
def audit_verify(
    report_file: Annotated[
        Path, typer.Argument(help="A report: the signed JSON, or any format beside it.")
    ],
    public_key: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="Trust this signer's public key (PEM); repeatable."),
    ] = None,
) -> None:
    """Check a report's signature and name the key. Exit 0 when valid, 1 when not.

    A JSON report is checked itself. Any other format names its signed JSON (kept beside
    it): that file is checked, and this one must carry its digest and signature.
    """
    import re

    from residency.audit import verify_report

    try:
        text = report_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        _fail(f"{report_file} cannot be read as a text file")
    trusted = _trusted_keys(_settings(), public_key or [])
    data: Any = None
    try:
        data = json.loads(text)
    except ValueError:
        pass
    signed_path = report_file
    if not (isinstance(data, dict) and "signature" in data):
        found = re.search(r"audit-[0-9TZ]+-[0-9a-f]+\.json|[\w.-]+\.json", text)
        ref = re.search(r"signed[ _]json\W[^\n]{0,60}?([\w.-]+\.json)", text, re.IGNORECASE)
        name = ref.group(1) if ref else (found.group() if found else None)
        if name is None:
            _fail(f"{report_file} is not a signed JSON report and names none", EXIT_CHECK_FAILED)
        signed_path = report_file.with_name(name)
        try:
            data = json.loads(signed_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            _fail(
                f"{report_file} renders {name}, which is missing or unreadable beside it",
                EXIT_CHECK_FAILED,
            )
        if not isinstance(data, dict):
            _fail(f"{signed_path} is not a JSON report", EXIT_CHECK_FAILED)
        sig = data.get("signature") or {}
        if str(data.get("report_sha256")) not in text or str(sig.get("value")) not in text:
            _fail(
                f"{report_file} does not carry the digest and signature of {signed_path.name}: "
                "it is not a rendering of that signed report",
                EXIT_CHECK_FAILED,
            )
    result = verify_report(data, trusted=trusted)
    con = _console()
    if not result:
        con.print(f"[red]FAILED[/] {_esc(signed_path)}: {_esc(result.reason)}")
        raise typer.Exit(EXIT_CHECK_FAILED)
    con.print(
        f"[green]OK[/] {_esc(signed_path)}: signed by key {_esc(result.key_id)} "
        f"({result.key_fingerprint}, {result.algorithm}); report sha256 "
        f"{data.get('report_sha256')}"
        + ("" if signed_path == report_file else f"; {_esc(report_file)} renders it")
    )


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the public key that signs reports (PEM), for auditors to keep."""
    settings = _settings()
    policy = _policy(settings.policy) if settings.mode == "aws" else None
    if policy is not None:
        signer = _audit_signer(settings, policy)
    else:
        from residency.signing import LocalSigner

        signer = LocalSigner.load_or_create(settings.signing_key_file)
    typer.echo(f"# key {signer.key_id}", err=True)
    typer.echo(signer.public_key_pem(), nl=False)


@audit_app.command("pseudonym")
def audit_pseudonym(
    value: Annotated[str, typer.Argument(help="A key value (an item key or a user ID).")],
    table: Annotated[
        str | None, typer.Option("--table", help="The table (physical name) the item is in.")
    ] = None,
) -> None:
    """The keyed pseudonym reports use for an item (or, without --table, a subject)."""
    pn = _settings().pseudonymizer()
    typer.echo(pn(value, scope=table) if table else pn(value, scope="subject"))


# --- regionkit drill ----------------------------------------------------------------------

drill_app = typer.Typer(
    help="Failover drills: region outage, replication pause, partition, clock skew, failback.",
    no_args_is_help=True,
)
app.add_typer(drill_app, name="drill")

_ScenarioArg = Annotated[str, typer.Argument(help="Scenario name (see `regionkit drill list`).")]
_RegionOpt = Annotated[str, typer.Option("--region", "-r", help="The region the fault hits.")]
_TargetOpt = Annotated[
    str, typer.Option("--target", help="local (default: ephemeral or `local up` cluster) or aws.")
]


def _drill_params(
    name: str, region: str, mode: str | None, ms: int | None, groups: list[str] | None
) -> tuple[Any, Any]:
    from regions.drills import get_scenario

    policy = _policy()
    scenario = get_scenario(name)
    raw: dict[str, Any] = {"region": region}
    if mode is not None:
        raw["mode"] = mode
    if ms is not None:
        raw["ms"] = ms
    if groups:
        raw["groups"] = [_split_regions(g) for g in groups]
    return scenario, scenario.parse(policy, raw)


@drill_app.command("list")
def drill_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
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
        _print_json(rows)
        return
    from rich.table import Table

    t = Table(title="drill scenarios", title_justify="left")
    for col in ("scenario", "what it does", "parameters"):
        t.add_column(col, overflow="fold")  # a long word breaks, never "…"
    for s in SCENARIOS.values():
        t.add_row(s.name, s.description, ", ".join(s.params.model_fields))
    _console().print(t)


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


@drill_app.command("plan")
def drill_plan(
    scenario: _ScenarioArg,
    region: _RegionOpt,
    target: _TargetOpt = "local",
    mode: Annotated[str | None, typer.Option("--mode", help="Outage: stop or refuse.")] = None,
    ms: Annotated[
        int | None,
        typer.Option(
            "--ms",
            help="Clock skew in ms (-3,600,000 to 3,600,000).",
            min=-3_600_000,
            max=3_600_000,
        ),
    ] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="Partition group a,b.")] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            help="Fault duration, s (0.1 to 3600; local default 5; aws: the template's).",
            callback=_finite("--duration", 0.1, 3600),
        ),
    ] = None,
    rate: Annotated[
        float,
        typer.Option(
            "--rate", help="Load, rounds/s per region.", callback=_finite("--rate", 0.1, 1000)
        ),
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The steps a drill will take (only those); for --target aws, the FIS template too."""
    sc, params = _drill_params(scenario, region, mode, ms, group)
    policy = _policy()
    steps = _drill_steps(sc, params, policy, target, duration, rate)
    out: dict[str, Any] = {
        "scenario": sc.name,
        "parameters": params.model_dump(),
        "target": target,
        "steps": steps,
    }
    if target == "aws":
        if sc.fis_action is None:
            _fail(
                f"scenario {sc.name} cannot run on AWS: only replication-pause has an FIS "
                "action (aws:dynamodb:global-table-pause-replication)"
            )
        from infra.fis_template import experiment_template

        seconds = max(1, int(duration or 600))
        out["fis_experiment_template"] = experiment_template(
            policy, params.region, duration=f"PT{seconds}S", table_prefix=_settings().table_prefix
        )
    elif target != "local":
        _fail(f"--target must be 'local' or 'aws', not {target!r}")
    if as_json:
        _print_json(out)
        return
    con = _console()
    con.print(f"[bold]drill plan[/]: {_esc(sc.name)} on {_esc(params.region)} (target {target})")
    for i, step in enumerate(steps, 1):
        con.print(f"  {i}. {_esc(step)}", soft_wrap=False)
    if "fis_experiment_template" in out:
        con.print("\n[bold]AWS FIS experiment template[/] (CreateExperimentTemplate request):")
        typer.echo(json.dumps(out["fis_experiment_template"], indent=2))


@drill_app.command("run")
def drill_run(
    scenario: _ScenarioArg,
    region: _RegionOpt,
    target: _TargetOpt = "local",
    mode: Annotated[str | None, typer.Option("--mode", help="Outage: stop or refuse.")] = None,
    ms: Annotated[
        int | None,
        typer.Option(
            "--ms",
            help="Clock skew in ms (-3,600,000 to 3,600,000).",
            min=-3_600_000,
            max=3_600_000,
        ),
    ] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="Partition group a,b.")] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            help="Load under fault, s (0.1 to 3600; default 5; aws: the template's own).",
            callback=_finite("--duration", 0.1, 3600),
        ),
    ] = None,
    rate: Annotated[
        float,
        typer.Option(
            "--rate",
            help="Load: rounds/s per writer region, from steady state to after heal (0.1 to 1000).",
            callback=_finite("--rate", 0.1, 1000),
        ),
    ] = 10.0,
    lag: Annotated[
        float | None,
        typer.Option(
            "--lag",
            help="local/sim: base replication lag on every link, s (0 to 600).",
            callback=_finite("--lag", 0, 600),
        ),
    ] = None,
    report_dir: Annotated[
        Path, typer.Option("--report-dir", help="Where to write JSON, Markdown and HTML.")
    ] = Path("regionkit-report"),
    fmt: Annotated[
        str,
        typer.Option("--format", help="Also write: junit (one test case per target)."),
    ] = "",
    confirm_account: Annotated[
        str | None, typer.Option("--confirm-account", help="aws: the account ID, to confirm.")
    ] = None,
    create_template: Annotated[
        bool, typer.Option("--create-template", help="aws: create the FIS template if missing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the journal as JSON.")] = False,
) -> None:
    """Run a drill; exit 1 when a target is missed. The journal joins the drill history.

    Ctrl-C or SIGTERM heals the fault first, writes the journal, then exits (130/143).
    """
    from regions.drills import DrillOptions, save_journal
    from regions.drills.report import write_reports

    sc, params = _drill_params(scenario, region, mode, ms, group)
    settings = _settings()
    policy = _policy()
    if target not in {"local", "aws", "sim"}:
        _fail(f"--target must be 'local', 'sim' or 'aws', not {target!r}")
    if fmt not in {"", "junit"}:
        _fail(f"--format must be 'junit', not {fmt!r}")
    _writable_dir(report_dir, "--report-dir")
    _writable_dir(settings.drill_history, "REGIONKIT_DRILL_HISTORY")
    log_file = _drill_log_file(report_dir, policy)
    if target == "local" and not settings.state_file.is_file():
        _require_extra("local")  # an ephemeral cluster of moto servers
    options = DrillOptions(duration=duration if duration is not None else 5.0, rate=rate, lag=lag)
    box: list[Any] = []
    code = EXIT_OK
    with _sigterm_as_exit():
        try:
            if target == "aws":
                journal = _drill_aws(
                    sc,
                    params,
                    policy,
                    settings,
                    options,
                    duration,
                    confirm_account,
                    create_template,
                    box,
                )
            else:
                journal = _drill_local(sc, params, policy, settings, options, box, target)
        except (KeyboardInterrupt, SystemExit) as exc:
            code = 143 if isinstance(exc, SystemExit) else 130
            if not box:
                raise
            journal = box[0].journal
    history = save_journal(journal, settings.drill_history)
    paths = write_reports(journal, report_dir, junit=fmt == "junit")
    if as_json:
        typer.echo(journal.model_dump_json(indent=2))
    else:
        _print_drill(journal)
        con = _console()
        con.print("reports:")
        for p in paths.values():
            con.print(f"  {_esc(p)}")
        con.print(f"history: {_esc(history)}\nlog: {_esc(log_file)}")
    if code:
        _console(stderr=True).print(
            "[bold red]interrupted:[/] "
            + _esc("; ".join(journal.cleanup) or "no fault was in place")
        )
        raise typer.Exit(code)
    raise typer.Exit(EXIT_OK if journal.verdict == "pass" else EXIT_CHECK_FAILED)


class _sigterm_as_exit:
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


def _drill_log_file(report_dir: Path, policy: Policy) -> Path:
    """Send logs to a file in the report directory, so they never cut into progress lines."""
    from residency.logs import configure_logging

    s = _settings()
    path = report_dir / "regionkit.log"
    report_dir.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", encoding="utf-8")
    configure_logging(
        log_format=s.log_format,
        level=s.log_level,
        pii_attributes=policy.pii_attributes(),
        stream=stream,
    )
    return path


def _drill_local(
    sc: Any,
    params: Any,
    policy: Policy,
    settings: Settings,
    options: Any,
    box: list[Any] | None = None,
    target: str = "local",
) -> Any:
    """On the `local up` cluster if one is running, else on an ephemeral cluster.

    ``target="sim"`` runs on the deterministic simulation (virtual time, no servers).
    ``box`` receives the runner, so an interrupted caller can still save its journal.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from regions.drills import DrillRunner

    box = box if box is not None else []
    err = _console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def on_event(name: str, detail: dict[str, Any]) -> None:
            if name == "phase":
                progress.update(task, description=f"drill {sc.name}: {detail['name']}")
            elif name == "progress":
                progress.update(
                    task,
                    description=(
                        f"drill {sc.name}: {detail['phase']} {detail['elapsed']:.1f}/"
                        f"{detail['of']:.0f} s"
                    ),
                )

        def run(backend: Any) -> Any:
            runner = DrillRunner(
                backend, sc, params, options=options, policy_path=settings.policy, on_event=on_event
            )
            box.append(runner)
            return runner.run()

        if target == "sim":
            from regions.drills.backends import SimBackend
            from regions.local.sim import simulation

            with simulation(policy, seed=options.seed or 0) as sim:
                return run(SimBackend(sim))
        if settings.state_file.is_file():
            from regions.drills.backends import RemoteClusterBackend
            from regions.local.control import ControlClient

            progress.update(task, description=f"using the cluster in {settings.state_file}")
            return run(
                RemoteClusterBackend(
                    policy, settings, ControlClient.from_state_file(settings.state_file)
                )
            )
        from regions.drills.backends import LocalClusterBackend
        from regions.local.cluster import LocalCluster

        progress.update(
            task, description=f"starting a local cluster of {len(policy.regions)} regions"
        )
        with LocalCluster(
            policy, table_prefix=settings.table_prefix, policy_file=settings.policy
        ) as cluster:
            return run(LocalClusterBackend(cluster))


def _drill_aws(
    sc: Any,
    params: Any,
    policy: Policy,
    settings: Settings,
    options: Any,
    duration: float | None,
    confirm_account: str | None,
    create_template: bool,
    box: list[Any] | None = None,
) -> Any:
    """The same runner as local drills, the FIS experiment as the fault (see regions.drills.aws).

    The experiment's duration is the template's own: the deployed template (PT10M)
    unless --duration is given, which needs a template of that duration (created
    with --create-template); a --duration the deployed template would not honour
    is refused.
    """
    import dataclasses
    import time as _time

    import boto3

    from infra.fis_template import experiment_template
    from regions.drills import DrillRunner
    from regions.drills.aws import (
        AwsDataPlane,
        FisBackend,
        FisFault,
        find_template,
        require_account,
        template_duration,
    )
    from regions.drills.backends import replication_groups

    if sc.fis_action is None:
        _fail(f"scenario {sc.name} cannot run on AWS: only replication-pause has an FIS action")
    if options.lag is not None:
        _fail("--lag is for local drills: on AWS the replication lag is the real one")
    sts = boto3.client("sts", region_name=params.region)
    account = require_account(sts, confirm_account)
    partition = str(sts.get_caller_identity().get("Arn", "arn:aws:")).split(":")[1] or "aws"
    fis = boto3.client("fis", region_name=params.region)
    template_id = find_template(fis, policy.name, params.region)
    if template_id is not None:
        seconds = template_duration(fis, template_id)
        if duration is not None and int(duration) != seconds:
            _fail(
                f"the deployed FIS template for {params.region} pauses replication for "
                f"{seconds} s, so --duration {duration:g} would not be honoured (fix: omit "
                "--duration, or delete the template and pass --create-template)"
            )
    elif not create_template:
        _fail(
            f"no regionkit FIS template for {params.region} in account {account} (fix: deploy "
            "the CDK app, or pass --create-template)"
        )
    else:
        from infra.fis_template import customer_harm_alarm
        from infra.plan import plan_deployment

        seconds = max(1, int(duration if duration is not None else 600))
        # the stop condition: customer harm, which a replication pause does not cause
        harm = customer_harm_alarm(
            plan_deployment(policy, table_prefix=settings.table_prefix), params.region
        )
        boto3.client("cloudwatch", region_name=params.region).put_metric_alarm(**harm)
        template = experiment_template(
            policy,
            params.region,
            duration=f"PT{seconds}S",
            table_prefix=settings.table_prefix,
            account=account,
            partition=partition,
            stop_on="customer-harm",
        )
        tags = {**template["tags"], "regionkit:policy": policy.name}
        tags["regionkit:region"] = params.region
        created = fis.create_experiment_template(
            **{**template, "tags": tags, "clientToken": str(_time.time_ns())}
        )
        template_id = str(created["experimentTemplate"]["id"])
    tables = [
        (
            params.region,
            f"arn:{partition}:dynamodb:{params.region}:{account}:table/{table}",
        )
        for table, regions in replication_groups(policy, settings.table_prefix)
        if params.region in regions and len(regions) > 1
    ]
    data = AwsDataPlane(policy, settings)
    fault = FisFault(
        fis,
        template_id,
        duration=float(seconds),
        ddb=data.admin,
        tables=tables,
        now=_time.time,
        sleep=_time.sleep,
    )
    runner = DrillRunner(
        FisBackend(data, fault),
        sc,
        params,
        options=dataclasses.replace(options, duration=float(seconds)),
        policy_path=settings.policy,
    )
    if box is not None:
        box.append(runner)
    try:
        return runner.run()
    finally:
        data.close()


def _print_drill(j: Any) -> None:
    """The journal for a terminal: short headers, cells that wrap, fits 80 columns."""
    from rich.table import Table

    from regions.drills.report import rows

    con = _console()
    colour = {"pass": "green", "fail": "red"}.get(j.verdict, "yellow")
    con.print(
        f"[bold]drill {j.drill_id}[/] {_esc(j.scenario)} on {_esc(', '.join(j.regions))}:"
        f" [bold {colour}]{j.verdict.upper()}[/]",
        soft_wrap=False,
    )
    for r in j.reasons:
        con.print(f"  [red]- {_esc(r)}[/]", soft_wrap=False)
    t = Table(title="figures against targets", title_justify="left")
    t.add_column("figure", ratio=2)
    t.add_column("measured", ratio=5)
    t.add_column("target", ratio=1)
    t.add_column("ok", no_wrap=True)
    for a, b, c, ok in rows(j):
        t.add_row(_esc(a), _esc(b), _esc(c), "[green]yes[/]" if ok else "[red]NO[/]")
    con.print(t)
    if j.figures.data_classes:
        d = Table(title="per data class", title_justify="left")
        for col in ("class", "kind", "RTO s", "writes ok", "failed", "failover", "waits by law"):
            d.add_column(col)
        for x in j.figures.data_classes:
            rto = "n/a" if x.rto_seconds is None else f"{x.rto_seconds:.3f}"
            d.add_row(
                _esc(x.data_class),
                x.kind,
                rto,
                str(x.writes_ok),
                str(x.writes_failed),
                str(x.failover_writes),
                _esc(", ".join(x.no_compliant_failover) or "none"),
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


@drill_app.command("compare")
def drill_compare(
    baseline: Annotated[Path, typer.Argument(help="Journal A (the baseline), JSON.")],
    current: Annotated[Path, typer.Argument(help="Journal B (the new run), JSON.")],
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            help="Relative worsening that counts as a regression (0 to 10; 0.2 = 20 %).",
            callback=_finite("--threshold", 0, 10),
        ),
    ] = 0.2,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Two drills side by side with the change; exit 1 when a figure of B regressed."""
    from regions.drills.compare import compare
    from regions.drills.journal import DrillJournal

    journals = []
    for path in (baseline, current):
        try:
            journals.append(DrillJournal.model_validate_json(path.read_text("utf-8")))
        except OSError as exc:
            _fail(f"cannot read {path}: {exc.strerror or type(exc).__name__}")
        except ValueError:
            _fail(f"{path} is not a regionkit drill journal (fix: pass a drill-*.json report)")
    cmp = compare(journals[0], journals[1], threshold=threshold)
    if as_json:
        _print_json(
            {
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
        )
    else:
        from rich.table import Table

        con = _console()
        con.print(
            f"[bold]drill compare[/]: A {_esc(cmp.a.drill_id)} ({_esc(cmp.a.scenario)}, "
            f"{cmp.a.started_at:%Y-%m-%d %H:%M}) against B {_esc(cmp.b.drill_id)} "
            f"({_esc(cmp.b.scenario)}, {cmp.b.started_at:%Y-%m-%d %H:%M})",
            soft_wrap=False,
        )
        for w in cmp.warnings:
            con.print(f"[yellow]note:[/] {_esc(w)}", soft_wrap=False)
        t = Table(
            title=f"B against A (regression: worse by > {threshold:.0%})", title_justify="left"
        )
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
            t.add_row(_esc(c.label), _esc(a), _esc(b), (mark + _esc(change)).strip())
        con.print(t)
        if cmp.regressed:
            con.print(
                "[red]regressed:[/] " + _esc(", ".join(c.label for c in cmp.regressed)),
                soft_wrap=False,
            )
    raise typer.Exit(EXIT_CHECK_FAILED if cmp.regressed else EXIT_OK)


@drill_app.command("history")
def drill_history(
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", help="Most recent N drills (1 to 100,000).", min=1, max=100_000
        ),
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Past drills, newest last, with each region's last successful drill."""
    from regions.drills import load_history

    journals = load_history(_settings().drill_history)[-limit:]
    if as_json:
        _print_json(
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

    t = Table(title=f"drill history ({_settings().drill_history})", title_justify="left")
    for col in ("when (UTC)", "drill", "scenario", "verdict", "RTO s", "conv. s"):
        t.add_column(col, overflow="fold")
    for j in journals:
        f = j.figures
        t.add_row(
            j.started_at.strftime("%m-%d %H:%M"),
            j.drill_id,
            f"{_esc(j.scenario)}\n{_esc(', '.join(j.regions))} ({j.target})",
            j.verdict,
            "n/a" if f.rto_seconds is None else f"{f.rto_seconds:.3f}",
            "n/a" if f.convergence_seconds is None else f"{f.convergence_seconds:.3f}",
        )
    _console().print(t)
    last: dict[str, str] = {}
    for j in journals:
        if j.verdict == "pass":
            for r in j.regions:
                last[r] = j.started_at.strftime("%Y-%m-%d %H:%M")
    policy = _policy()
    _console().print(
        "last successful drill per region: "
        + ", ".join(f"{r}: {last.get(r, 'never')}" for r in policy.regions),
        soft_wrap=False,
    )


# --- regionkit demo -----------------------------------------------------------------------


@app.command("demo")
def demo(
    duration: Annotated[
        float,
        typer.Option(
            "--duration",
            help="Seconds under each fault (0.1 to 600).",
            callback=_finite("--duration", 0.1, 600),
        ),
    ] = 4.0,
    users: Annotated[
        int, typer.Option("--users", help="Sign-ups per country (1 to 1000).", min=1, max=1000)
    ] = 3,
    rounds: Annotated[
        int, typer.Option("--rounds", help="Traffic rounds (1 to 1000).", min=1, max=1000)
    ] = 2,
    report_dir: Annotated[
        Path, typer.Option("--report-dir", help="Where every report goes.")
    ] = Path("regionkit-report"),
    rate: Annotated[
        float,
        typer.Option(
            "--rate",
            help="Drill load: rounds/s per writer region (0.1 to 1000).",
            callback=_finite("--rate", 0.1, 1000),
        ),
    ] = 5.0,
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
    import time as _time

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    _require_extra("local")
    _state.allow_example = True
    _writable_dir(report_dir, "--report-dir")

    from regions.demo import render_demo_markdown, run_demo

    settings = _settings()
    policy = _policy()
    log_file = _drill_log_file(report_dir, policy)
    started = _time.monotonic()
    err = _console(stderr=True)
    with (
        _sigterm_as_exit(),
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
                f"[dim]{_time.monotonic() - started:6.1f}s[/] {_esc(text)}", soft_wrap=False
            )

        def on_event(kind: str, detail: dict[str, Any]) -> None:
            if kind == "phase":
                progress.update(step, description=f"drill: {detail['name']}")

        summary = run_demo(
            policy,
            settings,
            duration=duration,
            users=users,
            rounds=rounds,
            rate=rate,
            report_dir=report_dir,
            signer=_audit_signer(settings, policy),
            say=say,
            on_event=on_event,
        )
    summary.log_file = str(log_file)
    (report_dir / "demo-summary.json").write_text(
        summary.model_dump_json(indent=2), encoding="utf-8"
    )
    (report_dir / "demo-summary.md").write_text(render_demo_markdown(summary), encoding="utf-8")
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        _print_demo(summary, report_dir)
    # The demo shows the job end to end: a drill that misses a target is reported above
    # (and in every report) but is not a failed demo; a residency breach found by the
    # audit is. `regionkit drill run` is the gate for drill targets.
    audit_failed = bool(summary.audit and summary.audit.failing_high_or_worse)
    raise typer.Exit(EXIT_CHECK_FAILED if audit_failed else EXIT_OK)


def _print_demo(s: Any, report_dir: Path) -> None:
    """The demo summary for a terminal: fits 80 columns; drills transposed, one per column."""
    from rich.table import Table

    from regions.demo import conv_text, rpo_text, rto_text

    con = _console()

    def line(text: str) -> None:
        con.print(text, soft_wrap=False)

    t = Table(title="routing per jurisdiction", title_justify="left")
    for col in ("where", "law", "users", "home", "written in", "inside"):
        t.add_column(col)
    for r in s.routing:
        t.add_row(
            _esc(r.jurisdiction),
            _esc(r.law),
            str(r.users),
            _esc(", ".join(r.home_regions)),
            _esc(", ".join(r.profiles_written_in) or "none"),
            "[green]yes[/]" if r.stayed_inside else "[red]NO[/]",
        )
    con.print(t)
    tr = s.traffic
    line(
        f"traffic: {tr.get('signups', 0)} sign-ups, {tr.get('profile_writes', 0)} profile "
        f"writes, {tr.get('posts', 0)} posts, {tr.get('reads', 0)} reads, "
        f"{tr.get('concurrent_edits', 0)} concurrent edits ({tr.get('stale_writes', 0)} "
        f"stale), {tr.get('reactions', 0)} reactions"
    )
    d = Table(title="drills against the policy's targets (faults under load)", title_justify="left")
    d.add_column("figure", no_wrap=True)
    for x in s.drills:
        d.add_column(f"{_esc(x.scenario)}\n{_esc(x.region)}", ratio=1)
    first = s.drills[0].targets if s.drills else {}

    def row(label: str, cells: list[str]) -> None:
        d.add_row(label, *cells)

    row(
        "verdict",
        [f"[{'green' if x.verdict == 'pass' else 'red'}]{x.verdict}[/]" for x in s.drills],
    )
    row(f"RTO ≤ {first.get('rto_seconds', 0):g} s", [_esc(rto_text(x)) for x in s.drills])
    row(f"RPO ≤ {first.get('rpo_seconds', 0):g} s", [_esc(rpo_text(x)) for x in s.drills])
    row(
        f"converge ≤ {first.get('convergence_seconds', 0):g} s",
        [_esc(conv_text(x)) for x in s.drills],
    )
    row(
        "conflicts",
        [_esc(", ".join(f"{k} {v}" for k, v in x.conflicts.items()) or "none") for x in s.drills],
    )
    row("violations", [str(x.residency_violations) for x in s.drills])
    con.print(d)
    for x in s.drills:
        for reason in x.reasons:
            line(f"  [red]- {_esc(x.scenario)}: {_esc(reason)}[/]")
    if s.conflicts is not None:
        c = s.conflicts
        line(
            f"conflicts logged: {c.total} "
            f"({_esc(', '.join(f'{k} {v}' for k, v in c.by_kind.items()) or 'none')}); "
            f"resolutions: {_esc(', '.join(f'{k} {v}' for k, v in c.by_resolution.items()))}"
        )
    if s.audit is not None:
        a = s.audit
        st = a.by_status
        line(
            f"audit: {st.get('PASS', 0)} PASS, {st.get('FAIL', 0)} FAIL, {st.get('ERROR', 0)} "
            f"ERROR; {a.failing_high_or_worse} at high severity or worse"
        )
        for f in a.findings[:8]:
            line(
                f"  {f.status} {f.severity} {_esc(f.check)} "
                f"{_esc(f.region or '')}: {_esc(f.reason)}"
            )
    line(f"reports in {_esc(report_dir)}/: demo-summary.md, audit.html, drill-*.html, ...")
    if s.log_file:
        line(f"logs: {_esc(s.log_file)}")


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
        _console(stderr=True).print(
            f"[bold red]{label}:[/] {_esc(exc)}", markup=True, highlight=False
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
