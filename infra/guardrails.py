"""Guardrails generated from the policy: the preventive half of the audit (issue 15, item 8).

Pure Python (no ``aws_cdk``). Two products, both plain IAM JSON:

* :func:`jurisdiction_deny_statements`: explicit ``Deny`` statements for the service
  roles of one jurisdiction, added to its managed policy beside the ``Allow`` ones
  (:func:`infra.access.service_access_statements`): every pinned table, in any region
  outside the jurisdiction, whatever another policy grants.
* :func:`guardrail_policies`: **service control policies** for the accounts (or OU)
  of the deployment, packed under the SCP size limit. For every pinned table
  (one per jurisdiction) they deny:

  ===================  ===========================================================
  ``ReplicaOutside``   ``dynamodb:CreateTableReplica`` / ``AssociateTableReplica``
                       of the table name in any region of no jurisdiction of the
                       policy (unconditional), and, for a request made in the
                       jurisdiction's own regions, in any other jurisdiction's
                       regions (``aws:RequestedRegion`` is the source region)
  ``RestoreOutside``   ``dynamodb:RestoreTableToPointInTime`` /
                       ``RestoreTableFromBackup`` of the jurisdiction's replicas or
                       backups by a request to any region outside it (a restore is
                       requested in the *target* region)
  ``ExportPinned``     ``dynamodb:ExportTableToPointInTime`` of the jurisdiction's
                       replicas, except by the principals named (the audit's
                       export role): IAM has no condition key for the export's
                       destination bucket or its region
  ``BackupCopyOut``    ``backup:CopyFromBackupVault`` (``StartCopyJob``) of a recovery
                       point in the jurisdiction's regions into a vault outside them
                       (``backup:CopyTargets``). AWS Backup restores a recovery point
                       only in the region it is in, so this also closes the
                       ``dynamodb:RestoreTableFromAwsBackup`` path across the border
  ===================  ===========================================================

Every action and condition key was checked against the Service Authorization
Reference (``dynamodb:CreateTableReplica``, ``AssociateTableReplica``,
``RestoreTableToPointInTime``, ``RestoreTableFromBackup``, ``ExportTableToPointInTime``;
``backup:CopyFromBackupVault`` with ``backup:CopyTargets`` (ArrayOfARN);
``aws:RequestedRegion``, ``aws:PrincipalArn``); the tests lint the documents with
cfn-lint's IAM rules (E3510, W3037). What IAM cannot express is listed in
:data:`GAPS`, for the README.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from residency.aws_regions import AWS_REGIONS
from residency.deployment import DeploymentPlan, TableSpec

__all__ = [
    "GAPS",
    "SCP_MAX_CHARS",
    "Statement",
    "guardrail_policies",
    "guardrail_statements",
    "jurisdiction_deny_statements",
    "minified",
    "region_globs",
]

Statement = dict[str, Any]

#: AWS Organizations' limit on one service (or resource) control policy, in characters.
SCP_MAX_CHARS = 5120

REPLICA_ACTIONS = ["dynamodb:AssociateTableReplica", "dynamodb:CreateTableReplica"]
RESTORE_ACTIONS = ["dynamodb:RestoreTableFromBackup", "dynamodb:RestoreTableToPointInTime"]
EXPORT_ACTIONS = ["dynamodb:ExportTableToPointInTime"]
#: ``CopyFromBackupVault`` is the action StartCopyJob is authorized by; ``StartCopyJob``
#: is the older name some policies still use, kept so both are denied.
BACKUP_COPY_ACTIONS = ["backup:CopyFromBackupVault", "backup:StartCopyJob"]

#: What IAM cannot express, so the guardrails cannot prevent (the README lists them).
GAPS: tuple[str, ...] = (
    "Export destination: dynamodb:ExportTableToPointInTime has no condition key for the "
    "S3 bucket or its region, so exports of pinned tables are denied to everyone but the "
    "named principals; a named principal can still export to a bucket anywhere (scope its "
    "s3:PutObject to the jurisdiction's buckets).",
    "Replica destination vs. source: a pinned table shares its name across jurisdictions, "
    "and CreateTableReplica is authorized on the new replica's ARN; only aws:RequestedRegion "
    "(the source region of the UpdateTable call) ties it to the source jurisdiction. Check "
    "once in a real account that a cross-jurisdiction replica is refused; until then the "
    "existing same-name table in the other jurisdiction's region and the audit "
    "(infra.replica_sets) are the backstop.",
    "Unknown future regions: replica denies name regions outside the jurisdictions by "
    "region-family globs (eu-*, ap-northeast-*, ...); a new region in a family the policy "
    "uses (ap-south-3 beside ap-south-1) is not covered until regionkit's region list knows it.",
    "AWS Backup: recovery points carry no table name in their ARN, so the copy deny covers "
    "every recovery point in the jurisdiction's regions (global data too) unless its vault "
    "policy allows otherwise.",
    "Items copied by a principal's own code (a Scan written elsewhere) are outside IAM's "
    "view; only the per-jurisdiction service policies' explicit denies and the audit's data "
    "checks address them.",
)


def minified(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=False)


def _family(region: str) -> str:
    return region.rsplit("-", 1)[0]


def region_globs(excluded: Iterable[str], known: Iterable[str] | None = None) -> list[str]:
    """Region globs for every known region except ``excluded``: a family none of whose
    regions is excluded is one glob (``eu-*``-like ``eu-west-*``), else its regions one by one."""
    skip = set(excluded)
    families: dict[str, list[str]] = {}
    for r in sorted(set(known if known is not None else AWS_REGIONS) | skip):
        families.setdefault(_family(r), []).append(r)
    out: list[str] = []
    for fam, regions in sorted(families.items()):
        if skip.isdisjoint(regions):
            out.append(f"{fam}-*")
        else:
            out.extend(r for r in regions if r not in skip)
    return out


def _table_arn(partition: str, region: str, table: str, account: str = "*") -> str:
    return f"arn:{partition}:dynamodb:{region}:{account}:table/{table}"


def _sid(*parts: str) -> str:
    return "".join(re.sub(r"[^A-Za-z0-9]", "", p.title()) for p in parts)


def _pinned(plan: DeploymentPlan) -> list[TableSpec]:
    return [t for t in plan.tables if t.kind == "pinned"]


def jurisdiction_deny_statements(
    plan: DeploymentPlan, jurisdiction: str, *, partition: str, account: str
) -> list[Statement]:
    """For the service roles of ``jurisdiction``: no request, of any kind, to a pinned table
    in a region outside it (an explicit Deny beats any Allow a role also holds)."""
    mine = [t for t in _pinned(plan) if t.jurisdiction == jurisdiction]
    if not mine:
        return []
    regions = sorted({r for t in mine for r in t.regions})
    names = sorted({t.table_name for t in _pinned(plan)})
    return [
        {
            "Sid": _sid("deny", "pinned", "outside", jurisdiction),
            "Effect": "Deny",
            "Action": ["dynamodb:*"],
            "Resource": [
                arn
                for n in names
                for arn in (
                    _table_arn(partition, "*", n, account),
                    f"{_table_arn(partition, '*', n, account)}/*",
                )
            ],
            "Condition": {"StringNotEquals": {"aws:RequestedRegion": regions}},
        }
    ]


def guardrail_statements(
    plan: DeploymentPlan,
    *,
    partition: str = "aws",
    export_principals: Iterable[str] = (),
    known_regions: Iterable[str] | None = None,
) -> list[Statement]:
    """Every SCP statement of the plan (see the module docstring), in a stable order."""
    known = sorted(set(known_regions if known_regions is not None else AWS_REGIONS))
    pinned = _pinned(plan)
    principals = sorted(set(export_principals))
    statements: list[Statement] = []
    # Replicas anywhere outside every jurisdiction: one statement per table name.
    by_name: dict[str, set[str]] = {}
    for t in pinned:
        by_name.setdefault(t.table_name, set()).update(t.regions)
    for name, allowed in sorted(by_name.items()):
        statements.append(
            {
                "Sid": _sid("deny", "replica", "outside", "jurisdictions", name),
                "Effect": "Deny",
                "Action": REPLICA_ACTIONS,
                "Resource": [_table_arn(partition, g, name) for g in region_globs(allowed, known)],
            }
        )
    for t in pinned:
        j, regions = t.jurisdiction, sorted(t.regions)
        others = sorted(by_name[t.table_name] - set(regions))
        if others:
            statements.append(
                {
                    "Sid": _sid("deny", "replica", "from", j, t.table_name),
                    "Effect": "Deny",
                    "Action": REPLICA_ACTIONS,
                    "Resource": [_table_arn(partition, r, t.table_name) for r in others],
                    "Condition": {"StringEquals": {"aws:RequestedRegion": regions}},
                }
            )
        statements.append(
            {
                "Sid": _sid("deny", "restore", "outside", j, t.table_name),
                "Effect": "Deny",
                "Action": RESTORE_ACTIONS,
                "Resource": [
                    arn
                    for r in regions
                    for arn in (
                        _table_arn(partition, r, t.table_name),
                        f"{_table_arn(partition, r, t.table_name)}/backup/*",
                    )
                ],
                "Condition": {"StringNotEquals": {"aws:RequestedRegion": regions}},
            }
        )
        export: Statement = {
            "Sid": _sid("deny", "export", j, t.table_name),
            "Effect": "Deny",
            "Action": EXPORT_ACTIONS,
            "Resource": [_table_arn(partition, r, t.table_name) for r in regions],
        }
        if principals:
            export["Condition"] = {"ArnNotLike": {"aws:PrincipalArn": principals}}
        statements.append(export)
        statements.append(
            {
                "Sid": _sid("deny", "backup", "copy", "out", j, t.table_name),
                "Effect": "Deny",
                "Action": BACKUP_COPY_ACTIONS,
                "Resource": [
                    arn
                    for r in regions
                    for arn in (
                        f"arn:{partition}:backup:{r}:*:recovery-point:*",
                        f"{_table_arn(partition, r, t.table_name)}/backup/*",
                    )
                ],
                "Condition": {
                    "ForAnyValue:ArnNotLike": {
                        "backup:CopyTargets": [
                            f"arn:{partition}:backup:{r}:*:backup-vault:*" for r in regions
                        ]
                    }
                },
            }
        )
    return statements


def guardrail_policies(
    plan: DeploymentPlan,
    *,
    partition: str = "aws",
    export_principals: Iterable[str] = (),
    known_regions: Iterable[str] | None = None,
    limit: int = SCP_MAX_CHARS,
) -> list[dict[str, Any]]:
    """The SCP documents: every statement of :func:`guardrail_statements`, packed in order
    into documents of at most ``limit`` characters (minified, as Organizations counts)."""
    statements = guardrail_statements(
        plan, partition=partition, export_principals=export_principals, known_regions=known_regions
    )
    empty = len(minified({"Version": "2012-10-17", "Statement": []}))
    docs: list[list[Statement]] = [[]]
    used = empty
    for stmt in statements:
        size = len(minified(stmt)) + 1
        if empty + size > limit:
            raise ValueError(f"statement {stmt['Sid']} alone exceeds the SCP limit ({limit})")
        if docs[-1] and used + size > limit:
            docs.append([])
            used = empty
        docs[-1].append(stmt)
        used += size
    return [{"Version": "2012-10-17", "Statement": d} for d in docs if d]
