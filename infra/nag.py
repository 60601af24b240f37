"""cdk-nag wiring: the AwsSolutions pack, and acknowledgments that carry a reason.

cdk-nag 3.x runs as a CDK policy-validation plugin
(``Validations.of(app).add_plugins(...)``); a finding that is not acknowledged
fails the synth. ``NagSuppressions`` of cdk-nag 2.x is gone: a finding is
acknowledged with ``Validations.of(construct).acknowledge(...)``, one finding id
at a time (``AwsSolutions-IAM5[Resource::...]``), and always with a reason.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import IConstruct

__all__ = [
    "NAG_ACCOUNT",
    "NAG_PARTITION",
    "acknowledge",
    "acknowledge_wildcards",
    "add_aws_solutions_checks",
]

#: How cdk-nag writes the partition and account tokens in the ids of its findings.
NAG_PARTITION = "<AWS::Partition>"
NAG_ACCOUNT = "<AWS::AccountId>"


def add_aws_solutions_checks(app: cdk.App) -> None:
    from cdk_nag import AwsSolutionsChecks

    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))


def acknowledge(scope: IConstruct, *findings: tuple[str, str]) -> None:
    """Acknowledge ``(finding id, reason)`` pairs on ``scope`` and everything under it."""
    cdk.Validations.of(scope).acknowledge(
        *(cdk.Acknowledgment(id=finding, reason=reason) for finding, reason in findings)
    )


#: A wildcard in an explicit Deny widens what is refused, never what is granted.
DENY_WILDCARD_REASON = (
    "An explicit Deny: the wildcard (any region, any sub-resource of the pinned table) "
    "widens what is refused, never what is granted."
)


def acknowledge_wildcards(
    scope: IConstruct, statements: list[dict[str, Any]], reasons: dict[str, str]
) -> None:
    """Acknowledge IAM5 for each wildcard resource of ``statements``, with its reason.

    ``statements`` must be rendered with :data:`NAG_PARTITION` and
    :data:`NAG_ACCOUNT`, so their resources read as cdk-nag's finding ids do. A
    wildcard in a statement without a reason in ``reasons`` is a bug (KeyError).
    """
    findings: dict[str, str] = {}
    for stmt in statements:
        resources = stmt["Resource"]
        for resource in [resources] if isinstance(resources, str) else resources:
            if "*" not in resource:
                continue
            reason = DENY_WILDCARD_REASON if stmt.get("Effect") == "Deny" else reasons[stmt["Sid"]]
            findings[f"AwsSolutions-IAM5[Resource::{resource}]"] = reason
    if findings:
        acknowledge(scope, *findings.items())
