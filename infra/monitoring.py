"""ReplicationLatency alarms: one per table and source region, plus one composite per region.

DynamoDB emits ``ReplicationLatency`` (milliseconds) in the *source* region, with
the dimensions ``TableName`` and ``ReceivingRegion``. So a table's alarms live in
the regional stack of each source region: one metric-math alarm per (table, source)
reads the metric of every receiving region and watches the highest,
``MAX(METRICS())``. AWS's guidance is to alarm when the average stays high; the level
is the policy's ``targets.replication_latency_alarm_ms``. Each metric is labelled
with its receiving region, so the alarm's page shows which link lags.

One alarm per replica *pair* would make a regional stack grow with tables times regions
(174 alarms for the example policy; with 12 regions and 50 global tables, 550 alarms
in each regional stack, past CloudFormation's 500 resources per stack). Grouped, it
grows with tables: 34 alarms here. The alarm fires when, for five minutes running, some link out
of the region is over the level, which covers each pair's own alarm. CloudWatch lets
one alarm read 10 metrics: a table with more receiving regions gets one alarm per ten
(:meth:`residency.deployment.DeploymentPlan.latency_alarms`).

What these alarms cannot see: CloudWatch treats missing data of ``AWS/DynamoDB``
metrics as ``ignore`` whatever the alarm says, so an alarm keeps its state while a
table takes no writes; and ``ReplicationLatency`` is measured when an item *arrives*,
so a link that has stopped replicating altogether emits nothing until it resumes. The
alarms see lag; a full stall shows when it ends (a drill measures it directly: its
canary reads its own writes back from every replica).

A composite alarm per region (``ALARM`` of any of that region's alarms)
summarises them for operators. It is **not** the FIS stop condition: a pause
degrades exactly this metric, so it would stop every drill at once. The stop
condition is :class:`CustomerHarmAlarm`, the error rate of the requests the routers
of the region serve (:mod:`regions.metrics` publishes it as EMF), which a
replication pause does not raise by design.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from residency import names as naming
from residency.deployment import DeploymentPlan, LatencyAlarm
from residency.fis_template import customer_harm_alarm

__all__ = ["CustomerHarmAlarm", "ReplicationAlarms"]

#: Minutes the one-minute average must stay above the level before the alarm fires.
EVALUATION_MINUTES = 5
_RULE_LIMIT = 10_240  # CloudWatch's limits on a composite alarm rule: its characters,
_RULE_ALARMS = 100  # and the alarms it names


class ReplicationAlarms(Construct):
    """The ReplicationLatency alarms of every table replicated out of ``region``."""

    def __init__(
        self, scope: Construct, construct_id: str, *, plan: DeploymentPlan, region: str
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarms: list[cloudwatch.CfnAlarm] = []
        self.composite: cloudwatch.CfnCompositeAlarm | None = None
        threshold = plan.replication_latency_alarm_ms
        names: list[str] = []
        for spec in plan.latency_alarms(region):
            name = naming.replication_alarm_name(
                plan.policy_name, spec.table.table_name, region, spec.part
            )
            alarm_id = spec.table.key if spec.part is None else f"{spec.table.key}-{spec.part}"
            self.alarms.append(_latency_alarm(self, alarm_id, name, spec, threshold))
            names.append(name)
        if not names:
            return
        # A rule names at most 100 alarms in at most 10,240 characters: past that, OR the
        # alarms in groups, each group a composite of its own, and the region's composite
        # ORs the groups.
        groups = _chunk([f'ALARM("{n}")' for n in names])
        members: list[cloudwatch.CfnAlarm | cloudwatch.CfnCompositeAlarm] = list(self.alarms)
        if len(groups) > 1:
            members = []
            for i, group in enumerate(groups):
                part = cloudwatch.CfnCompositeAlarm(
                    self,
                    f"CompositePart{i}",
                    alarm_name=f"{naming.composite_alarm_name(plan.policy_name, region)}-{i}",
                    alarm_rule=" OR ".join(group),
                )
                part.node.add_dependency(*self.alarms)
                members.append(part)
            groups = [[f'ALARM("{m.alarm_name}")' for m in members]]
        self.composite = cloudwatch.CfnCompositeAlarm(
            self,
            "Composite",
            alarm_name=naming.composite_alarm_name(plan.policy_name, region),
            alarm_description=(
                f"Replication out of {region} lags over {threshold} ms on some link "
                "(any of the region's ReplicationLatency alarms)"
            ),
            alarm_rule=" OR ".join(groups[0]),
        )
        # The rule names the alarms; CloudFormation must create them first. One call for
        # all of them: each jsii call is a round trip to the Node process.
        self.composite.node.add_dependency(*members)


def _latency_alarm(
    scope: Construct, construct_id: str, name: str, spec: LatencyAlarm, threshold: int
) -> cloudwatch.CfnAlarm:
    table = spec.table.table_name
    metrics = [
        cloudwatch.CfnAlarm.MetricDataQueryProperty(
            id=f"m{i}",
            label=f"{spec.source} to {receiving}",
            return_data=False,
            metric_stat=cloudwatch.CfnAlarm.MetricStatProperty(
                metric=cloudwatch.CfnAlarm.MetricProperty(
                    namespace="AWS/DynamoDB",
                    metric_name="ReplicationLatency",
                    dimensions=[
                        cloudwatch.CfnAlarm.DimensionProperty(name="TableName", value=table),
                        cloudwatch.CfnAlarm.DimensionProperty(
                            name="ReceivingRegion", value=receiving
                        ),
                    ],
                ),
                period=60,
                stat="Average",
                unit="Milliseconds",
            ),
        )
        for i, receiving in enumerate(spec.receiving)
    ]
    slowest = cloudwatch.CfnAlarm.MetricDataQueryProperty(
        id="slowest",
        expression="MAX(METRICS())",
        label=f"slowest link of {table} out of {spec.source}",
        return_data=True,
    )
    return cloudwatch.CfnAlarm(
        scope,
        construct_id,
        alarm_name=name,
        alarm_description=(
            f"Replication of {table} from {spec.source} to one of "
            f"{', '.join(spec.receiving)} has averaged over {threshold} ms for "
            f"{EVALUATION_MINUTES} minutes (each link is a metric of this alarm)"
        ),
        metrics=[*metrics, slowest],
        evaluation_periods=EVALUATION_MINUTES,
        datapoints_to_alarm=EVALUATION_MINUTES,
        threshold=threshold,
        comparison_operator="GreaterThanThreshold",
        # Asked for, but CloudWatch ignores missing data of AWS/DynamoDB metrics whatever
        # this says (see the module docstring).
        treat_missing_data="notBreaching",
    )


def _chunk(terms: list[str]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    size = 0
    for term in terms:
        full = len(groups[-1]) == _RULE_ALARMS or size + len(term) + 4 > _RULE_LIMIT
        if groups[-1] and full:
            groups.append([])
            size = 0
        groups[-1].append(term)
        size += len(term) + 4
    return groups


def _query(q: dict[str, Any]) -> cloudwatch.CfnAlarm.MetricDataQueryProperty:
    stat = q.get("MetricStat")
    return cloudwatch.CfnAlarm.MetricDataQueryProperty(
        id=q["Id"],
        expression=q.get("Expression"),
        label=q.get("Label"),
        return_data=q["ReturnData"],
        metric_stat=None
        if stat is None
        else cloudwatch.CfnAlarm.MetricStatProperty(
            metric=cloudwatch.CfnAlarm.MetricProperty(
                namespace=stat["Metric"]["Namespace"],
                metric_name=stat["Metric"]["MetricName"],
                dimensions=[
                    cloudwatch.CfnAlarm.DimensionProperty(name=d["Name"], value=d["Value"])
                    for d in stat["Metric"]["Dimensions"]
                ],
            ),
            period=stat["Period"],
            stat=stat["Stat"],
        ),
    )


class CustomerHarmAlarm(Construct):
    """The FIS stop condition of ``region``: routed requests failing above 5 %.

    The alarm is :func:`residency.fis_template.customer_harm_alarm`, the same dict
    ``regionkit drill run --target aws --create-template`` creates with boto3, so the
    deployed and the CLI-made alarm cannot drift apart.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, plan: DeploymentPlan, region: str
    ) -> None:
        super().__init__(scope, construct_id)
        spec = customer_harm_alarm(plan, region)
        self.alarm = cloudwatch.CfnAlarm(
            self,
            "Alarm",
            alarm_name=spec["AlarmName"],
            alarm_description=spec["AlarmDescription"],
            metrics=[_query(q) for q in spec["Metrics"]],
            threshold=spec["Threshold"],
            comparison_operator=spec["ComparisonOperator"],
            evaluation_periods=spec["EvaluationPeriods"],
            datapoints_to_alarm=spec["DatapointsToAlarm"],
            treat_missing_data=spec["TreatMissingData"],
        )
