"""``regionkit local``: run the embedded local cluster and inject faults into it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from _cli import common
from _cli.common import (
    EXIT_CHECK_FAILED,
    JsonOpt,
    configure_logging,
    console,
    esc,
    fail,
    finite,
    get_policy,
    get_settings,
    new_app,
    print_json,
    require_extra,
    split_regions,
)

if TYPE_CHECKING:
    from regions.local.cluster import LocalCluster
    from residency.policy import Policy

app = new_app(help="Run the embedded local cluster (one moto server per region) and inject faults.")
fault_app = new_app(help="Inject faults into the running local cluster (`regionkit local up`).")
app.add_typer(fault_app, name="fault")

StateFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-file",
        help="Cluster state file (default: REGIONKIT_STATE_FILE or .regionkit/cluster.json).",
    ),
]


def _state_path(state_file: Path | None) -> Path:
    return state_file or get_settings().state_file


def _control(state_file: Path | None) -> Any:
    from regions.local.control import ControlClient

    return ControlClient.from_state_file(_state_path(state_file))


def _print_started(cluster: LocalCluster, policy: Policy, path: Path) -> None:
    from rich.table import Table

    con = console()
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
    con.print(f"state file: {esc(path)}  control: {cluster.control_url}")
    con.print("press Ctrl-C (or run `regionkit local down`) to stop")


TablePrefixOpt = Annotated[str, typer.Option("--table-prefix", help="Prefix of every table.")]
ReplicateOpt = Annotated[
    bool, typer.Option("--replicate/--no-replicate", help="Run the replication emulator.")
]
ServerOpt = Annotated[
    str, typer.Option("--server", help="'fast' (keep-alive, default) or 'stock' moto_server.")
]
TtlSweepOpt = Annotated[
    float,
    typer.Option(
        "--ttl-sweep",
        help="Seconds between runs of the emulated TTL process (expired items are "
        "deleted, and the deletions replicate); 0 turns it off.",
        callback=finite("--ttl-sweep", 0, 86_400),
    ),
]


@app.command("up")
def local_up(
    state_file: StateFileOpt = None,
    table_prefix: TablePrefixOpt = "",
    replicate: ReplicateOpt = True,
    server: ServerOpt = "fast",
    ttl_sweep: TtlSweepOpt = 60.0,
) -> None:
    """Start the local cluster and keep it running in the foreground until Ctrl-C.

    Without --policy, REGIONKIT_POLICY, ./regionkit.yaml or ./policies/, it runs the
    example policy packaged with regionkit, and says so.
    """
    import signal
    import threading

    require_extra("local")
    common.state.allow_example = True
    from regions.local.cluster import LocalCluster

    if server not in {"fast", "stock"}:
        fail(f"--server must be 'fast' or 'stock', not {server!r}")
    settings = get_settings()
    policy = get_policy(settings.policy)
    configure_logging(policy)
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
    try:
        cluster.start()
        _print_started(cluster, policy, path)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        cluster.stop()
    console().print("local cluster stopped")


def _read_status(path: Path) -> dict[str, Any]:
    from regions.local.recorded import recorded_status

    return recorded_status(path)


def _servers_table(status: dict[str, Any], path: Path) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(
        title=f"local cluster {status.get('policy')!r} ({esc(path)}; clock skew in ms)",
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
    return t


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}"


def _links_table(links: list[dict[str, Any]]) -> Any:
    from rich import box
    from rich.table import Table

    lt = Table(
        title="replication links (lag in ms)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    cols = ("link", "p50", "p99", "pending", "applied", "skipped", "failed", "paused", "lag fault")
    for col in cols:
        lt.add_column(col, justify="left" if col == "link" else "right", no_wrap=True)
    table_name = None
    for m in links:
        if m["table"] != table_name:
            table_name = m["table"]
            lt.add_row(f"[bold]{esc(table_name)}[/]")
        lt.add_row(
            f"  {m['src']} → {m['dst']}",
            _ms(m.get("lag_p50_ms")),
            _ms(m.get("lag_p99_ms")),
            str(m.get("pending")),
            str(m.get("applied")),
            str(m.get("skipped")),
            f"[red]{m['failed']}[/]" if m.get("failed") else "0",
            "[yellow]yes[/]" if m.get("paused") else "no",
            f"[yellow]{_ms(m['injected_lag_ms'])}[/]" if m.get("injected_lag_ms") else "-",
        )
    return lt


def _print_replication_problems(con: Any, status: dict[str, Any]) -> None:
    """Changes given up on (the replicas differ for good) and the latest errors."""
    failed = status.get("replication_failed_count", 0)
    if failed:
        con.print(f"[red]{failed} replicated change(s) given up on[/]: the replicas differ")
        for line in status.get("replication_failed", [])[-5:]:
            con.print(f"  {esc(line)}")
    errors = status.get("replication_errors", [])
    if errors:
        con.print(f"[yellow]replication errors (latest {min(len(errors), 5)}):[/]")
        for line in errors[-5:]:
            con.print(f"  {esc(line)}")


@app.command("status")
def local_status(state_file: StateFileOpt = None, as_json: JsonOpt = False) -> None:
    """Endpoints, server liveness and per-link replication metrics of the running cluster."""
    path = _state_path(state_file)
    status = _read_status(path)
    answering = status.get("control", {}).get("answering")
    if as_json:
        print_json(status)
    else:
        con = console()
        con.print(_servers_table(status, path))
        links = status.get("links", [])
        if links:
            con.print(_links_table(links))
        elif answering:
            con.print("replication: off")
        _print_replication_problems(con, status)
        if not answering:
            console(stderr=True).print(
                f"[yellow]control endpoint not answering:[/] "
                f"{esc(status['control'].get('error', ''))}"
            )
    if not answering:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command("down")
def local_down(
    state_file: StateFileOpt = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", help="Seconds to wait (0 to 600).", callback=finite("--timeout", 0, 600)
        ),
    ] = 10.0,
) -> None:
    """Stop the running cluster; kill its recorded processes if it does not answer."""
    from regions.local.recorded import stop_recorded

    path = _state_path(state_file)
    stopped = stop_recorded(path, timeout=timeout)
    con = console()
    if stopped is None:
        con.print(f"no local cluster is running (no state file at {esc(path)})")
        return
    how = "asked it to stop" if stopped.asked else "its control endpoint did not answer"
    killed = f"; killed pids {', '.join(map(str, stopped.killed))}" if stopped.killed else ""
    con.print(f"local cluster stopped ({how}{killed})")


def _link_text(src: str | None, dst: str | None) -> str:
    return f"{src or '*'} → {dst or '*'}"


def _fault_done(what: str) -> None:
    console().print(f"[green]ok[/] {esc(what)}")


_LinkRegionOpt = Annotated[
    str | None, typer.Option("--region", help="Every link into and out of this region.")
]
_SrcOpt = Annotated[str | None, typer.Option("--src", help="Source region (default: all).")]
_DstOpt = Annotated[str | None, typer.Option("--dst", help="Destination region (default: all).")]


def _links_fault(
    action: str, region: str | None, src: str | None, dst: str | None, state_file: Path | None
) -> None:
    if region and (src or dst):
        fail("use --region, or --src/--dst, not both")
    getattr(_control(state_file), action)(src, dst, region=region)
    _fault_done(f"replication {action}d: {region or _link_text(src, dst)}")


@fault_app.command("pause")
def fault_pause(
    region: _LinkRegionOpt = None,
    src: _SrcOpt = None,
    dst: _DstOpt = None,
    state_file: StateFileOpt = None,
) -> None:
    """Pause replication (like FIS global-table-pause-replication); nothing is lost."""
    _links_fault("pause", region, src, dst, state_file)


@fault_app.command("resume")
def fault_resume(
    region: _LinkRegionOpt = None,
    src: _SrcOpt = None,
    dst: _DstOpt = None,
    state_file: StateFileOpt = None,
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
            callback=finite("--ms", 0, 3_600_000),
        ),
    ] = None,
    src: _SrcOpt = None,
    dst: _DstOpt = None,
    jitter_ms: Annotated[
        float,
        typer.Option(
            "--jitter-ms",
            help="Random extra lag in ms (0 to 3,600,000).",
            callback=finite("--jitter-ms", 0, 3_600_000),
        ),
    ] = 0.0,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the lag.")] = False,
    state_file: StateFileOpt = None,
) -> None:
    """Add replication lag on links src → dst."""
    if (ms is None) == (not clear):
        fail("give --ms N, or --clear")
    _control(state_file).lag(src, dst, None if clear else ms, jitter_ms=jitter_ms)
    _fault_done(
        f"lag {_link_text(src, dst)}: "
        + ("cleared" if clear else f"{ms:g} ms (+ up to {jitter_ms:g} ms)")
    )


@fault_app.command("partition")
def fault_partition(
    group: Annotated[
        list[str], typer.Option("--group", help="Comma-separated regions; repeat for each side.")
    ],
    state_file: StateFileOpt = None,
) -> None:
    """Cut replication between groups of regions (until `heal`)."""
    groups = [split_regions(g) for g in group]
    if len(groups) < 2 or not all(groups):
        fail("give at least two non-empty --group options, e.g. --group a,b --group c")
    _control(state_file).partition(groups)
    _fault_done("partitioned: " + " | ".join(",".join(g) for g in groups))


@fault_app.command("heal")
def fault_heal(state_file: StateFileOpt = None) -> None:
    """Clear lag, pauses and partitions (region outages stay: use `restore`)."""
    _control(state_file).heal()
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
    state_file: StateFileOpt = None,
) -> None:
    """Take a region down; its data is kept for `restore`."""
    if mode not in {"stop", "refuse"}:
        fail(f"--mode must be 'stop' or 'refuse', not {mode!r}")
    _control(state_file).outage(region, mode)
    _fault_done(f"{region} is down ({mode})")


@fault_app.command("restore")
def fault_restore(
    region: Annotated[str, typer.Option("--region", help="The region to bring back.")],
    state_file: StateFileOpt = None,
) -> None:
    """Bring a region back from an outage."""
    _control(state_file).restore(region)
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
    state_file: StateFileOpt = None,
) -> None:
    """Skew the clock of writers in a region (drill writers read it from the state file)."""
    _control(state_file).skew(region, ms)
    _fault_done(f"clock of {region} skewed by {ms} ms")


# --- regionkit infra ----------------------------------------------------------------------
