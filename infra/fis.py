"""The FIS experiment template of one region: pause global-table replication there.

The template itself comes from :func:`residency.fis_template.experiment_template_for_plan`,
the same function ``regionkit drill --target aws`` prints, rendered here as an
``AWS::FIS::ExperimentTemplate``; this construct adds the role FIS assumes and
the stack output the drill CLI reads the template id from.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_fis as fis
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import access
from infra.iam import policy_document
from infra.nag import NAG_ACCOUNT, NAG_PARTITION, acknowledge_wildcards
from infra.tokens import partition_and_account
from residency import names as naming
from residency.deployment import DeploymentPlan
from residency.fis_template import DEFAULT_DURATION, experiment_template_for_plan

__all__ = ["PauseReplicationExperiment"]

T = fis.CfnExperimentTemplate


def _render(template: dict[str, Any]) -> dict[str, Any]:
    """The CreateExperimentTemplate dict as ``CfnExperimentTemplate`` keyword arguments."""
    return {
        "description": template["description"],
        "role_arn": template["roleArn"],
        "stop_conditions": [
            T.ExperimentTemplateStopConditionProperty(source=s["source"], value=s.get("value"))
            for s in template["stopConditions"]
        ],
        "targets": {
            name: T.ExperimentTemplateTargetProperty(
                resource_type=t["resourceType"],
                selection_mode=t["selectionMode"],
                resource_tags=t.get("resourceTags"),
                resource_arns=t.get("resourceArns"),
            )
            for name, t in template["targets"].items()
        },
        "actions": {
            name: T.ExperimentTemplateActionProperty(
                action_id=a["actionId"],
                description=a.get("description"),
                parameters=a.get("parameters"),
                targets=a.get("targets"),
            )
            for name, a in template["actions"].items()
        },
        "tags": template["tags"],
    }


class PauseReplicationExperiment(Construct):
    """``aws:dynamodb:global-table-pause-replication`` on the tagged replicas of ``region``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plan: DeploymentPlan,
        region: str,
        stop_alarm_arn: str | None,
        duration: str = DEFAULT_DURATION,
    ) -> None:
        super().__init__(scope, construct_id)
        partition, account = partition_and_account()
        self.role = iam.Role(
            self,
            "Role",
            role_name=naming.fis_role_name(plan.policy_name, region),
            assumed_by=iam.ServicePrincipal(
                "fis.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": account}},
            ),
            description=f"regionkit {plan.policy_name}: FIS pauses replication in {region}",
            inline_policies={
                "pause-replication": policy_document(
                    access.fis_statements(plan, region, partition=partition, account=account)
                )
            },
        )
        template = experiment_template_for_plan(
            plan,
            region,
            duration=duration,
            role_arn=self.role.role_arn,
            stop_alarm=stop_alarm_arn or "",
        )
        self.template = fis.CfnExperimentTemplate(self, "Template", **_render(template))
        self.output = cdk.CfnOutput(
            cdk.Stack.of(self),
            naming.FIS_OUTPUT_KEY,
            value=self.template.attr_id,
            description=f"The FIS template that pauses replication in {region}",
        )
        acknowledge_wildcards(
            self.role,
            access.fis_statements(plan, region, partition=NAG_PARTITION, account=NAG_ACCOUNT),
            access.WILDCARD_REASONS,
        )
