"""Issue 15 item 8: guardrails generated from the policy, judged by what they refuse.

A small evaluator of explicit Deny statements (the operators the guardrails use)
replays the requests a leak would make; cfn-lint's IAM rules (E3510, W3037: the
grammar, and that every action exists) check the documents; the SCP size limit is
checked on the minified JSON.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from infra.access import service_access_statements
from infra.guardrails import (
    GAPS,
    SCP_MAX_CHARS,
    guardrail_policies,
    jurisdiction_deny_statements,
    minified,
    region_globs,
)
from residency.aws_regions import AWS_REGIONS
from residency.deployment import DeploymentPlan, plan_deployment
from residency.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "111122223333"
AUDIT = f"arn:aws:iam::{ACCOUNT}:role/regionkit-audit-export"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(ROOT / "policies" / "social-network.yaml")


@pytest.fixture(scope="module")
def plan(policy: Policy) -> DeploymentPlan:
    return plan_deployment(policy)


@pytest.fixture(scope="module")
def scps(plan: DeploymentPlan) -> list[dict[str, Any]]:
    return guardrail_policies(plan, export_principals=["arn:aws:iam::*:role/regionkit-audit-*"])


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _condition_holds(cond: dict[str, Any], ctx: dict[str, Any]) -> bool:
    for op, keys in cond.items():
        for key, raw in keys.items():
            values = _list(ctx.get(key, []))
            wanted = _list(raw)
            if op == "StringEquals":
                ok = any(v in wanted for v in values)
            elif op == "StringNotEquals":
                ok = bool(values) and all(v not in wanted for v in values)
            elif op == "ArnNotLike":
                ok = bool(values) and all(
                    not any(fnmatchcase(v, w) for w in wanted) for v in values
                )
            elif op == "ForAnyValue:ArnNotLike":
                ok = any(not any(fnmatchcase(v, w) for w in wanted) for v in values)
            else:
                raise AssertionError(f"the evaluator does not know {op}")
            if not ok:
                return False
    return True


def denied(statements: list[dict[str, Any]], action: str, resource: str, **ctx: Any) -> bool:
    for s in statements:
        assert s["Effect"] == "Deny"
        if not any(fnmatchcase(action, a) for a in _list(s["Action"])):
            continue
        if not any(fnmatchcase(resource, r) for r in _list(s["Resource"])):
            continue
        if _condition_holds(s.get("Condition", {}), ctx):
            return True
    return False


def _all(scps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for d in scps for s in d["Statement"]]


def table(region: str, name: str = "profiles") -> str:
    return f"arn:aws:dynamodb:{region}:{ACCOUNT}:table/{name}"


def test_every_scp_fits_the_size_limit(scps: list[dict[str, Any]]) -> None:
    assert scps and all(len(minified(d)) <= SCP_MAX_CHARS for d in scps)
    assert len(scps) <= 5  # Organizations attaches at most five SCPs to one target
    sids = [s["Sid"] for s in _all(scps)]
    assert len(sids) == len(set(sids))


def test_replicas_of_a_pinned_table_stay_in_its_jurisdiction(
    scps: list[dict[str, Any]], policy: Policy
) -> None:
    st = _all(scps)
    act = "dynamodb:CreateTableReplica"
    # India's profiles, replica requested from Mumbai: Hyderabad yes, Frankfurt or Ohio no.
    assert not denied(st, act, table("ap-south-2"), **{"aws:RequestedRegion": "ap-south-1"})
    assert denied(st, act, table("eu-central-1"), **{"aws:RequestedRegion": "ap-south-1"})
    assert denied(st, act, table("us-east-2"), **{"aws:RequestedRegion": "ap-south-1"})
    assert denied(st, "dynamodb:AssociateTableReplica", table("me-central-1"))
    # Every jurisdiction's own replica sets still deploy (the CDK adds them one by one).
    for j in policy.jurisdictions.values():
        for src in j.regions:
            for dst in j.regions:
                assert not denied(st, act, table(dst), **{"aws:RequestedRegion": src})
    # Global tables are not touched.
    assert not denied(
        st, act, table("us-east-2", "content"), **{"aws:RequestedRegion": "ap-south-1"}
    )


def test_restores_stay_in_the_jurisdiction(scps: list[dict[str, Any]]) -> None:
    st = _all(scps)
    for act in ("dynamodb:RestoreTableToPointInTime", "dynamodb:RestoreTableFromBackup"):
        src = table("ap-south-1") if "Point" in act else f"{table('ap-south-1')}/backup/0123"
        assert denied(st, act, src, **{"aws:RequestedRegion": "eu-west-1"})
        assert not denied(st, act, src, **{"aws:RequestedRegion": "ap-south-2"})
    assert not denied(
        st,
        "dynamodb:RestoreTableToPointInTime",
        table("eu-west-1", "content"),
        **{"aws:RequestedRegion": "us-east-1"},
    )


def test_exports_of_pinned_tables_only_by_the_named_principals(
    scps: list[dict[str, Any]],
) -> None:
    st = _all(scps)
    act = "dynamodb:ExportTableToPointInTime"
    assert not denied(st, act, table("sa-east-1"), **{"aws:PrincipalArn": AUDIT})
    other = f"arn:aws:iam::{ACCOUNT}:role/analytics"
    assert denied(st, act, table("sa-east-1"), **{"aws:PrincipalArn": other})
    assert not denied(st, act, table("sa-east-1", "content"), **{"aws:PrincipalArn": other})


def test_backup_copies_stay_in_the_jurisdiction(scps: list[dict[str, Any]]) -> None:
    st = _all(scps)
    rp = f"arn:aws:backup:eu-central-1:{ACCOUNT}:recovery-point:1EB3B5E7"
    inside = f"arn:aws:backup:eu-west-1:{ACCOUNT}:backup-vault:dr"
    outside = f"arn:aws:backup:us-east-1:{ACCOUNT}:backup-vault:dr"
    for act in ("backup:CopyFromBackupVault", "backup:StartCopyJob"):
        assert denied(st, act, rp, **{"backup:CopyTargets": [outside]})
        assert denied(st, act, rp, **{"backup:CopyTargets": [inside, outside]})
        assert not denied(st, act, rp, **{"backup:CopyTargets": [inside]})


def test_service_roles_of_a_jurisdiction_cannot_reach_other_pinned_tables(
    plan: DeploymentPlan, policy: Policy
) -> None:
    for jid, j in policy.jurisdictions.items():
        deny = jurisdiction_deny_statements(plan, jid, partition="aws", account=ACCOUNT)
        for region in policy.regions:
            for act in ("dynamodb:GetItem", "dynamodb:Scan", "dynamodb:PutItem"):
                refused = denied(deny, act, table(region), **{"aws:RequestedRegion": region})
                assert refused == (region not in j.regions), (jid, region, act)
        # The same role keeps the global tables everywhere.
        assert not denied(
            deny,
            "dynamodb:GetItem",
            table("us-east-1", "content"),
            **{"aws:RequestedRegion": "us-east-1"},
        )
        allow = service_access_statements(plan, partition="aws", account=ACCOUNT, jurisdiction=jid)
        assert deny[0] in allow  # the allow policy carries the deny beside its grants
        granted = {
            a.split(":")[3]
            for s in allow
            if s["Effect"] == "Allow"
            for a in _list(s["Resource"])
            if a.endswith("table/profiles")
        }
        assert granted == set(j.regions)


def test_region_globs_cover_exactly_the_other_regions() -> None:
    keep = {"ap-south-1", "eu-west-1"}
    globs = region_globs(keep)
    for r in AWS_REGIONS:
        assert any(fnmatchcase(r, g) for g in globs) == (r not in keep), r
    assert "ap-southeast-*" in globs and "ap-south-2" in globs and "eu-west-2" in globs


def test_cfn_lint_accepts_every_document(
    scps: list[dict[str, Any]], plan: DeploymentPlan, tmp_path: Path
) -> None:
    """E3510 validates identity-policy grammar, W3037 that each action exists."""
    from cfnlint.api import ManualArgs, lint_by_config

    docs = list(scps) + [
        {
            "Version": "2012-10-17",
            "Statement": service_access_statements(
                plan, partition="aws", account=ACCOUNT, jurisdiction=jid
            ),
        }
        for jid in sorted({t.jurisdiction for t in plan.tables if t.kind == "pinned"})
    ]
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            f"Guardrail{i}": {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {"PolicyDocument": d},
            }
            for i, d in enumerate(docs)
        },
    }
    path = tmp_path / "guardrails.template.json"
    path.write_text(json.dumps(template), encoding="utf-8")
    config = ManualArgs(templates=[str(path)], regions=["us-east-1"])
    findings = [f"{m.rule.id} {m.message}" for m in lint_by_config(config) if m.rule.id[0] in "EW"]
    assert findings == []


def test_gaps_are_named() -> None:
    assert len(GAPS) >= 3 and all(g.endswith(".") for g in GAPS)


def test_cli_writes_the_guardrails(tmp_path: Path) -> None:
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "regionkit"
    proc = subprocess.run(
        [
            str(exe),
            "--policy",
            str(ROOT / "policies" / "social-network.yaml"),
            "infra",
            "guardrails",
            "--out",
            str(tmp_path / "scp"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["gaps"] == list(GAPS)
    for f in out["policies"]:
        doc = json.loads(Path(f["file"]).read_text(encoding="utf-8"))
        assert len(minified(doc)) == f["chars"] <= SCP_MAX_CHARS
