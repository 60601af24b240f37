"""Constructs for the data: per-region KMS keys, and the global tables themselves.

**KMS keys across regions.** A customer-managed key is strictly regional and a
global table needs one in every replica region. CloudFormation cannot reference
a resource of another region, so each key gets a deterministic alias
(:func:`residency.names.key_alias`, the same name in every region) and the table
stack names the replica keys by alias ARN
(``arn:<partition>:kms:<region>:<account>:alias/regionkit/<policy>/<table>``),
which DynamoDB accepts wherever it takes a key id. The keys stack of each region
is deployed before the tables stacks (a stack dependency, not a reference).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.tokens import partition_and_account
from residency import names as naming
from residency.deployment import CONFLICT_LOG_KEY, TableSpec
from residency.tables import INDEX_EXTRA, SUBJECT_INDEX, TTL_ATTRIBUTE

__all__ = ["RegionKeys", "ReplicatedTable", "alias_arn"]


def alias_arn(region: str, alias: str) -> str:
    """The ARN of ``alias`` in ``region`` of the deploying account (tokens for the rest)."""
    partition, account = partition_and_account()
    return f"arn:{partition}:kms:{region}:{account}:{alias}"


def _tags(spec: TableSpec) -> dict[str, str]:
    """The class and jurisdiction tags of a table and its keys (the policy tag is the
    whole app's: infra.app sets it once)."""
    tags = {
        # The audit expects the conflict log's class tag to be "conflict-log" everywhere.
        naming.TAG_DATA_CLASS: spec.data_class
        or (CONFLICT_LOG_KEY if spec.kind == "system" else spec.key),
        naming.TAG_JURISDICTION: spec.jurisdiction,
    }
    if spec.fis_target:
        tags[naming.DISRUPT_TAG] = naming.DISRUPT_TAG_VALUE
    return tags


class RegionKeys(Construct):
    """One customer-managed key (with its alias) per table replica in one region."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        policy_name: str,
        region: str,
        tables: list[TableSpec],
    ) -> None:
        super().__init__(scope, construct_id)
        self.keys: dict[str, kms.Key] = {}
        pending_window = cdk.Duration.days(30)
        for spec in tables:
            key = kms.Key(
                self,
                f"Key-{spec.key}",
                alias=spec.key_alias,
                description=(
                    f"regionkit {policy_name}: table {spec.table_name} "
                    f"({spec.jurisdiction}) in {region}"
                ),
                enable_key_rotation=True,
                pending_window=pending_window,
                # Deleting the key would make every backup of the table unreadable.
                removal_policy=cdk.RemovalPolicy.RETAIN,
            )
            tags = cdk.Tags.of(key)
            for name, value in _tags(spec).items():
                if name != naming.DISRUPT_TAG:
                    tags.add(name, value)
            self.keys[spec.key] = key


class ReplicatedTable(Construct):
    """A DynamoDB global table (``AWS::DynamoDB::GlobalTable``) with every protection on.

    Defined once, in the stack of the primary region; the other regions of
    ``spec`` become replicas. Streams carry new and old images (the conflict
    detector compares them), PITR and deletion protection are on in every
    replica, every replica is encrypted with its own region's customer-managed
    key, and the table survives the deletion of its stack.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: TableSpec,
        policy_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        table_key = kms.Alias.from_alias_name(self, "TableKey", spec.key_alias)
        tags = [cdk.CfnTag(key=k, value=v) for k, v in _tags(spec).items()]
        self.table = dynamodb.TableV2(
            self,
            "Table",
            table_name=spec.table_name,
            partition_key=dynamodb.Attribute(
                name=spec.partition_key, type=dynamodb.AttributeType.STRING
            ),
            sort_key=(
                dynamodb.Attribute(name=spec.sort_key, type=dynamodb.AttributeType.STRING)
                if spec.sort_key
                else None
            ),
            billing=dynamodb.Billing.on_demand(),
            dynamo_stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            # Tombstones (versioned deletes, move and erasure fences) expire through it.
            time_to_live_attribute=TTL_ATTRIBUTE,
            global_secondary_indexes=_gsis(spec) or None,
            local_secondary_indexes=_lsis(spec) or None,
            encryption=dynamodb.TableEncryptionV2.customer_managed_key(
                table_key,
                {r: alias_arn(r, spec.key_alias) for r in spec.replica_regions},
            ),
            # As properties, not through Tags.of: no round trip to the jsii process.
            tags=tags,
            replicas=[
                dynamodb.ReplicaTableProps(region=r, tags=tags) for r in spec.replica_regions
            ],
        )


def _projection(kind: str, attributes: list[str]) -> dict[str, Any]:
    """keys_only and include carry the version and tombstone kind (``INDEX_EXTRA``) too."""
    if kind == "all":
        return {"projection_type": dynamodb.ProjectionType.ALL}
    return {
        "projection_type": dynamodb.ProjectionType.INCLUDE,
        "non_key_attributes": [*attributes, *INDEX_EXTRA],
    }


def _attr(name: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)


def _gsis(spec: TableSpec) -> list[dynamodb.GlobalSecondaryIndexPropsV2]:
    out = []
    if spec.subject_attribute:
        out.append(
            dynamodb.GlobalSecondaryIndexPropsV2(
                index_name=SUBJECT_INDEX,
                partition_key=_attr(spec.subject_attribute),
                **_projection("include", []),
            )
        )
    for ix in spec.indexes:
        if ix.kind == "gsi":
            out.append(
                dynamodb.GlobalSecondaryIndexPropsV2(
                    index_name=ix.name,
                    partition_key=_attr(ix.partition_key),
                    sort_key=_attr(ix.sort_key) if ix.sort_key else None,
                    **_projection(ix.projection, list(ix.attributes)),
                )
            )
    return out


def _lsis(spec: TableSpec) -> list[dynamodb.LocalSecondaryIndexProps]:
    return [
        dynamodb.LocalSecondaryIndexProps(
            index_name=ix.name,
            sort_key=_attr(ix.sort_key),
            **_projection(ix.projection, list(ix.attributes)),
        )
        for ix in spec.indexes
        if ix.kind == "lsi"
    ]
