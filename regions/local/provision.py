"""Create every table of a policy in exactly the regions the policy places it.

=========================  ==============================================================
table                      regions
=========================  ==============================================================
global data class          its ``replicas`` (one global table)
pinned data class          every region, each jurisdiction's regions forming their own
                           replica set; the same table name everywhere
the directory              a global data class (``policy.system.directory``)
the conflict log           every region (``policy.system.conflict_log_table``, key ``pk``)
the detectors' lineage     every replica region of a global class, one global table
                           (``policy.system.lineage_table``, key ``pk``; regions.lineage)
=========================  ==============================================================

Every table gets what the policy's ``targets.audit`` asks for, so a fresh cluster
passes the compliance audit: a stream (``NEW_AND_OLD_IMAGES``, always, since
replication reads it), point-in-time recovery, SSE with a customer-managed KMS key
created in that region (alias ``alias/regionkit-<table>``; KMS keys are strictly
regional), deletion protection, TTL on ``expires_at``, and the tags
``regionkit:data-class``, ``regionkit:jurisdiction`` (the jurisdiction for a
pinned table, ``global`` otherwise), ``regionkit:policy`` and
``DisruptDynamoDb=Allowed`` (the tag FIS's cross-region scenario targets).

Provisioning is idempotent (an existing table is brought up to the same state,
never recreated) and runs one thread per region.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from residency.clients import ClientProvider
from residency.errors import ClusterError
from residency.logs import get_logger
from residency.policy import Policy
from residency.tables import (
    CONFLICT_LOG,
    TablePlan,
    expected_tags,
    plan_tables,
)
from residency.tables import TTL_ATTRIBUTE as TABLE_TTL_ATTRIBUTE

__all__ = [
    "CONFLICT_LOG_DATA_CLASS",
    "TTL_ATTRIBUTE",
    "ProvisionReport",
    "TablePlan",
    "kms_alias",
    "plan_tables",
    "provision",
    "table_tags",
]

log = get_logger("regionkit.local.provision")

TTL_ATTRIBUTE = TABLE_TTL_ATTRIBUTE  # one name for provisioning, the CDK app and tombstones
CONFLICT_LOG_DATA_CLASS = CONFLICT_LOG  # kept for importers of this module


def kms_alias(table: str) -> str:
    return f"alias/regionkit-{table}"


def table_tags(policy: Policy, plan: TablePlan, region: str) -> dict[str, str]:
    """The audit's expected tags, plus the FIS opt-in and the system-table marker."""
    tags = expected_tags(policy, plan, region)
    tags["DisruptDynamoDb"] = "Allowed"
    if plan.kind == "system":
        tags["regionkit:system"] = plan.data_class
    elif plan.is_directory:
        tags["regionkit:system"] = "directory"
    return tags


@dataclass
class ProvisionReport:
    tables: dict[str, list[str]] = field(default_factory=dict)  # region -> tables there
    created: int = 0
    existing: int = 0
    seconds: float = 0.0


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", type(exc).__name__))
    return type(exc).__name__


class _RegionProvisioner:
    def __init__(self, policy: Policy, clients: ClientProvider, region: str) -> None:
        self.policy = policy
        self.region = region
        self.ddb = clients.client("dynamodb", region)
        self.kms = clients.client("kms", region)
        self.audit = policy.targets.audit
        self._aliases: dict[str, str] | None = None
        self.created = 0
        self.existing = 0

    def _call(self, what: str, table: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            if _code(exc) in {"ResourceInUseException"}:
                raise
            raise ClusterError(
                message=f"provisioning {table} in {self.region}: {what} failed: {_code(exc)}: {exc}"
            ) from exc

    def _key_arn(self, plan: TablePlan, tags: dict[str, str]) -> str:
        alias = kms_alias(plan.table)
        if self._aliases is None:
            self._aliases = {}
            pages = self.kms.get_paginator("list_aliases").paginate()
            for page in pages:
                for a in page.get("Aliases", []):
                    if "TargetKeyId" in a:
                        self._aliases[a["AliasName"]] = a["TargetKeyId"]
        key_id = self._aliases.get(alias)
        if key_id is not None:
            meta = self._call("describe_key", plan.table, self.kms.describe_key, KeyId=key_id)
            return str(meta["KeyMetadata"]["Arn"])
        meta = self._call(
            "create_key",
            plan.table,
            self.kms.create_key,
            Description=f"regionkit: SSE key of table {plan.table} in {self.region}",
            KeyUsage="ENCRYPT_DECRYPT",
            Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()],
        )["KeyMetadata"]
        self._call(
            "create_alias",
            plan.table,
            self.kms.create_alias,
            AliasName=alias,
            TargetKeyId=meta["KeyId"],
        )
        self._aliases[alias] = meta["KeyId"]
        return str(meta["Arn"])

    def table(self, plan: TablePlan) -> None:
        tags = table_tags(self.policy, plan, self.region)
        key_arn = self._key_arn(plan, tags) if self.audit.customer_managed_kms else None
        stream = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        sse = {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_arn}
        args: dict[str, Any] = {
            "TableName": plan.table,
            **plan.create_args(),  # keys, attribute definitions, secondary indexes
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": stream,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        if key_arn:
            args["SSESpecification"] = sse
        if self.audit.deletion_protection:
            args["DeletionProtectionEnabled"] = True
        try:
            self._call("create_table", plan.table, self.ddb.create_table, **args)
        except Exception as exc:
            if _code(exc) != "ResourceInUseException":
                raise
            self.existing += 1
            self._converge(plan, args, key_arn, tags)
        else:
            self.created += 1
            self._ttl(plan, fresh=True)
            self._pitr(plan, fresh=True)

    def _converge(
        self, plan: TablePlan, args: dict[str, Any], key_arn: str | None, tags: dict[str, str]
    ) -> None:
        """Bring an existing table to the planned state without recreating it."""
        desc = self._call(
            "describe_table", plan.table, self.ddb.describe_table, TableName=plan.table
        )["Table"]
        have = {(k["AttributeName"], k["KeyType"]) for k in desc["KeySchema"]}
        want = {(k["AttributeName"], k["KeyType"]) for k in args["KeySchema"]}
        if have != want:
            raise ClusterError(
                message=f"table {plan.table} in {self.region} exists with key schema "
                f"{sorted(have)}, but the policy asks for {sorted(want)}; use another "
                "table_prefix or a fresh cluster"
            )
        update: dict[str, Any] = {}
        have_ix = {i["IndexName"] for i in desc.get("GlobalSecondaryIndexes") or []}
        missing = [
            g for g in args.get("GlobalSecondaryIndexes", []) if g["IndexName"] not in have_ix
        ]
        if missing:  # one GSI per UpdateTable, as DynamoDB allows: the first now, the rest next run
            update["AttributeDefinitions"] = args["AttributeDefinitions"]
            update["GlobalSecondaryIndexUpdates"] = [{"Create": missing[0]}]
        spec = desc.get("StreamSpecification") or {}
        if not spec.get("StreamEnabled") or spec.get("StreamViewType") != "NEW_AND_OLD_IMAGES":
            update["StreamSpecification"] = args["StreamSpecification"]
        sse = desc.get("SSEDescription") or {}
        if key_arn and (sse.get("SSEType") != "KMS" or sse.get("KMSMasterKeyArn") != key_arn):
            update["SSESpecification"] = args["SSESpecification"]
        if self.audit.deletion_protection and not desc.get("DeletionProtectionEnabled"):
            update["DeletionProtectionEnabled"] = True
        if update:
            self._call(
                "update_table", plan.table, self.ddb.update_table, TableName=plan.table, **update
            )
        self._call(
            "tag_resource",
            plan.table,
            self.ddb.tag_resource,
            ResourceArn=desc["TableArn"],
            Tags=args["Tags"],
        )
        self._ttl(plan, fresh=False)
        self._pitr(plan, fresh=False)

    def _ttl(self, plan: TablePlan, *, fresh: bool) -> None:
        if not fresh:
            ttl = self._call(
                "describe_time_to_live",
                plan.table,
                self.ddb.describe_time_to_live,
                TableName=plan.table,
            )["TimeToLiveDescription"]
            if ttl.get("TimeToLiveStatus") in {"ENABLED", "ENABLING"}:
                return
        self._call(
            "update_time_to_live",
            plan.table,
            self.ddb.update_time_to_live,
            TableName=plan.table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )

    def _pitr(self, plan: TablePlan, *, fresh: bool) -> None:
        if not self.audit.pitr:
            return
        if not fresh:
            desc = self._call(
                "describe_continuous_backups",
                plan.table,
                self.ddb.describe_continuous_backups,
                TableName=plan.table,
            )["ContinuousBackupsDescription"]
            status = desc.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
            if status == "ENABLED":
                return
        self._call(
            "update_continuous_backups",
            plan.table,
            self.ddb.update_continuous_backups,
            TableName=plan.table,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )


def provision(
    policy: Policy,
    clients: ClientProvider,
    *,
    table_prefix: str = "",
    regions: Iterable[str] | None = None,
) -> ProvisionReport:
    """Create (or converge) every table of ``policy`` in its regions, a thread per region.

    ``clients.client(service, region)`` must return boto3 clients for ``dynamodb``
    and ``kms`` in that region. ``regions`` limits the work to some regions.
    """
    started = time.perf_counter()
    plans = plan_tables(policy, table_prefix)
    wanted = set(policy.regions if regions is None else regions)
    by_region: dict[str, list[TablePlan]] = {
        r: [p for p in plans if r in p.regions] for r in policy.regions if r in wanted
    }

    def work(region: str) -> _RegionProvisioner:
        rp = _RegionProvisioner(policy, clients, region)
        for plan in by_region[region]:
            rp.table(plan)
        return rp

    report = ProvisionReport()
    with ThreadPoolExecutor(
        max_workers=max(1, len(by_region)), thread_name_prefix="regionkit-provision"
    ) as pool:
        futures = {region: pool.submit(work, region) for region in by_region}
        errors: list[str] = []
        first: BaseException | None = None
        for region, future in futures.items():
            try:
                rp = future.result()
            except Exception as exc:  # collect every region's failure, then raise one
                errors.append(str(getattr(exc, "message", exc)))
                first = first or exc
                continue
            report.tables[region] = [p.table for p in by_region[region]]
            report.created += rp.created
            report.existing += rp.existing
    if errors:
        raise ClusterError(message="; ".join(errors)) from first
    report.seconds = time.perf_counter() - started
    log.info(
        "provisioned",
        policy=policy.name,
        regions=len(report.tables),
        created=report.created,
        existing=report.existing,
        seconds=round(report.seconds, 3),
    )
    return report
