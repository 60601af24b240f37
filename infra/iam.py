"""The IAM managed policy services attach to use regionkit's tables.

The statements come from :func:`infra.access.service_access_statements`: a pinned
table only in its own jurisdiction's regions (region-scoped ARNs *and* an
``aws:RequestedRegion`` condition), the global tables in their replica regions,
and the tables' keys through DynamoDB only. IAM is a global service, so the
policy is defined once, in the access stack. A policy too large for one managed
policy (6,144 characters) is split into numbered parts.
"""

from __future__ import annotations

import re

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import access
from infra.nag import NAG_ACCOUNT, NAG_PARTITION, acknowledge_wildcards
from infra.plan import DeploymentPlan

__all__ = ["ServiceAccessPolicy"]


class ServiceAccessPolicy(Construct):
    """One or more ``AWS::IAM::ManagedPolicy`` granting the data tables where they live."""

    def __init__(self, scope: Construct, construct_id: str, *, plan: DeploymentPlan) -> None:
        super().__init__(scope, construct_id)
        partition, account = cdk.Aws.PARTITION, cdk.Aws.ACCOUNT_ID
        statements = access.service_access_statements(plan, partition=partition, account=account)
        for_nag = access.service_access_statements(
            plan, partition=NAG_PARTITION, account=NAG_ACCOUNT
        )
        documents = access.pack_statements(
            access.service_access_statements(plan, partition="aws", account="123456789012")
        )
        base = re.sub(r"[^\w+=,.@-]", "-", f"regionkit-{plan.policy_name}-service-access")
        self.policies: list[iam.ManagedPolicy] = []
        for i, indices in enumerate(documents):
            suffix = f"-{i + 1}" if len(documents) > 1 else ""
            policy = iam.ManagedPolicy(
                self,
                f"Policy{suffix}",
                managed_policy_name=f"{base[: 128 - len(suffix)]}{suffix}",
                description=(
                    f"regionkit {plan.policy_name}: data tables, pinned ones only in their "
                    "jurisdiction's regions"
                ),
                document=iam.PolicyDocument(
                    statements=[iam.PolicyStatement.from_json(statements[j]) for j in indices]
                ),
            )
            acknowledge_wildcards(policy, [for_nag[j] for j in indices], access.WILDCARD_REASONS)
            self.policies.append(policy)
