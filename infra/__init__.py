"""The AWS CDK app built from the policy. The only package that imports ``aws_cdk``.

Modules, pure Python first (``regionkit`` commands and the tests read them without
paying for a CDK import):

* :mod:`infra.access`: IAM statements (services, detector, FIS) as plain JSON;
* :mod:`infra.asset`, :mod:`infra.summary`: the detector's code, template summaries.

The plan it builds from lives in the base layer, because the drills read it too
(``regions`` may not import ``infra``): :mod:`residency.deployment` (which table
lives where: one global table per global data class, one per jurisdiction for a
pinned class, the conflict log everywhere), :mod:`residency.fis_template` (the FIS
pause-replication experiment and its stop alarm as plain dicts, shared by the CDK
construct and ``regionkit drill run --target aws``) and :mod:`residency.names` (the
deterministic names that join stacks across regions).

and the CDK side: :mod:`infra.tables`, :mod:`infra.monitoring`, :mod:`infra.detector`,
:mod:`infra.fis`, :mod:`infra.iam` (one construct each, keyword-only props),
:mod:`infra.stacks` (the stack layout), :mod:`infra.nag` and :mod:`infra.app`
(the entry point of ``cdk.json`` and of ``regionkit infra synth``).
"""
