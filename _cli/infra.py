"""``regionkit infra``: the AWS CDK app built from the policy, and the guardrail SCPs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from _cli.common import (
    JsonOpt,
    console,
    esc,
    fail,
    get_policy,
    get_settings,
    new_app,
    print_json,
    require_extra,
    writable_dir,
)

if TYPE_CHECKING:
    from infra.app import SynthResult

app = new_app(help="The AWS CDK app built from the policy (needs the 'infra' extra).")


def _stacks_table(result: SynthResult, out: Path) -> Any:
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
            esc(st.stack.removeprefix(prefix)),
            st.region,
            "\n".join(esc(name) for name in st.tables) or "-",
            "\n".join(replicas) or "-",
            str(st.keys),
            str(st.alarms),
            str(st.lambdas),
            str(st.fis_templates),
        )
    return t


@app.command("synth")
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
    as_json: JsonOpt = False,
) -> None:
    """Write the CloudFormation templates of the policy and summarize every stack."""
    require_extra("infra")
    writable_dir(out, "--out")
    get_policy()  # a bad policy is exit 2 with file:line before the CDK starts
    from infra.app import AppOptions, synth  # imports aws_cdk: only here, never at start-up

    s = get_settings()
    result = synth(AppOptions(policy_path=s.policy, table_prefix=s.table_prefix, nag=nag), out)
    if as_json:
        print_json(
            {
                "policy": result.policy_name,
                "out_dir": str(result.out_dir),
                "seconds": round(result.seconds, 2),
                "stacks": [st.as_dict() for st in result.stacks],
            }
        )
        return
    con = console()
    con.print(_stacks_table(result, out))
    con.print(
        f"[green]ok[/] synthesized in {result.seconds:.1f} s"
        f"{' (cdk-nag AwsSolutions: no unacknowledged finding)' if nag else ''}"
    )


@app.command("guardrails")
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
    from residency.deployment import plan_deployment

    if not re.fullmatch(r"aws(-[a-z]+)*", partition):
        fail(f"--partition must be an AWS partition name such as 'aws', not {partition!r}")
    writable_dir(out, "--out")
    s = get_settings()
    plan = plan_deployment(get_policy(), table_prefix=s.table_prefix)
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
        print_json({"policies": files, "gaps": list(GAPS)})
        return
    con = console()
    for f in files:
        con.print(f"wrote {esc(f['file'])}: {f['statements']} statements, {f['chars']} chars")
    con.print("[bold]not expressible in IAM[/] (see the README):", markup=True)
    for gap in GAPS:
        con.print(f"- {esc(gap)}")


# --- regionkit config ---------------------------------------------------------------------
