"""``regionkit audit``: check the deployed tables and the stored data against the policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from _cli.common import (
    EXIT_CHECK_FAILED,
    JsonOpt,
    audit_signer,
    configure_logging,
    console,
    esc,
    fail,
    get_policy,
    get_settings,
    new_app,
    no_cluster_reason,
    print_json,
    split_regions,
    writable_dir,
    writable_file,
)
from residency.errors import ConfigError, OperationError

if TYPE_CHECKING:
    from rich.console import Console

    from residency.audit import AuditReport, Check
    from residency.policy import Policy
    from residency.settings import Settings
    from residency.signing import TrustedKey

app = new_app(
    help="Compliance audit: check the deployed tables and the stored data against the policy."
)

_AUDIT_SEVERITIES = ("critical", "high", "medium", "low", "info")


# --- regionkit audit checks ---------------------------------------------------------------


def _checks_policy_scope() -> tuple[Policy | None, str, str | None, str]:
    """Scope the table actions to the policy's tables when the policy loads."""
    partition = "aws"
    try:
        settings = get_settings()
        partition = settings.partition
        policy: Policy | None = get_policy(settings.policy)
        prefix = settings.table_prefix
        signing_key = settings.signing_kms_key if settings.mode == "aws" else None
    except ConfigError:
        policy, prefix, signing_key = None, "", None
    return policy, prefix, signing_key, partition


def _checks_json(checks: list[Check], doc: dict[str, Any]) -> dict[str, Any]:
    return {
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


def _print_checks(
    checks: list[Check], doc: dict[str, Any], policy: Policy | None, src: str
) -> None:
    from rich import box
    from rich.table import Table

    con = console()
    t = Table(title="audit checks", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("check", "severity", "title", "permissions"):
        t.add_column(col, overflow="fold")
    for c in checks:
        t.add_row(
            c.id, c.meta.severity, esc(c.meta.title), ", ".join(c.meta.permissions) or "(none)"
        )
    con.print(t)
    scope = f"policy {policy.name!r}" if policy else "all tables (no policy loaded)"
    con.print(
        f"least-privilege IAM policy for `regionkit audit run --source {src}` ({esc(scope)}):"
    )
    typer.echo(json.dumps(doc, indent=2))


@app.command("checks")
def audit_checks(
    as_json: JsonOpt = False,
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
        fail(f"--source must be 'scan' or 'export', not {source!r}")
    checks = all_checks()
    if source == "export" and not export_bucket:
        fail("--source export needs --export-bucket: the S3 permissions are scoped to it")
    policy, prefix, signing_key, partition = _checks_policy_scope()
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
        print_json(_checks_json(checks, doc))
        return
    _print_checks(checks, doc, policy, source)


# --- regionkit audit run ------------------------------------------------------------------


def audit_progress(console: Console) -> tuple[Any, Any]:
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


FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="terminal, json, markdown, html, junit or ocsf.")
]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Write the report to this file.")]
FailOnOpt = Annotated[
    str,
    typer.Option(
        "--fail-on",
        help="Exit 1 when a FAIL or ERROR finding has this severity or more: "
        "critical, high, medium, low or info.",
    ),
]
SampleOpt = Annotated[
    int | None, typer.Option("--sample", help="Read at most N items per table.", min=1, max=10**9)
]
RegionsOpt = Annotated[
    str | None, typer.Option("--regions", help="Comma-separated policy regions (default: all).")
]
ExtraRegionsOpt = Annotated[
    str | None,
    typer.Option(
        "--extra-regions",
        help="More regions to search for misplaced tables and copies, comma-separated; "
        "'enabled' for every region enabled in the account, 'all' for every commercial "
        "region.",
    ),
]
SourceOpt = Annotated[
    str, typer.Option("--source", help="'scan' the live tables or read an S3 'export'.")
]
ExportBucketOpt = Annotated[
    str | None,
    typer.Option(
        "--export-bucket",
        help="S3 bucket for --source export; may contain {region}. Pinned tables "
        "only export to a bucket inside their jurisdiction.",
    ),
]
ExportPrefixOpt = Annotated[str, typer.Option("--export-prefix", help="Key prefix of the exports.")]
ExportArnOpt = Annotated[
    list[str] | None,
    typer.Option("--export-arn", help="Read this existing export (repeat for each table)."),
]
ChecksOpt = Annotated[
    str | None,
    typer.Option(
        "--checks",
        help="Comma-separated check ids or families (policy, infra, "
        "data, operations); default: all. See `regionkit audit checks`.",
    ),
]
AccountIdOpt = Annotated[
    str | None,
    typer.Option("--account-id", help="AWS account for ARNs (default: STS GetCallerIdentity)."),
]
WindowDaysOpt = Annotated[
    int,
    typer.Option("--window-days", help="Conflict window in days (1 to 3650).", min=1, max=3650),
]
DrillHistoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--drill-history",
        help="Drill journals (default: REGIONKIT_DRILL_HISTORY or .regionkit/drills).",
    ),
]
ShowPassedOpt = Annotated[
    bool, typer.Option("--show-passed", help="List PASS findings too (terminal, markdown).")
]
ProgressOpt = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
]
DeepOpt = Annotated[
    bool, typer.Option("--deep", help="Check every item's values for PII, not a sample.")
]
ValueEveryOpt = Annotated[
    int,
    typer.Option(
        "--value-every", help="Check the values of 1 item in N for PII.", min=1, max=10**9
    ),
]
EvidenceDirOpt = Annotated[
    Path,
    typer.Option(
        "--evidence-dir", help="Where the signed JSON goes when the report is not a file."
    ),
]


def _check_run_options(
    fmt: str, fail_on: str, out: Path | None, evidence_dir: Path, source: str
) -> None:
    """Exit 2 on a bad option, before any work."""
    from residency.audit import FORMATS

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fail_on not in _AUDIT_SEVERITIES:
        fail(f"--fail-on must be one of {', '.join(_AUDIT_SEVERITIES)}, not {fail_on!r}")
    if out is not None:
        writable_file(out, "--out")
    writable_dir(evidence_dir, "--evidence-dir")
    if source not in {"scan", "export"}:
        fail(f"--source must be 'scan' or 'export', not {source!r}")


def _audit_settings(check_ids: list[str] | None) -> tuple[Settings, Policy]:
    """Settings and policy for a run; exit 1 when its checks need a cluster and none runs."""
    from residency.audit import select_checks

    selected = select_checks(check_ids)  # an unknown id is a ConfigError: exit 2
    settings = get_settings()
    # Scans read 1 MB pages: give them more time than the router's interactive default.
    settings = get_settings(read_timeout=max(settings.read_timeout, 10.0))
    policy = get_policy(settings.policy)
    configure_logging(policy)
    needs_aws = any(c.meta.permissions for c in selected)
    reason = no_cluster_reason(settings) if needs_aws else None
    if reason:
        raise OperationError(message=reason)
    return settings, policy


def _run_with_progress(
    policy: Policy, settings: Settings, progress: bool, **options: Any
) -> AuditReport:
    """``run_audit`` with a progress bar on a terminal's stderr."""
    from regions.pool import ClientPool
    from residency.audit import run_audit

    err = console(stderr=True)
    bar, on_event = audit_progress(err) if progress and err.is_terminal else (None, None)
    if bar is not None:
        bar.start()
    try:
        return run_audit(
            policy,
            ClientPool(settings, retries="botocore"),  # scans retry throttling in botocore
            policy_path=settings.policy,
            merge_modules=settings.merge_modules,
            detector_alarms=settings.mode == "aws",  # the deployed detector's alarms
            progress=on_event,
            table_prefix=settings.table_prefix,
            pseudonymizer=settings.evidence_pseudonymizer(),
            signer=audit_signer(settings, policy),
            **options,
        )
    finally:
        if bar is not None:
            bar.stop()


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


def _write_report(
    report: AuditReport,
    fmt: str,
    out: Path | None,
    evidence_dir: Path,
    show_passed: bool,
    fail_on: str,
) -> bool:
    """Write the signed JSON, and the report in ``fmt`` to --out or stdout; True if failing."""
    from residency.audit import render
    from residency.audit.render.terminal import render_text, renderable

    failing = report.failing(fail_on)
    signed = _signed_json_path(report, fmt, out, evidence_dir)
    signed.parent.mkdir(parents=True, exist_ok=True)
    signed.write_text(render(report, "json"), encoding="utf-8")
    options: dict[str, Any] = {"show_passed": show_passed, "signed_json": signed.name}
    if out is None:
        console(stderr=True).print(f"signed JSON report: {esc(signed)}")
        if fmt == "terminal":
            console().print(renderable(report, **options))
        else:
            typer.echo(render(report, fmt, **options), nl=False)
        return bool(failing)
    text = render_text(report, **options) if fmt == "terminal" else render(report, fmt, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out != signed:
        out.write_text(text, encoding="utf-8")
    s = report.summary["by_status"]
    console().print(
        f"wrote {fmt} report to {esc(out)}: {s['FAIL']} FAIL, {s['ERROR']} ERROR, "
        f"{s['PASS']} PASS; {len(failing)} at or above {fail_on}; "
        f"report sha256 {report.report_sha256}"
        + ("" if out == signed else f"; signed JSON {esc(signed)}")
    )
    return bool(failing)


@app.command("run")
def audit_run(
    fmt: FormatOpt = "terminal",
    out: OutOpt = None,
    fail_on: FailOnOpt = "high",
    sample: SampleOpt = None,
    regions: RegionsOpt = None,
    extra_regions: ExtraRegionsOpt = None,
    source: SourceOpt = "scan",
    export_bucket: ExportBucketOpt = None,
    export_prefix: ExportPrefixOpt = "regionkit-audit",
    export_arn: ExportArnOpt = None,
    checks: ChecksOpt = None,
    account_id: AccountIdOpt = None,
    window_days: WindowDaysOpt = 7,
    drill_history: DrillHistoryOpt = None,
    show_passed: ShowPassedOpt = False,
    progress: ProgressOpt = True,
    deep: DeepOpt = False,
    value_every: ValueEveryOpt = 20,
    evidence_dir: EvidenceDirOpt = Path("regionkit-report"),
) -> None:
    """Audit the deployment and the data against the policy; write a signed report.

    The signed JSON report is always written: it is --out with --format json, else a
    .json file beside --out, else audit-<run>.json in --evidence-dir.
    Exit 0 when no FAIL or ERROR finding reaches --fail-on, 1 when one does, 2 on bad input.
    """
    from datetime import timedelta

    _check_run_options(fmt, fail_on, out, evidence_dir, source)
    check_ids = split_regions(checks) if checks else None
    settings, policy = _audit_settings(check_ids)
    report = _run_with_progress(
        policy,
        settings,
        progress,
        regions=split_regions(regions) if regions else None,
        extra_regions=split_regions(extra_regions) if extra_regions else None,
        checks=check_ids,
        source="export" if source == "export" else "scan",
        sample=sample,
        drill_history=drill_history or settings.drill_history,
        account_id=account_id,
        conflict_window=timedelta(days=window_days),
        export_bucket=export_bucket,
        export_prefix=export_prefix,
        export_arns=export_arn or (),
        deep=deep,
        value_every=value_every,
    )
    if _write_report(report, fmt, out, evidence_dir, show_passed, fail_on):
        raise typer.Exit(EXIT_CHECK_FAILED)


# --- regionkit audit verify, public-key, pseudonym ----------------------------------------


def _trusted_keys(settings: Settings, files: list[Path]) -> list[TrustedKey]:
    """Keys `audit verify` trusts: the --public-key files alone when any is given, else
    the deployment's own (the local key file, the KMS key)."""
    from cryptography.exceptions import UnsupportedAlgorithm

    from regions.pool import ClientPool
    from residency.signing import TrustedKey, key_fingerprint, trusted_keys

    given = []
    for f in files:
        try:
            if not f.is_file() or f.stat().st_size > 64 * 1024:  # a FIFO would hang
                raise ValueError("not a regular file of at most 64 KiB")
            pem = f.read_text(encoding="ascii")
            key_fingerprint(pem)
        except (OSError, UnicodeDecodeError, ValueError, UnsupportedAlgorithm):
            fail(f"--public-key {f} cannot be read as a PEM public key")
        given.append(TrustedKey(pem, f"--public-key {f}"))
    return trusted_keys(settings, ClientPool(settings).client, given)


@app.command("verify")
def audit_verify(
    report_file: Annotated[
        Path, typer.Argument(help="A report or receipt: the signed JSON, or a page beside it.")
    ],
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="Trust this signer's public key (PEM) and no other; repeatable.",
        ),
    ] = None,
) -> None:
    """Check a report's signature and name the key. Exit 0 when valid, 1 when not.

    A signed JSON is checked itself. Any other format must name its signed JSON (kept
    beside it), which must verify, and be exactly what that JSON renders to.
    """
    from residency.audit.verifying import check_evidence

    trusted = _trusted_keys(get_settings(), public_key or [])
    check = check_evidence(report_file, trusted)
    con = console()
    if not check:
        con.print(f"[red]FAILED[/] {esc(report_file)}: {esc(check.reason)}")
        raise typer.Exit(EXIT_CHECK_FAILED)
    assert check.signed_json is not None  # set whenever ok
    con.print(
        f"[green]OK[/] {esc(check.signed_json)}: {check.kind} {esc(check.reason)}"
        + ("" if not check.rendering else f"; {esc(report_file)} is its {check.rendering}")
    )


@app.command("public-key")
def audit_public_key() -> None:
    """Print the public key that signs reports (PEM), for auditors to keep."""
    settings = get_settings()
    policy = get_policy(settings.policy) if settings.mode == "aws" else None
    if policy is not None:
        signer = audit_signer(settings, policy)
    else:
        from residency.signing import LocalSigner

        if not settings.signing_key_file.exists():
            typer.echo(
                f"# no signing key at {settings.signing_key_file}: created one; it signs the "
                "reports written from here on (run this where the audits run)",
                err=True,
            )
        try:
            signer = LocalSigner.load_or_create(settings.signing_key_file)
        except (OSError, ValueError) as exc:
            fail(f"the signing key {settings.signing_key_file} cannot be used: {exc}")
    typer.echo(f"# key {signer.key_id}", err=True)
    typer.echo(signer.public_key_pem(), nl=False)


@app.command("pseudonym")
def audit_pseudonym(
    value: Annotated[str, typer.Argument(help="A key value (an item key or a user ID).")],
    table: Annotated[
        str | None, typer.Option("--table", help="The table (physical name) the item is in.")
    ] = None,
) -> None:
    """The keyed pseudonym reports use for an item (or, without --table, a subject)."""
    pn = get_settings().evidence_pseudonymizer()
    typer.echo(pn(value, scope=table) if table else pn(value, scope="subject"))
