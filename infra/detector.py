"""The conflict detector of one region: a Lambda on the stream of every local replica.

DynamoDB resolves concurrent cross-region writes silently (last writer wins) and
records nothing; the detector reads each replica's stream (new and old images)
and writes what it finds to the conflict log. It runs in *every* replica region
of every global data class, because each replica has its own stream.

**Stream ARNs across regions.** ``AWS::DynamoDB::GlobalTable`` returns the stream
ARN of the primary replica only, and a stream ARN ends in a creation-time label,
so the replica's ARN cannot be built either (``TableV2.replica(region)
.table_stream_arn`` is the IAM wildcard ``.../stream/*``, fine for a policy but
not for an event source mapping). Each regional stack therefore reads
``Table.LatestStreamArn`` with ``DescribeTable`` *in its own region* through an
``AwsCustomResource``, after the tables stack has created the replica (a stack
dependency), and points the event source mapping at it.
"""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra import access
from infra.asset import POLICY_FILE, lambda_platform
from infra.iam import policy_document
from infra.nag import NAG_ACCOUNT, NAG_PARTITION, acknowledge, acknowledge_wildcards
from infra.tokens import partition_and_account
from residency import names as naming
from residency.deployment import DeploymentPlan

__all__ = ["HANDLER", "ConflictDetector"]

HANDLER = "regions.detector_lambda.handler"
_ARCHITECTURES = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}


def _platform() -> tuple[lambda_.Runtime, lambda_.Architecture]:
    """The runtime and architecture of the machine the asset's packages come from
    (:mod:`infra.asset` bundles pydantic-core built for it)."""
    runtime, arch = lambda_platform()
    return lambda_.Runtime(runtime, lambda_.RuntimeFamily.PYTHON), _ARCHITECTURES[arch]


# A stream record older than this has not been looked at: conflicts go unseen meanwhile.
ITERATOR_AGE_ALARM_MS = 300_000
RETRY_ATTEMPTS = 5
# A replicated write whose parent's lineage entry has not arrived is waited for up to
# LINEAGE_WAIT_S per invocation (the function's timeout is 60 s), and retried; once its
# record is LINEAGE_MAX_AGE_S old it is logged as undetermined. Under the iterator-age
# alarm, and reached within the retries, so a missing entry never ends in the DLQ.
LINEAGE_WAIT_S = 45.0
LINEAGE_MAX_AGE_S = 240.0
assert (1 + RETRY_ATTEMPTS) * LINEAGE_WAIT_S > LINEAGE_MAX_AGE_S
assert LINEAGE_MAX_AGE_S * 1000 < ITERATOR_AGE_ALARM_MS


def _write_logs(log_group: logs.LogGroup) -> dict[str, object]:
    return {
        "Sid": "WriteOwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": log_group.log_group_arn,
    }


class ConflictDetector(Construct):
    """One function per region, one event source mapping per watched replica."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plan: DeploymentPlan,
        region: str,
        code_dir: Path,
    ) -> None:
        super().__init__(scope, construct_id)
        watched = plan.detector_tables(region)
        partition, account = partition_and_account()
        log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"regionkit {plan.policy_name} conflict detector in {region}",
            inline_policies={
                "detector": policy_document(
                    [
                        *access.detector_statements(
                            plan, region, partition=partition, account=account
                        ),
                        _write_logs(log_group),
                    ]
                )
            },
        )
        runtime, architecture = _platform()
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=naming.detector_function_name(plan.policy_name, region),
            description=f"regionkit {plan.policy_name}: detect replication conflicts in {region}",
            runtime=runtime,
            architecture=architecture,
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(code_dir)),
            role=role,
            log_group=log_group,
            memory_size=256,
            timeout=cdk.Duration.seconds(60),
            environment={
                "REGIONKIT_MODE": "aws",
                "REGIONKIT_POLICY": f"/var/task/{POLICY_FILE}",
                "REGIONKIT_POLICY_NAME": plan.policy_name,
                "REGIONKIT_TABLE_PREFIX": plan.table_prefix,
                "REGIONKIT_CONFLICT_LOG_TABLE": plan.conflict_log_table,
                "REGIONKIT_LINEAGE_TABLE": plan.lineage_table,
                "REGIONKIT_LINEAGE_WAIT_S": str(LINEAGE_WAIT_S),
                "REGIONKIT_LINEAGE_MAX_AGE_S": str(LINEAGE_MAX_AGE_S),
                "REGIONKIT_DETECTOR_TABLES": json.dumps(
                    {t.table_name: t.data_class for t in watched}, sort_keys=True
                ),
                "REGIONKIT_LOG_FORMAT": "json",
            },
        )
        # Batches that still fail after the retries land here (their shard positions,
        # never item contents): an unread record would be a conflict nobody saw.
        self.failures = sqs.Queue(
            self,
            "Failures",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.days(14),
        )
        lookup_logs = logs.LogGroup(
            self,
            "StreamLookupLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        lookup_role = iam.Role(
            self,
            "StreamLookupRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"regionkit {plan.policy_name}: read stream ARNs in {region}",
            inline_policies={
                "lookup": policy_document(
                    [
                        {
                            "Sid": "DescribeWatchedTables",
                            "Effect": "Allow",
                            "Action": "dynamodb:DescribeTable",
                            "Resource": [
                                access.table_arn(partition, region, account, t.table_name)
                                for t in watched
                            ],
                        },
                        _write_logs(lookup_logs),
                    ]
                )
            },
        )
        self.mappings: list[lambda_.EventSourceMapping] = []
        dead_letters = sources.SqsDlq(self.failures)
        for spec in watched:
            call = cr.AwsSdkCall(
                service="DynamoDB",
                action="describeTable",
                parameters={"TableName": spec.table_name},
                region=region,
                physical_resource_id=cr.PhysicalResourceId.of(f"{spec.table_name}@{region}"),
                output_paths=["Table.LatestStreamArn"],
            )
            lookup = cr.AwsCustomResource(
                self,
                f"StreamArn-{spec.key}",
                on_create=call,
                on_update=call,
                role=lookup_role,
                log_group=lookup_logs,
                install_latest_aws_sdk=False,
            )
            mapping = lambda_.EventSourceMapping(
                self,
                f"Stream-{spec.key}",
                target=self.function,
                event_source_arn=lookup.get_response_field("Table.LatestStreamArn"),
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=100,
                bisect_batch_on_error=True,
                # A record waiting for a lineage entry waits up to LINEAGE_WAIT_S per
                # invocation; 1 + RETRY_ATTEMPTS invocations outlast LINEAGE_MAX_AGE_S, after
                # which it is undetermined (not a conflict) instead of a dead letter.
                retry_attempts=RETRY_ATTEMPTS,
                report_batch_item_failures=True,
                on_failure=dead_letters,
            )
            self.mappings.append(mapping)

        self.alarms = self._health_alarms(plan.policy_name, region)

        acknowledge_wildcards(
            role,
            access.detector_statements(plan, region, partition=NAG_PARTITION, account=NAG_ACCOUNT),
            access.WILDCARD_REASONS,
        )
        acknowledge(
            self.function,
            (
                "AwsSolutions-L1",
                "The detector runs the regionkit code base, which targets Python 3.11 "
                "(pyproject requires-python); the runtime moves with the project.",
            ),
        )
        acknowledge(
            self.failures,
            (
                "AwsSolutions-SQS3",
                "This queue is itself the on-failure destination (a dead-letter queue) of the "
                "detector's stream mappings; a DLQ of a DLQ would add nothing.",
            ),
        )

    def _health_alarms(self, policy: str, region: str) -> list[cloudwatch.Alarm]:
        """The detector is healthy only if it runs, keeps up and drops nothing.

        * ``Errors``: any failed invocation (a batch that raised, e.g. a missing
          dependency or an unreachable conflict log);
        * ``IteratorAge``: the oldest record of a batch older than five minutes (the
          detector is behind, or retrying one batch);
        * the dead-letter queue holding any message: a batch given up on, conflicts
          nobody logged;
        * ``Undetermined``: a replicated write whose lineage entry never arrived, left
          unjudged (a metric filter on the detector's log group).

        Missing data is not breaching for errors and age (an idle table sends none),
        and the audit reads these alarms' states.
        """
        five_minutes = cdk.Duration.minutes(5)
        specs = [
            (
                "Errors",
                self.function.metric_errors(period=five_minutes, statistic="Sum"),
                1,
                "the conflict detector failed an invocation",
            ),
            (
                "IteratorAge",
                cloudwatch.Metric(
                    namespace="AWS/Lambda",
                    metric_name="IteratorAge",
                    dimensions_map={"FunctionName": self.function.function_name},
                    statistic="Maximum",
                    period=five_minutes,
                ),
                ITERATOR_AGE_ALARM_MS,
                "the conflict detector is more than 5 minutes behind its streams",
            ),
            (
                "DeadLetters",
                self.failures.metric_approximate_number_of_messages_visible(
                    period=five_minutes, statistic="Maximum"
                ),
                1,
                "stream batches the conflict detector gave up on (conflicts not logged)",
            ),
        ]
        # A record whose lineage entry never arrived is judged by nobody: counted from the
        # detector's JSON log lines (regions.conflicts logs residency.names.UNDETERMINED_EVENT).
        undetermined = logs.MetricFilter(
            self,
            "UndeterminedFilter",
            log_group=self.function.log_group,
            metric_namespace=f"regionkit/{policy}",
            metric_name=naming.UNDETERMINED_METRIC,
            filter_pattern=logs.FilterPattern.string_value(
                "$.event", "=", naming.UNDETERMINED_EVENT
            ),
            metric_value="1",
        )
        specs.append(
            (
                "Undetermined",
                undetermined.metric(period=five_minutes, statistic="Sum"),
                1,
                "the conflict detector left a record undetermined (its lineage entry never "
                "arrived): a conflict may be missing from the log",
            )
        )
        alarms = []
        for suffix, metric, threshold, what in specs:
            alarms.append(
                cloudwatch.Alarm(
                    self,
                    f"{suffix}Alarm",
                    alarm_name=naming.detector_alarm_name(policy, region, suffix.lower()),
                    alarm_description=f"regionkit: {what}",
                    metric=metric,
                    threshold=threshold,
                    evaluation_periods=1,
                    comparison_operator=(
                        cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
                    ),
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                )
            )
        return alarms
