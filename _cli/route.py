"""``regionkit route``: where a request for a user's data goes now, and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from _cli.common import (
    JsonOpt,
    configure_logging,
    console,
    esc,
    fail,
    get_policy,
    no_cluster_reason,
    print_json,
    quick_settings,
)

if TYPE_CHECKING:
    from regions.explain import RouteExplanation


def _render(ex: RouteExplanation) -> None:
    from rich.table import Table

    con = console()
    entry, decision = ex.home, ex.decision
    con.print(f"[bold]{esc(ex.user_id)}[/] → {ex.data_class} ({ex.kind}), {ex.op}")
    status = "" if entry.status == "active" else f", {entry.status} to {entry.moving_to}"
    con.print(
        f"home: [bold]{entry.home_region}[/] (jurisdiction {entry.jurisdiction}{status}): "
        f"{esc(ex.directory_note)}"
    )
    if decision is not None:
        how = "[yellow]failover[/]" if decision.failover else "direct"
        con.print(
            f"route: [bold green]{decision.region}[/] table {esc(decision.table_name)}, "
            f"{how}: {esc(decision.reason)}"
        )
    if ex.jurisdiction is not None:
        con.print(
            f"jurisdiction {entry.jurisdiction} ({esc(ex.jurisdiction.law)}): {ex.data_class} "
            f"never leaves {', '.join(ex.jurisdiction.regions)}"
        )
    t = Table(title="chain", title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("region")
    t.add_column("health")
    t.add_column("why")
    for i, step in enumerate(ex.chain, 1):
        mark = "[green]" if step.health == "up" else "[yellow]"
        chosen = " ←" if decision is not None and step.region == decision.region else ""
        t.add_row(
            str(i), f"{step.region}{chosen}", f"{mark}{esc(step.health)}[/]", esc(step.reason)
        )
    con.print(t)


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
    as_json: JsonOpt = False,
) -> None:
    """Where a request for a user's data goes now, and why, with the failover chain.

    The decision needs no cluster: when the directory cannot be reached, the home
    region comes from the hint inside the user ID (and the output says so).
    """
    from regions.explain import default_data_class, explain_route
    from regions.ids import parse_user_id
    from regions.router import RegionRouter

    if op not in {"read", "write"}:
        fail(f"--op must be 'read' or 'write', not {op!r}")
    uid = parse_user_id(user_id)  # MalformedId: exit 2, naming the expected format
    settings = quick_settings()
    policy = get_policy(settings.policy)
    configure_logging(policy)
    if from_region is not None:
        policy.check_region(from_region)
    data_class = default_data_class(policy, data_class)
    policy.data_class(data_class)  # UnknownDataClass: exit 2, naming the known ones
    policy.check_region(uid.home_hint)
    router = RegionRouter(policy, region=from_region or settings.region, config=settings)
    ex = explain_route(
        router,
        user_id,
        data_class,
        "write" if op == "write" else "read",
        offline=no_cluster_reason(settings),
    )
    if as_json:
        print_json(ex.as_dict())
    else:
        _render(ex)
    if ex.refused is not None:
        raise ex.refused  # main(): "failed: ...", exit 1
