"""``regionkit users``: seed fake users on the local cluster, move a user's home."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from _cli.common import (
    JsonOpt,
    cluster_policy,
    console,
    esc,
    fail,
    new_app,
    print_json,
    quick_settings,
    reach_failed,
)

if TYPE_CHECKING:
    from regions.router import MoveResult
    from regions.seed import SeedResult

app = new_app(help="Users: seed fake users on the local cluster, move a user's home.")


def _seed_json(result: SeedResult) -> dict[str, Any]:
    return {
        "created": len(result.users),
        "by_jurisdiction": result.by_jurisdiction(),
        "by_home_region": {r: n for (_, r), n in result.by_home().items()},
        "fake_pii_attributes": result.fake_pii_attributes,
        "users": result.users,
    }


def _print_seeded(result: SeedResult) -> None:
    from rich.table import Table

    users = result.users
    t = Table(title=f"{len(users)} users created", title_justify="left")
    for col in ("jurisdiction", "home region", "countries", "users"):
        t.add_column(col, justify="right" if col == "users" else "left")
    samples = []
    for (jid, home), n in result.by_home().items():
        mine = [u for u in users if (u["jurisdiction"], u["home_region"]) == (jid, home)]
        t.add_row(jid, home, ", ".join(sorted({u["country"] for u in mine})), str(n))
        samples.append(f"  {jid} {home}: {mine[0]['user_id']}")
    con = console()
    con.print(t)
    con.print("for example:\n" + "\n".join(samples))
    con.print(
        f"profiles hold fake values for {', '.join(result.fake_pii_attributes) or 'no attribute'}"
        " (never printed); try `regionkit route <user id>`"
    )


@app.command("seed")
def users_seed(
    count: Annotated[
        int,
        typer.Option("--count", "-n", min=1, max=100_000, help="Users to create (1 to 100,000)."),
    ] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Create fake users in every jurisdiction on the running local cluster.

    Countries cycle through every jurisdiction's countries plus one that only the
    default jurisdiction covers (NG). Each user gets a directory entry and a
    profile in its home region, with fake PII-like attributes that are never printed.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from regions.router import RegionRouter
    from regions.seed import seed_users
    from residency.errors import BackendError, RegionUnavailable

    settings = quick_settings()
    if settings.mode != "local":
        fail(
            "`users seed` writes fake users: it runs against the local cluster only "
            "(REGIONKIT_MODE=local)"
        )
    policy = cluster_policy(settings)
    router = RegionRouter(policy, region=settings.region, config=settings)
    try:
        result = seed_users(router, count)
    except (BackendError, RegionUnavailable, BotoCoreError, ClientError) as exc:
        reach_failed(settings, "seeding users failed", exc)
    if as_json:
        print_json(_seed_json(result))
    else:
        _print_seeded(result)


@app.command("move")
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
    as_json: JsonOpt = False,
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
        fail("give a user ID and the new home as --country XX or --region R (exactly one)")
    if user_id is not None:
        parse_user_id(user_id)
    settings = quick_settings()
    policy = cluster_policy(settings)
    if region is not None:
        policy.check_region(region)
    router = RegionRouter(policy, region=settings.region, config=settings)
    try:
        if user_id is not None:
            results = [router.move_user(user_id, country=country, region=region)]
        else:
            results = [router.move_user(e.user_id) for e in router.pending_moves()]
    except (BackendError, RegionUnavailable, BotoCoreError, ClientError) as exc:
        reach_failed(
            settings,
            "the move did not complete (its record stays in the directory; "
            "`regionkit users move --resume` finishes it)",
            exc,
        )
    pending = [r for r in results if r.status != "done"]
    if as_json:
        print_json([asdict(r) for r in results] if user_id is None else asdict(results[0]))
    else:
        _render_moves(results)
    if pending:
        raise typer.Exit(1)


def _render_moves(results: list[MoveResult]) -> None:
    con = console()
    if not results:
        con.print("no pending move")
    for result in results:
        con.print(
            f"[bold]{esc(result.user_id)}[/]: {result.from_region} "
            f"({result.from_jurisdiction}) → {result.to_region} ({result.to_jurisdiction})"
        )
        for i, step in enumerate(result.steps, 1):
            con.print(f"  {i}. {esc(step)}")
        if result.status == "done":
            con.print("[green]ok[/] done")
        elif result.status == "superseded":
            con.print(f"[yellow]superseded[/]: {esc(result.reason)}; nothing more was written")
        else:
            con.print(
                f"[yellow]pending[/]: {esc(result.reason)}; run `regionkit users move "
                "--resume` to finish it"
            )
