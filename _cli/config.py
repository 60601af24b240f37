"""``regionkit config``: the effective settings and where each came from."""

from __future__ import annotations

from _cli import common
from _cli.common import JsonOpt, console, esc, get_settings, new_app, print_json

app = new_app(help="The effective settings.")


@app.command("show")
def config_show(as_json: JsonOpt = False) -> None:
    """Print every setting, its value and where it came from (secrets only as set/unset)."""
    from residency.settings import explain_settings

    given = {"policy": common.state.policy_path, "log_format": common.state.log_format}
    rows = explain_settings(get_settings(), **given)
    if as_json:
        print_json([r.__dict__ for r in rows])
        return
    from rich.table import Table

    t = Table(title="regionkit settings", title_justify="left")
    for col in ("setting", "value", "source", "note"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r.name, esc(r.value), esc(r.source), esc(r.note))
    console().print(t)
