"""Policy checks: the policy file itself. They make no AWS call."""

from __future__ import annotations

from collections.abc import Iterator

from residency.audit.context import AuditContext
from residency.audit.model import Finding
from residency.audit.registry import check
from residency.errors import PolicyError
from residency.policy import load_policy, policy_problems

GLOBAL = "global"


def _resource(ctx: AuditContext, *parts: str) -> str:
    return "/".join((f"regionkit:policy/{ctx.policy.name}", *parts))


@check(
    id="policy.valid",
    title="The policy file validates",
    severity="critical",
    rationale="Every placement decision, table and check derives from the policy; an invalid "
    "or edited-in-place policy makes the whole audit meaningless.",
    remediation="Run `regionkit policy validate` and fix every problem it names.",
    permissions=[],
)
def valid(ctx: AuditContext) -> Iterator[Finding]:
    """The policy file at ``policy_path`` loads and passes every semantic check, and is
    the same policy the audit was given.

    Example::

        regionkit --policy policies/social-network.yaml audit run --checks policy.valid
    """
    me = valid
    path = ctx.options.policy_path
    resource = _resource(ctx)
    try:
        loaded = load_policy(path, merge_modules=ctx.options.merge_modules)
    except PolicyError as exc:
        for i, p in enumerate(exc.problems):
            where = f"line {p.line}" if p.line else "the file"
            yield me.failed(
                region=GLOBAL,
                resource=resource,
                reason=f"{p.field} ({where}): {p.message}",
                remediation=p.fix or me.meta.remediation,
                discriminator=str(i),
            )
        return
    problems = policy_problems(ctx.policy)
    for loc, message, fix in problems:
        field = ".".join(str(x) for x in loc)
        yield me.failed(
            region=GLOBAL,
            resource=resource,
            reason=f"{field}: {message}",
            remediation=fix,
            discriminator=field,
        )
    if loaded != ctx.policy:
        yield me.failed(
            region=GLOBAL,
            resource=resource,
            reason=f"the policy the audit ran with differs from the file {path}",
            remediation="Audit with the policy file as it is deployed; do not edit it mid-run.",
            discriminator="drift",
        )
    elif not problems:
        pol = ctx.policy
        yield me.passed(
            region=GLOBAL,
            resource=resource,
            reason=f"{path} validates: {len(pol.jurisdictions)} jurisdictions, "
            f"{len(pol.regions)} regions, {len(pol.data_classes)} data classes",
        )


@check(
    id="policy.jurisdiction_homes",
    title="Every jurisdiction has a home region",
    severity="high",
    rationale="Residents of a jurisdiction without a home region inside it cannot be homed "
    "anywhere without breaking residency.",
    remediation="List at least one of the jurisdiction's regions under home_regions.",
    permissions=[],
)
def jurisdiction_homes(ctx: AuditContext) -> Iterator[Finding]:
    """Each jurisdiction lists at least one home region, all inside the jurisdiction.

    Example::

        regionkit audit run --checks policy.jurisdiction_homes
    """
    me = jurisdiction_homes
    for jid, j in ctx.policy.jurisdictions.items():
        resource = _resource(ctx, "jurisdictions", jid)
        outside = [r for r in j.home_regions if r not in j.regions]
        if not j.home_regions:
            yield me.failed(
                region=GLOBAL, resource=resource, reason=f"jurisdiction {jid} has no home region"
            )
        elif outside:
            yield me.failed(
                region=GLOBAL,
                resource=resource,
                reason=f"home regions {', '.join(outside)} of {jid} are outside the jurisdiction",
            )
        else:
            yield me.passed(
                region=GLOBAL,
                resource=resource,
                reason=f"{jid} homes residents in {', '.join(j.home_regions)}",
            )


@check(
    id="policy.targets",
    title="Drill and audit targets are set",
    severity="medium",
    rationale="Targets are what drills and audits are measured against; a disabled audit "
    "requirement silently weakens every later audit.",
    remediation="Set targets.drills and keep every targets.audit requirement true.",
    permissions=[],
)
def targets(ctx: AuditContext) -> Iterator[Finding]:
    """The policy sets drill targets and keeps every audit requirement (PITR, customer-managed
    KMS, deletion protection, streams) on.

    Example::

        regionkit audit run --checks policy.targets
    """
    me = targets
    t = ctx.policy.targets
    resource = _resource(ctx, "targets")
    off = [name for name, on in t.audit.model_dump().items() if not on]
    for name in off:
        yield me.failed(
            region=GLOBAL,
            resource=resource,
            discriminator=name,
            reason=f"targets.audit.{name} is false: the audit does not require it",
        )
    if not off:
        d = t.drills
        yield me.passed(
            region=GLOBAL,
            resource=resource,
            reason=f"drills: RTO {d.rto_seconds:g} s, RPO {d.rpo_seconds:g} s, convergence "
            f"{d.convergence_seconds:g} s, every {d.max_age_days} days; every audit "
            "requirement is on",
        )


@check(
    id="policy.failover_capacity",
    title="Every jurisdiction can fail over inside itself",
    severity="info",
    rationale="Pinned data never fails over across a border; a jurisdiction with a single "
    "region has no compliant failover, so a regional outage makes its residents' data "
    "unavailable.",
    remediation="Add a second region to the jurisdiction, or accept and document the risk.",
    permissions=[],
)
def failover_capacity(ctx: AuditContext) -> Iterator[Finding]:
    """Each jurisdiction holds at least two regions, so pinned data has a compliant failover.

    Example::

        regionkit audit run --checks policy.failover_capacity
    """
    me = failover_capacity
    for jid, j in ctx.policy.jurisdictions.items():
        resource = _resource(ctx, "jurisdictions", jid)
        if len(j.regions) < 2:
            yield me.failed(
                region=GLOBAL,
                resource=resource,
                reason=f"{jid} has one region ({j.regions[0]}): its pinned data has no "
                "compliant failover",
            )
        else:
            yield me.passed(
                region=GLOBAL,
                resource=resource,
                reason=f"{jid} can fail over among {', '.join(j.regions)}",
            )
