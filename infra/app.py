"""The regionkit CDK app: the infrastructure of one policy file.

Run by the CDK CLI (``npx cdk synth``; see ``cdk.json``) or by
``regionkit infra synth``. Inputs, the CDK context first, then the environment
(through :mod:`residency.settings`, so ``.env`` works too):

=================  ===================================  =============================
context key        environment                          default
=================  ===================================  =============================
``policy``         ``REGIONKIT_POLICY``                 ``policies/social-network.yaml``
``table_prefix``   ``REGIONKIT_TABLE_PREFIX``           ``""``
``account``        (none)                               unresolved (``AWS::AccountId``)
``nag``            (none)                               ``true``: run cdk-nag AwsSolutions
``fis_duration``   (none)                               ``PT10M``
=================  ===================================  =============================

The stack layout is described in :mod:`infra.stacks`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import aws_cdk as cdk

from infra.asset import stage_detector_code
from infra.stacks import AccessStack, KeysStack, RegionalStack, TablesStack
from infra.summary import StackSummary, summarize_assembly
from residency import names as naming
from residency.deployment import DeploymentPlan, plan_deployment
from residency.errors import ConfigError, OperationError
from residency.fis_template import DEFAULT_DURATION
from residency.policy import Policy, load_policy
from residency.settings import load_settings

__all__ = [
    "AppOptions",
    "BuiltApp",
    "SynthResult",
    "build_app",
    "main",
    "options_from_context",
    "synth",
]


@dataclass(frozen=True)
class AppOptions:
    policy_path: Path
    table_prefix: str = ""
    merge_modules: tuple[str, ...] = ()
    """Operator-listed merge-function modules (settings), besides regions.merges."""
    policy_max_bytes: int = 1_000_000
    account: str | None = None
    nag: bool = True
    fis_duration: str = DEFAULT_DURATION
    cfn_validation: bool = True
    """The CDK's built-in CloudFormation validation (cfn-lint covers the same ground)."""


@dataclass
class BuiltApp:
    policy: Policy
    plan: DeploymentPlan
    keys: dict[str, KeysStack] = field(default_factory=dict)
    tables: dict[str, TablesStack] = field(default_factory=dict)
    regional: dict[str, RegionalStack] = field(default_factory=dict)
    access: AccessStack | None = None

    def stacks(self) -> list[cdk.Stack]:
        out: list[cdk.Stack] = [*self.keys.values(), *self.tables.values(), *self.regional.values()]
        if self.access is not None:
            out.append(self.access)
        return out


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    policy_name: str
    stacks: list[StackSummary]
    seconds: float


def _flag(value: object, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in {"0", "false", "no", "off"}


def options_from_context(app: cdk.App) -> AppOptions:
    """Read the options from the CDK context, falling back to regionkit's settings."""
    ctx = app.node.try_get_context
    overrides = {"policy": ctx("policy"), "table_prefix": ctx("table_prefix")}
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    account = ctx("account")
    return AppOptions(
        policy_path=settings.policy,
        table_prefix=settings.table_prefix,
        merge_modules=tuple(settings.merge_modules),
        policy_max_bytes=settings.policy_max_bytes,
        account=str(account) if account else None,
        nag=_flag(ctx("nag"), True),
        fis_duration=str(ctx("fis_duration") or DEFAULT_DURATION),
    )


def build_app(app: cdk.App, policy: Policy, options: AppOptions) -> BuiltApp:
    """Add every stack of ``policy`` to ``app`` (and cdk-nag, unless disabled)."""
    plan = plan_deployment(policy, table_prefix=options.table_prefix)
    built = BuiltApp(policy=policy, plan=plan)
    account = options.account
    code_dir = stage_detector_code(options.policy_path)

    for region in plan.regions:
        built.keys[region] = KeysStack(app, plan=plan, region=region, account=account)
    for region in plan.primary_regions():
        tables = TablesStack(app, plan=plan, region=region, account=account)
        for replica_region in sorted(tables.replica_regions):
            tables.add_stack_dependency(
                built.keys[replica_region],
                "table replicas are encrypted with the keys of their region",
            )
        built.tables[region] = tables
    for region in plan.regions:
        regional = RegionalStack(
            app,
            plan=plan,
            region=region,
            code_dir=code_dir,
            fis_duration=options.fis_duration,
            account=account,
        )
        for primary, tables_stack in built.tables.items():
            if region in tables_stack.replica_regions:
                regional.add_stack_dependency(
                    tables_stack, f"reads the streams of replicas created from {primary}"
                )
        built.regional[region] = regional
    built.access = AccessStack(app, plan=plan, account=account)

    # Every stack and every taggable resource under it.
    cdk.Tags.of(app).add(naming.TAG_POLICY, plan.policy_name)
    if options.nag:
        from infra.nag import add_aws_solutions_checks

        add_aws_solutions_checks(app)
    return built


def synth(options: AppOptions, out_dir: Path) -> SynthResult:
    """Synthesize the app of ``options`` into ``out_dir`` and summarize the templates."""
    started = time.perf_counter()
    policy = load_policy(
        options.policy_path,
        max_bytes=options.policy_max_bytes,
        merge_modules=options.merge_modules,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    app = cdk.App(outdir=str(out_dir), builtin_cloud_formation_validation=options.cfn_validation)
    build_app(app, policy, options)
    try:
        app.synth()
    except RuntimeError as exc:  # jsii surfaces JavaScript errors as RuntimeError
        if "ValidationFailed" not in str(exc):
            raise  # a bug in the app, not a finding: keep the traceback
        raise OperationError(
            message=(
                "the templates were written but failed validation (cdk-nag or the CDK's "
                f"CloudFormation checks); findings: {out_dir / 'validation-report.json'}"
            )
        ) from None
    return SynthResult(
        out_dir=out_dir,
        policy_name=policy.name,
        stacks=summarize_assembly(out_dir),
        seconds=time.perf_counter() - started,
    )


def main() -> None:
    """Entry point for the CDK CLI: ``python -m infra.app``."""
    app = cdk.App()
    try:
        options = options_from_context(app)
        build_app(
            app,
            load_policy(
                options.policy_path,
                max_bytes=options.policy_max_bytes,
                merge_modules=options.merge_modules,
            ),
            options,
        )
    except ConfigError as exc:
        raise SystemExit(f"regionkit infra: {exc}") from None
    app.synth()


if __name__ == "__main__":
    main()
