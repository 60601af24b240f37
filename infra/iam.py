"""The IAM managed policies services attach to use regionkit's tables: one per jurisdiction.

The statements come from :func:`infra.access.service_access_statements` with the
jurisdiction: its own pinned tables only in its regions (region-scoped ARNs *and* an
``aws:RequestedRegion`` condition), the global tables in their replica regions, the
tables' keys through DynamoDB only, and an **explicit Deny** of every pinned table in
any region outside the jurisdiction (so a role that also holds a broader policy still
cannot reach another jurisdiction's profiles). A service attaches the policy of the
jurisdiction it serves. IAM is a global service, so the policies are defined once, in
the access stack. A policy too large for one managed policy (6,144 characters) is
split into numbered parts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import access
from infra.nag import NAG_ACCOUNT, NAG_PARTITION, acknowledge_wildcards
from infra.tokens import partition_and_account
from residency.deployment import DeploymentPlan

__all__ = ["ServiceAccessPolicy", "policy_document"]


def policy_document(statements: Sequence[Mapping[str, object]]) -> iam.PolicyDocument:
    """A policy document from statement dicts (tokens allowed), in one call to the
    jsii process rather than one per statement: a synth makes some thousand calls,
    each a round trip."""
    return iam.PolicyDocument.from_json({"Version": "2012-10-17", "Statement": list(statements)})


class ServiceAccessPolicy(Construct):
    """``AWS::IAM::ManagedPolicy`` s, per jurisdiction, granting the data tables where they live."""

    def __init__(self, scope: Construct, construct_id: str, *, plan: DeploymentPlan) -> None:
        super().__init__(scope, construct_id)
        partition, account = partition_and_account()
        self.policies: list[iam.ManagedPolicy] = []
        pinned = sorted({t.jurisdiction for t in plan.tables if t.kind == "pinned"})
        jurisdictions: list[str | None] = list(pinned) or [None]
        for jid in jurisdictions:
            statements = access.service_access_statements(
                plan, partition=partition, account=account, jurisdiction=jid
            )
            for_nag = access.service_access_statements(
                plan, partition=NAG_PARTITION, account=NAG_ACCOUNT, jurisdiction=jid
            )
            documents = access.pack_statements(
                access.service_access_statements(
                    plan, partition="aws", account="123456789012", jurisdiction=jid
                )
            )
            scope_name = f"service-{jid}" if jid else "service-access"
            base = re.sub(r"[^\w+=,.@-]", "-", f"regionkit-{plan.policy_name}-{scope_name}")
            for i, indices in enumerate(documents):
                suffix = f"-{i + 1}" if len(documents) > 1 else ""
                policy = iam.ManagedPolicy(
                    self,
                    f"Policy-{jid}{suffix}" if jid else f"Policy{suffix}",
                    managed_policy_name=f"{base[: 128 - len(suffix)]}{suffix}",
                    description=(
                        f"regionkit {plan.policy_name}: services of jurisdiction {jid}: its "
                        "pinned tables in its regions only (explicit deny elsewhere), global "
                        "tables in their replica regions"
                        if jid
                        else f"regionkit {plan.policy_name}: the global data tables"
                    ),
                    document=policy_document([statements[j] for j in indices]),
                )
                acknowledge_wildcards(
                    policy, [for_nag[j] for j in indices], access.WILDCARD_REASONS
                )
                self.policies.append(policy)
