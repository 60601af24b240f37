"""IAM policy statements derived from the deployment plan, as plain JSON.

Pure Python (no ``aws_cdk``): the CDK constructs turn these with
``PolicyStatement.from_json``, and the tests and the audit can read the very same
statements with a concrete partition and account.

``partition`` and ``account`` are strings: literal values (``"aws"``,
``"123456789012"``) or CDK tokens (``Aws.PARTITION``, ``Aws.ACCOUNT_ID``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from residency.deployment import DeploymentPlan, TableSpec

__all__ = [
    "DATA_READ",
    "DATA_WRITE",
    "KMS_VIA_DYNAMODB",
    "MANAGED_POLICY_MAX_CHARS",
    "WILDCARD_REASONS",
    "detector_statements",
    "fis_statements",
    "pack_statements",
    "service_access_statements",
    "table_arn",
]

Statement = dict[str, Any]

DATA_READ = [
    "dynamodb:BatchGetItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:Query",
]
DATA_WRITE = [
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
]
STREAM_READ = [
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
]
#: What a principal needs on a table's customer-managed key to use the table.
KMS_VIA_DYNAMODB = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"]
#: What the FIS pause-replication action does: it adds, then removes, a resource-policy
#: statement that denies the replication service-linked role.
FIS_PAUSE_REPLICATION = [
    "dynamodb:DeleteResourcePolicy",
    "dynamodb:DescribeTable",
    "dynamodb:GetResourcePolicy",
    "dynamodb:PutResourcePolicy",
]
#: Why a statement of this module holds a wildcard resource (by ``Sid``); cdk-nag's
#: IAM5 findings on them are acknowledged with these reasons.
WILDCARD_REASONS = {
    "TableKeys": (
        "KMS key ARNs end in a random key id, and an alias cannot be the Resource of a key "
        "permission; the statement covers the keys of named regions only, narrowed to the "
        "tables' aliases (kms:ResourceAliases) and to use through DynamoDB (kms:ViaService)."
    ),
    "ReadStreams": (
        "A stream ARN ends in a label (its creation time) that exists only after deploy; "
        "the wildcard covers the streams of one named table in one region."
    ),
    "ListStreams": (
        "dynamodb:ListStreams has no resource-level permissions; the Lambda stream poller needs it."
    ),
    "PauseReplication": (
        "FIS's pause adds its deny statement to each target table's stream policy too, and a "
        "stream ARN ends in a label (its creation time) that exists only after deploy; the "
        "wildcard covers the streams of the named tables in one region."
    ),
    "ResolveTargetsByTag": (
        "tag:GetResources, which FIS uses to resolve tag-selected targets, has no "
        "resource-level permissions; the DynamoDB actions name each table."
    ),
}
#: IAM's limit on a managed policy document, in characters without whitespace.
MANAGED_POLICY_MAX_CHARS = 6144


def table_arn(partition: str, region: str, account: str, table: str) -> str:
    return f"arn:{partition}:dynamodb:{region}:{account}:table/{table}"


def _sid(*parts: str) -> str:
    return "".join(re.sub(r"[^A-Za-z0-9]", "", p.title()) for p in parts)


def _kms_statement(
    sid: str, tables: list[TableSpec], regions: list[str], partition: str, account: str
) -> Statement:
    """Use of the tables' keys, only through DynamoDB, only in ``regions``.

    KMS keys are regional and their ARNs hold a random id; an alias cannot be a
    ``Resource`` of a key permission. So the resource is every key of the region,
    narrowed by the aliases the keys carry and by ``kms:ViaService``.
    """
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": KMS_VIA_DYNAMODB,
        "Resource": [f"arn:{partition}:kms:{r}:{account}:key/*" for r in regions],
        "Condition": {
            "StringEquals": {"kms:ViaService": [f"dynamodb.{r}.amazonaws.com" for r in regions]},
            "ForAnyValue:StringEquals": {
                "kms:ResourceAliases": sorted({t.key_alias for t in tables})
            },
        },
    }


def service_access_statements(
    plan: DeploymentPlan, *, partition: str, account: str, jurisdiction: str | None = None
) -> list[Statement]:
    """What a service using the router needs: the data tables, each only where it lives.

    * a pinned table: one statement per jurisdiction, on that jurisdiction's replica
      ARNs only, and only for requests to its regions (``aws:RequestedRegion``);
    * a global data class (the directory too): read and write on every replica;
    * the keys of those tables, through DynamoDB only.

    With ``jurisdiction``: the policy of that jurisdiction's service roles. Only its own
    pinned tables are granted, and explicit ``Deny`` statements
    (:func:`infra.guardrails.jurisdiction_deny_statements`) refuse every pinned table in
    any region outside it, whatever else the role holds.
    """
    statements: list[Statement] = []
    data_tables = [
        t
        for t in plan.tables
        if t.kind != "system"
        and (jurisdiction is None or t.kind != "pinned" or t.jurisdiction == jurisdiction)
    ]
    for t in data_tables:
        arns = [table_arn(partition, r, account, t.table_name) for r in t.regions]
        stmt: Statement = {
            "Sid": _sid("data", t.key),
            "Effect": "Allow",
            "Action": DATA_READ + DATA_WRITE,
            "Resource": arns,
        }
        if t.kind == "pinned":
            stmt["Condition"] = {"StringEquals": {"aws:RequestedRegion": list(t.regions)}}
        statements.append(stmt)
    regions = [r for r in plan.regions if any(r in t.regions for t in data_tables)]
    statements.append(_kms_statement("TableKeys", data_tables, regions, partition, account))
    if jurisdiction is not None:
        from infra.guardrails import jurisdiction_deny_statements

        statements += jurisdiction_deny_statements(
            plan, jurisdiction, partition=partition, account=account
        )
    return statements


def detector_statements(
    plan: DeploymentPlan, region: str, *, partition: str, account: str
) -> list[Statement]:
    """The conflict detector of ``region``: its streams, repairs, the conflict log and the
    lineage table there."""
    watched = plan.detector_tables(region)
    log = plan.conflict_log(region)
    statements: list[Statement] = [
        {
            "Sid": "ReadStreams",
            "Effect": "Allow",
            "Action": STREAM_READ,
            # A stream ARN ends in a label (its creation time) unknown until deploy.
            "Resource": [
                f"{table_arn(partition, region, account, t.table_name)}/stream/*" for t in watched
            ],
        },
        {
            # Lambda's stream poller lists streams; ListStreams has no resource type.
            "Sid": "ListStreams",
            "Effect": "Allow",
            "Action": ["dynamodb:ListStreams"],
            "Resource": ["*"],
        },
        {
            # Repairs and merges are conditional puts (regions.conflicts).
            "Sid": "RepairItems",
            "Effect": "Allow",
            "Action": ["dynamodb:PutItem"],
            "Resource": [table_arn(partition, region, account, t.table_name) for t in watched],
        },
    ]
    used = list(watched)
    lineage = plan.lineage(region)
    if lineage is not None:
        statements.append(
            {
                # The parents of writes that originated here go out, those of writes
                # replicated here are read (regions.lineage): batches only.
                "Sid": "ShareLineage",
                "Effect": "Allow",
                "Action": ["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"],
                "Resource": [table_arn(partition, region, account, lineage.table_name)],
            }
        )
        used.append(lineage)
    if log is not None:
        statements.append(
            {
                # One conditional put per conflict (attribute_not_exists), never a read.
                "Sid": "WriteConflictLog",
                "Effect": "Allow",
                "Action": ["dynamodb:PutItem"],
                "Resource": [table_arn(partition, region, account, log.table_name)],
            }
        )
        used.append(log)
    statements.append(_kms_statement("TableKeys", used, [region], partition, account))
    return statements


def fis_statements(
    plan: DeploymentPlan, region: str, *, partition: str, account: str
) -> list[Statement]:
    """Least privilege for ``aws:dynamodb:global-table-pause-replication`` in ``region``.

    For a multi-Region eventually consistent table, FIS appends its deny statement to
    the table's resource policy *and* to its stream's (FIS actions reference), so the
    resource-policy actions cover ``table/<name>/stream/*`` as well.
    """
    tables = [table_arn(partition, region, account, t.table_name) for t in plan.fis_targets(region)]
    return [
        {
            "Sid": "PauseReplication",
            "Effect": "Allow",
            "Action": FIS_PAUSE_REPLICATION,
            "Resource": [r for arn in tables for r in (arn, f"{arn}/stream/*")],
        },
        {
            # FIS resolves tag-selected targets through the Resource Groups Tagging
            # API, which has no resource-level permissions.
            "Sid": "ResolveTargetsByTag",
            "Effect": "Allow",
            "Action": ["tag:GetResources"],
            "Resource": ["*"],
        },
    ]


def pack_statements(
    statements: list[Statement], *, limit: int = MANAGED_POLICY_MAX_CHARS - 200
) -> list[list[int]]:
    """Group statements (by index) into documents that each fit one managed policy.

    Render ``statements`` with a concrete partition and account (``"aws"``,
    ``"123456789012"``) so their sizes are the deployed sizes; IAM counts
    characters without whitespace.
    """
    groups: list[list[int]] = [[]]
    used = 0
    for i, stmt in enumerate(statements):
        size = len(json.dumps(stmt, separators=(",", ":"))) + 1
        if groups[-1] and used + size > limit:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += size
    return groups
