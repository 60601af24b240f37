"""``regionkit subject``: data-subject requests, to locate, export and erase one user."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from _cli.common import (
    EXIT_CHECK_FAILED,
    JsonOpt,
    audit_signer,
    cluster_policy,
    console,
    esc,
    fail,
    new_app,
    print_json,
    quick_settings,
    reach_failed,
    writable_dir,
    writable_file,
)

if TYPE_CHECKING:
    from regions.erasure import ErasureResult
    from regions.router import RegionRouter
    from residency.settings import Settings

app = new_app(help="Data-subject requests: locate, export and erase one user everywhere.")


def _subject_router() -> tuple[Settings, RegionRouter]:
    from regions.router import RegionRouter

    settings = quick_settings()
    policy = cluster_policy(settings)
    return settings, RegionRouter(
        policy,
        region=settings.region,
        config=settings,
        pseudonymizer=settings.evidence_pseudonymizer(),  # receipts outlive the process
    )


def _subject_call(
    settings: Settings, what: str, fn: Any, done: list[dict[str, Any]] | None = None
) -> Any:
    """``fn()``; a region it cannot reach ends the command, after naming the receipts
    already ``done`` (so an operator knows which erasures did finish)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from residency.errors import BackendError, RegionUnavailable

    try:
        return fn()
    except (BackendError, RegionUnavailable, BotoCoreError, ClientError) as exc:
        if done:
            _print_erasures(done)
        reach_failed(settings, what, exc)


@app.command("locate")
def subject_locate(
    user_id: Annotated[str, typer.Argument(help="The user ID.")],
    scan: Annotated[
        bool, typer.Option("--scan", help="Scan every replica instead of the by-subject index.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every item of the user in every region and data class: keys by pseudonym, no values."""
    from regions.ids import parse_user_id

    parse_user_id(user_id)
    settings, router = _subject_router()
    loc = _subject_call(
        settings, "locate failed", lambda: router.locate_subject(user_id, scan=scan)
    )
    if as_json:
        print_json(
            {
                "subject": loc.user,
                "method": loc.method,
                "items": [f.public() for f in loc.items],
                "unreadable": loc.unreadable,
                "requests": loc.requests,
            }
        )
        return
    con = console()
    if scan:
        con.print("[yellow]scanning every replica[/] (--scan): slow on large tables")
    con.print(f"subject [bold]{loc.user}[/] ({len(loc.live())} live items, {loc.method})")
    for f in sorted(loc.items, key=lambda f: (f.data_class, f.region, f.key)):
        con.print(f"  {f.data_class:<10} {f.region:<15} {f.table:<20} {f.key} {f.state}")
    for region in loc.unreadable:
        con.print(f"  [red]{region}: unreadable[/] (what it holds is unknown)")


@app.command("export")
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
    writable_file(out, "--out")
    from residency.errors import ResidencyViolation

    settings, router = _subject_router()
    try:
        data = _subject_call(
            settings,
            "export failed",
            lambda: router.export_subject(user_id, transfer_basis=transfer_basis),
        )
    except ResidencyViolation as exc:
        if getattr(exc, "op", None) != "export":
            raise  # the guard's own refusal of a read: not the operator's placement
        fail(f"{exc} (this process's region is REGIONKIT_REGION)")
    data["exported_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
    except OSError as exc:
        fail(f"--out {out}: cannot be written ({exc.strerror})")
    counts = ", ".join(f"{k}: {len(v)}" for k, v in data["data"].items())
    console().print(f"[green]ok[/] wrote {esc(out)} (mode 0600; {counts})")


def _write_receipt(result: ErasureResult, signer: Any, receipts: Path) -> dict[str, Any]:
    """Sign the erasure's receipt; write it as JSON and Markdown into ``receipts``."""
    from residency.receipts import write_receipt

    return {
        "subject": result.user,
        "status": result.status,
        "reason": result.reason,
        "receipt": str(write_receipt(result.receipt(), signer, receipts)),
    }


def _print_erasures(written: list[dict[str, Any]]) -> None:
    con = console()
    if not written:
        con.print("no pending erasure")
    for w in written:
        mark = (
            "[green]done[/]"
            if w["status"] == "done"
            else f"[yellow]pending[/] ({esc(w['reason'])})"
        )
        con.print(f"{w['subject']}: {mark}; receipt {esc(w['receipt'])}")


@app.command("erase")
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
    as_json: JsonOpt = False,
) -> None:
    """Erase the user everywhere, verify every replica, and write a signed receipt.

    Exit 1 while an erasure is pending (a region unreachable): its record stays in the
    directory, and `regionkit subject erase --resume` finishes it.
    """
    from regions.ids import parse_user_id

    if user_id is None and not resume:
        fail("give a user ID, or --resume to finish every pending erasure")
    if user_id is not None:
        parse_user_id(user_id)
    writable_dir(receipts, "--receipt-dir")
    settings, router = _subject_router()
    signer = audit_signer(settings, router.policy)
    ids = [user_id] if user_id else [e.user_id for e in router.pending_erasures()]
    receipts.mkdir(parents=True, exist_ok=True)
    results: list[Any] = []
    written: list[dict[str, Any]] = []
    for uid in ids:
        # Each receipt is written as its erasure ends: a later one failing must not lose it.
        result = _subject_call(
            settings, "erase failed", lambda u=uid: router.erase_subject(u), written
        )
        results.append(result)
        written.append(_write_receipt(result, signer, receipts))
    if as_json:
        print_json(written)
    else:
        _print_erasures(written)
    if any(r.status != "done" for r in results):
        raise typer.Exit(EXIT_CHECK_FAILED)
