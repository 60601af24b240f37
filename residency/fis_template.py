"""The FIS experiment template that pauses global-table replication in one region.

Pure Python (no ``aws_cdk``), in the base layer: ``regionkit drill plan --target aws``
prints it, an AWS drill creates it when asked (:func:`regions.drills.launch.prepare_fis`),
and the CDK construct (:mod:`infra.fis`) renders the very same dict as an
``AWS::FIS::ExperimentTemplate``, so the two cannot drift apart.

The dict has the shape of the FIS ``CreateExperimentTemplate`` request (the boto3
keyword arguments)::

    >>> t = experiment_template(policy, "eu-west-1", duration="PT5M")
    >>> t["actions"]["PauseReplication"]["actionId"]
    'aws:dynamodb:global-table-pause-replication'

The action targets every table **in that region** tagged ``DisruptDynamoDb=Allowed``
and ``regionkit:policy=<policy name>``; FIS pauses replication to and from those
replicas and resumes it, losing nothing, when the duration ends.

The stop condition. ``stop_on="customer-harm"`` (the default; the deployed stacks
and ``regionkit drill run --create-template`` use it) is :func:`customer_harm_alarm`:
the error rate of requests the routers in that region serve, published as
CloudWatch Embedded Metric Format (:mod:`regions.metrics`). A
replication pause does not fail a routed request by design (writes land in the
local replica; only cross-region visibility is late), so the alarm fires only
if customers are harmed, which is exactly when a drill must stop.
``stop_on="replication-latency"`` is the region's composite ReplicationLatency
alarm, the very metric a pause degrades: it stops the drill at once or means
nothing; it is kept for templates made before.
"""

from __future__ import annotations

import re
from typing import Any

from residency import names as naming
from residency.deployment import DeploymentPlan, fis_available, plan_deployment
from residency.errors import ConfigError
from residency.policy import Policy

__all__ = [
    "ACTION_ID",
    "ACTION_NAME",
    "DEFAULT_DURATION",
    "HARM_METRICS",
    "HARM_NAMESPACE",
    "TARGET_NAME",
    "TARGET_TYPE",
    "check_fis_region",
    "customer_harm_alarm",
    "customer_harm_alarm_name",
    "experiment_template",
    "experiment_template_for_plan",
    "stop_alarm_arn",
]

ACTION_ID = "aws:dynamodb:global-table-pause-replication"
ACTION_NAME = "PauseReplication"
TARGET_TYPE = "aws:dynamodb:global-table"
TARGET_NAME = "Tables"  # the action's target key for global tables is "Tables"
DEFAULT_DURATION = "PT10M"
ALARM_SOURCE = "aws:cloudwatch:alarm"
_DURATION = re.compile(r"^PT(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")


def _check_duration(duration: str) -> str:
    m = _DURATION.match(duration)
    if not m or not any(m.groups()):
        raise ConfigError(
            message=(
                f"FIS duration {duration!r} is not an ISO 8601 duration of hours, minutes and "
                "seconds (fix: use a value such as 'PT10M', 'PT1H' or 'PT90S')"
            )
        )
    hours, minutes, seconds = (int(g or 0) for g in m.groups())
    if hours * 3600 + minutes * 60 + seconds == 0:
        raise ConfigError(message=f"FIS duration {duration!r} is zero (fix: use e.g. 'PT10M')")
    return duration


def stop_alarm_arn(plan: DeploymentPlan, region: str, *, partition: str, account: str) -> str:
    """The ARN of the composite ReplicationLatency alarm of ``region``."""
    name = naming.composite_alarm_name(plan.policy_name, region)
    return f"arn:{partition}:cloudwatch:{region}:{account}:alarm:{name}"


HARM_NAMESPACE = "regionkit/router"
# what the router publishes per region, as Embedded Metric Format (Sum per minute)
HARM_METRICS = ("RoutedRequests", "RoutedRequestErrors")
HARM_THRESHOLD_PERCENT = 5.0


def customer_harm_alarm_name(plan: DeploymentPlan, region: str) -> str:
    return f"regionkit-{plan.policy_name}-{region}-customer-harm"[:255]


def customer_harm_alarm(plan: DeploymentPlan, region: str) -> dict[str, Any]:
    """The customer-harm alarm of ``region``, as CloudWatch PutMetricAlarm arguments.

    Errors over requests of the routers serving in ``region`` above 5 % in 2 of 3
    minutes; no data (no traffic) is not harm.
    """
    dims = [{"Name": "Policy", "Value": plan.policy_name}, {"Name": "Region", "Value": region}]

    def metric(ident: str, name: str) -> dict[str, Any]:
        return {
            "Id": ident,
            "MetricStat": {
                "Metric": {"Namespace": HARM_NAMESPACE, "MetricName": name, "Dimensions": dims},
                "Period": 60,
                "Stat": "Sum",
            },
            "ReturnData": False,
        }

    return {
        "AlarmName": customer_harm_alarm_name(plan, region),
        "AlarmDescription": (
            f"regionkit {plan.policy_name}: more than {HARM_THRESHOLD_PERCENT:g} % of routed "
            f"requests in {region} fail. A replication pause does not trigger it by design; "
            "it stops an FIS drill that harms customers."
        ),
        "Metrics": [
            metric("requests", HARM_METRICS[0]),
            metric("errors", HARM_METRICS[1]),
            {
                "Id": "rate",
                "Expression": "IF(requests > 0, 100 * errors / requests, 0)",
                "Label": "routed request error rate (%)",
                "ReturnData": True,
            },
        ],
        "Threshold": HARM_THRESHOLD_PERCENT,
        "ComparisonOperator": "GreaterThanThreshold",
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 2,
        "TreatMissingData": "notBreaching",
    }


def check_fis_region(plan: DeploymentPlan, region: str) -> None:
    """Refuse a region FIS cannot pause replication in: outside the policy, without FIS,
    or without a replicated table there. Pure: callers check before any AWS call."""
    if region not in plan.regions:
        raise ConfigError(
            message=(
                f"region {region!r} is not in policy {plan.policy_name!r} "
                f"(fix: use one of {', '.join(plan.regions)})"
            )
        )
    if not fis_available(region):
        raise ConfigError(
            message=(
                f"AWS FIS (CloudFormation's AWS::FIS::ExperimentTemplate) is not available in "
                f"{region} (fix: pause replication from a peer region of the same tables; that "
                f"cuts the link to {region} as well)"
            )
        )
    if not plan.fis_targets(region):
        raise ConfigError(
            message=(
                f"no replicated table of policy {plan.policy_name!r} has a replica in {region}, "
                "so there is no replication to pause there (fix: pick a region with replicas)"
            )
        )


def experiment_template_for_plan(
    plan: DeploymentPlan,
    region: str,
    *,
    duration: str = DEFAULT_DURATION,
    role_arn: str | None = None,
    stop_alarm: str | None = None,
    partition: str = "aws",
    account: str = "<account-id>",
    stop_on: str = "customer-harm",
) -> dict[str, Any]:
    """The experiment template of ``region``, as CreateExperimentTemplate arguments.

    ``role_arn`` and ``stop_alarm`` default to the names the CDK app deploys
    (built from ``partition`` and ``account``); the CDK construct passes its own
    resource references instead. A region without any replicated table gets no
    stop alarm (``stop_alarm=""`` forces FIS's ``none`` source as well).
    """
    check_fis_region(plan, region)
    _check_duration(duration)
    if role_arn is None:
        role_arn = (
            f"arn:{partition}:iam::{account}:role/{naming.fis_role_name(plan.policy_name, region)}"
        )
    if stop_on not in {"replication-latency", "customer-harm"}:
        raise ConfigError(
            message=f"stop_on {stop_on!r}: use 'customer-harm' or 'replication-latency'"
        )
    if stop_alarm is None and stop_on == "customer-harm":
        name = customer_harm_alarm_name(plan, region)
        stop_alarm = f"arn:{partition}:cloudwatch:{region}:{account}:alarm:{name}"
    if stop_alarm is None and plan.alarm_pairs(region):
        stop_alarm = stop_alarm_arn(plan, region, partition=partition, account=account)
    stop_conditions = (
        [{"source": ALARM_SOURCE, "value": stop_alarm}] if stop_alarm else [{"source": "none"}]
    )
    name = f"regionkit-{plan.policy_name}-pause-replication-{region}"
    return {
        "description": (
            f"regionkit {plan.policy_name}: pause DynamoDB global-table replication to and "
            f"from the replicas in {region} for {duration}"
        )[:512],
        "roleArn": role_arn,
        "stopConditions": stop_conditions,
        "targets": {
            TARGET_NAME: {
                "resourceType": TARGET_TYPE,
                "resourceTags": {
                    naming.DISRUPT_TAG: naming.DISRUPT_TAG_VALUE,
                    naming.TAG_POLICY: plan.policy_name,
                },
                "selectionMode": "ALL",
            }
        },
        "actions": {
            ACTION_NAME: {
                "actionId": ACTION_ID,
                "description": f"Pause replication of the tagged global tables in {region}",
                "parameters": {"duration": duration},
                "targets": {TARGET_NAME: TARGET_NAME},
            }
        },
        "tags": {
            "Name": name,
            naming.TAG_POLICY: plan.policy_name,
            naming.TAG_REGION: region,
        },
    }


def experiment_template(
    policy: Policy,
    region: str,
    *,
    duration: str = DEFAULT_DURATION,
    table_prefix: str = "",
    role_arn: str | None = None,
    stop_alarm: str | None = None,
    partition: str = "aws",
    account: str = "<account-id>",
    stop_on: str = "customer-harm",
) -> dict[str, Any]:
    """:func:`experiment_template_for_plan` for a policy (see the module docstring)."""
    return experiment_template_for_plan(
        plan_deployment(policy, table_prefix=table_prefix),
        region,
        duration=duration,
        role_arn=role_arn,
        stop_alarm=stop_alarm,
        partition=partition,
        account=account,
        stop_on=stop_on,
    )
