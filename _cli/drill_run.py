"""``regionkit drill run``: a spinner around the library's drill (:mod:`regions.drills.launch`).

The library chooses and sets up the backend and the fault and hands back a runner;
this module renders its events as a progress line and keeps the runner in ``box``,
so an interrupted caller can still save the journal of the healed drill.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from _cli.common import console

if TYPE_CHECKING:
    from regions.drills import DrillOptions
    from regions.drills.journal import DrillJournal
    from residency.policy import Policy
    from residency.settings import Settings


def _describe(name: str, kind: str, detail: dict[str, Any]) -> str | None:
    """One progress line for an event of the drill, or None to keep the last one."""
    if kind == "phase":
        return f"drill {name}: {detail['name']}"
    if kind == "progress":
        return f"drill {name}: {detail['phase']} {detail['elapsed']:.1f}/{detail['of']:.0f} s"
    if kind != "setup":
        return None
    backend = detail["backend"]
    if backend == "local-up":
        return f"using the cluster in {detail['state_file']}"
    if backend == "ephemeral":
        return f"starting a local cluster of {detail['regions']} regions"
    if backend == "aws":
        how = "created" if detail["created"] else "deployed"
        return f"FIS template {detail['template']} ({how}, {detail['seconds']} s)"
    return f"simulating {detail['regions']} regions"


def run(
    target: str,
    sc: Any,
    params: Any,
    policy: Policy,
    settings: Settings,
    options: DrillOptions,
    box: list[Any],
    aws: dict[str, Any],
) -> DrillJournal:
    """Run the drill with a transient progress line on stderr (when it is a terminal)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from regions.drills.launch import open_aws_drill, open_local_drill

    err = console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def on_event(kind: str, detail: dict[str, Any]) -> None:
            text = _describe(sc.name, kind, detail)
            if text is not None:
                progress.update(task, description=text)

        drill = (
            open_aws_drill(sc, params, policy, settings, options, on_event=on_event, **aws)
            if target == "aws"
            else open_local_drill(
                sc,
                params,
                policy,
                settings,
                options,
                target="sim" if target == "sim" else "local",
                on_event=on_event,
            )
        )
        with drill as runner:
            box.append(runner)
            return runner.run()
