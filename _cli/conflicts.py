"""``regionkit conflicts``: the conflict log of concurrent cross-region writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from _cli.common import (
    JsonOpt,
    backend_hint,
    cluster_policy,
    console,
    esc,
    fail,
    get_policy,
    new_app,
    print_json,
    quick_settings,
)
from residency.errors import OperationError

if TYPE_CHECKING:
    from datetime import datetime

app = new_app(help="The conflict log: concurrent cross-region writes found by the detector.")


def _read_conflict_log() -> tuple[str, Any, Any]:
    """The conflict log (a ``ConflictLogScan``) from the nearest region that answers
    (settings.region first), where it was read, and how it names items."""
    from regions.conflict_reading import read_nearest
    from regions.conflicts import ConflictLog
    from regions.pool import ClientPool

    settings = quick_settings()
    log = ConflictLog(
        cluster_policy(settings),
        ClientPool(settings, retries="botocore"),
        table_prefix=settings.table_prefix,
        pseudonymize=settings.pseudonymizer(),
    )
    try:
        region, scan = read_nearest(log, settings.region)
    except OperationError as exc:
        raise OperationError(message=f"{exc}{backend_hint(settings)}") from None
    return region, scan, log.pseudonymize


def _parse_since(text: str) -> datetime:
    import re
    from datetime import UTC, datetime, timedelta

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m[2]]
        try:
            return datetime.now(UTC) - timedelta(seconds=float(m[1]) * unit)
        except OverflowError:
            fail(f"--since {text!r} reaches before year 1; give a shorter duration or a time")
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(
            f"--since {text!r} is neither an ISO 8601 time (2026-01-01T12:00:00Z) "
            "nor a duration (90s, 15m, 1h, 2d, 1w)"
        )
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _item(r: Any, pn: Any) -> str:
    """A record's item by keyed pseudonym (as the router and the audit name it)."""
    return str(pn.item(r.table, *r.item_key()))


def _conflicts_table(region: str, shown: list[Any], pn: Any) -> Any:
    from datetime import UTC

    from rich.table import Table

    t = Table(title=f"conflicts (read from {region})", title_justify="left")
    for col in ("occurred (UTC)", "kind", "data class", "item", "winner", "loser", "resolution"):
        t.add_column(col, overflow="fold", no_wrap=col not in {"item", "data class"})
    for r in shown:
        t.add_row(
            r.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.kind,
            esc(r.data_class),
            _item(r, pn),
            r.winner_region,
            r.loser_region,
            r.resolution + (" (repaired)" if r.repaired else ""),
        )
    return t


@app.command("list")
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
    key: Annotated[
        str | None,
        typer.Option("--key", help="Only conflicts on the item(s) with this partition key."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List logged conflicts, oldest first. Items are named by keyed pseudonym, as errors
    and audit findings name them; no key or value is shown.

    ``--json`` adds the versions (HLC stamps) of winner and loser and where each was detected.
    """
    from regions.conflict_reading import CONFLICT_KINDS, ConflictFilter

    if kind is not None and kind not in CONFLICT_KINDS:
        fail(f"--kind must be one of {', '.join(CONFLICT_KINDS)}, not {kind!r}")
    after = _parse_since(since) if since is not None else None
    if data_class is not None:
        get_policy().data_class(data_class)  # UnknownDataClass: exit 2, naming the known ones
    region, found, pn = _read_conflict_log()
    records = found.records
    shown = ConflictFilter(since=after, data_class=data_class, kind=kind, key=key).select(records)
    unreadable = [{"record": u.record, "fields": list(u.fields)} for u in found.unreadable]
    if as_json:
        print_json(
            {
                "region": region,
                "total": len(records),
                "shown": len(shown),
                "conflicts": [
                    {
                        "item": _item(r, pn),
                        **r.model_dump(mode="json", exclude={"key", "sort_key"}),
                    }
                    for r in shown
                ],
                "unreadable": unreadable,
            }
        )
        return
    con = console()
    con.print(_conflicts_table(region, shown, pn))
    con.print(f"{len(shown)} of {len(records)} logged conflicts")
    _print_unreadable(con, unreadable)


def _print_unreadable(con: Any, unreadable: list[dict[str, Any]]) -> None:
    for u in unreadable:
        con.print(
            f"[yellow]unreadable record[/] {u['record']}: "
            f"{esc(', '.join(u['fields']) or 'its fields')} do not parse"
        )


@app.command("stats")
def conflicts_stats(
    as_json: JsonOpt = False,
) -> None:
    """Conflict counts by kind, data class, resolution and region pair."""
    from regions.conflict_reading import summarize

    region, found, _ = _read_conflict_log()
    records = found.records
    stats: dict[str, Any] = {"region": region, **summarize(found)}
    if as_json:
        print_json(stats)
        return
    from rich.table import Table

    con = console()
    con.print(f"{stats['total']} logged conflicts (read from {region})")
    _print_unreadable(con, [{"record": u.record, "fields": u.fields} for u in found.unreadable])
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
            t.add_row(esc(name), str(n))
        con.print(t)
