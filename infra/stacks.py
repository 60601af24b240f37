"""The stacks: every one with an explicit region, in three tiers plus access.

=====================  ======================  ==================================
stack                  one per                 holds
=====================  ======================  ==================================
``keys-<region>``      policy region           the customer-managed KMS key (and
                                               alias) of every replica there
``tables-<region>``    primary region          the global tables whose primary
                                               replica is in that region
``region-<region>``    policy region           conflict detector, ReplicationLatency
                                               alarms, FIS experiment template
``access``             policy (first region)   the IAM managed policy for services
=====================  ======================  ==================================

CloudFormation forbids references between regions, so the tiers are joined by
deterministic names (key aliases, table names) and ordered by stack
dependencies: a table stack needs the keys of all its replica regions to exist,
a regional stack needs the replicas in its region to exist. ``cdk deploy --all``
follows that order. Same-region references are not used either, so that a
stack can be updated without unpicking exports.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from constructs import Construct

from infra.detector import ConflictDetector
from infra.fis import PauseReplicationExperiment
from infra.iam import ServiceAccessPolicy
from infra.monitoring import CustomerHarmAlarm, ReplicationAlarms
from infra.tables import RegionKeys, ReplicatedTable
from residency import names as naming
from residency.deployment import DeploymentPlan

__all__ = ["AccessStack", "KeysStack", "RegionalStack", "TablesStack"]


def _env(region: str, account: str | None) -> cdk.Environment:
    return cdk.Environment(region=region, account=account)


class KeysStack(cdk.Stack):
    """The KMS keys of one region."""

    def __init__(
        self,
        scope: Construct,
        *,
        plan: DeploymentPlan,
        region: str,
        account: str | None = None,
    ) -> None:
        name = naming.keys_stack_name(plan.policy_name, region)
        super().__init__(
            scope,
            name,
            env=_env(region, account),
            description=f"regionkit {plan.policy_name}: customer-managed table keys in {region}",
        )
        self.region_name = region
        self.keys = RegionKeys(
            self,
            "Keys",
            policy_name=plan.policy_name,
            region=region,
            tables=plan.tables_in(region),
        )


class TablesStack(cdk.Stack):
    """The global tables whose primary replica is in ``region``."""

    def __init__(
        self,
        scope: Construct,
        *,
        plan: DeploymentPlan,
        region: str,
        account: str | None = None,
    ) -> None:
        name = naming.tables_stack_name(plan.policy_name, region)
        super().__init__(
            scope,
            name,
            env=_env(region, account),
            description=(
                f"regionkit {plan.policy_name}: global tables with their primary replica in "
                f"{region}"
            ),
        )
        self.region_name = region
        self.specs = plan.tables_with_primary(region)
        self.tables = {
            spec.key: ReplicatedTable(self, spec.key, spec=spec, policy_name=plan.policy_name)
            for spec in self.specs
        }

    @property
    def replica_regions(self) -> set[str]:
        return {r for spec in self.specs for r in spec.regions}


class RegionalStack(cdk.Stack):
    """What runs in one region: detector, ReplicationLatency alarms, FIS template."""

    def __init__(
        self,
        scope: Construct,
        *,
        plan: DeploymentPlan,
        region: str,
        code_dir: Path,
        fis_duration: str,
        account: str | None = None,
    ) -> None:
        name = naming.regional_stack_name(plan.policy_name, region)
        super().__init__(
            scope,
            name,
            env=_env(region, account),
            description=(
                f"regionkit {plan.policy_name}: conflict detector, replication alarms and "
                f"FIS template in {region}"
            ),
        )
        self.region_name = region
        self.alarms = ReplicationAlarms(self, "ReplicationLatency", plan=plan, region=region)
        self.harm = CustomerHarmAlarm(self, "CustomerHarm", plan=plan, region=region)
        self.detector = (
            ConflictDetector(self, "ConflictDetector", plan=plan, region=region, code_dir=code_dir)
            if plan.detector_tables(region)
            else None
        )
        self.experiment = (
            PauseReplicationExperiment(
                self,
                "PauseReplication",
                plan=plan,
                region=region,
                stop_alarm_arn=self.harm.alarm.attr_arn,
                duration=fis_duration,
            )
            if plan.fis_targets(region)
            else None
        )


class AccessStack(cdk.Stack):
    """The IAM managed policy for services (IAM is global; homed in the first region)."""

    def __init__(
        self,
        scope: Construct,
        *,
        plan: DeploymentPlan,
        account: str | None = None,
    ) -> None:
        region = plan.regions[0]
        super().__init__(
            scope,
            naming.access_stack_name(plan.policy_name),
            env=_env(region, account),
            description=f"regionkit {plan.policy_name}: IAM access for services",
        )
        self.region_name = region
        self.access = ServiceAccessPolicy(self, "ServiceAccess", plan=plan)
