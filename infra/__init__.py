"""The AWS CDK app built from the policy. The only package that imports ``aws_cdk``.

Modules, pure Python first (``regionkit`` commands and the tests read them without
paying for a CDK import):

* :mod:`infra.plan`: which table lives where (one global table per global data
  class, one per jurisdiction for a pinned class, the conflict log everywhere);
* :mod:`residency.names` (the base layer): the deterministic names that join stacks across regions
  (stack names, KMS aliases, alarm names, the FIS output key);
* :mod:`infra.access`: IAM statements (services, detector, FIS) as plain JSON;
* :mod:`infra.fis_template`: the FIS pause-replication experiment as a plain dict,
  shared by the CDK construct and ``regionkit drill --target aws``;
* :mod:`infra.asset`, :mod:`infra.summary`: the detector's code, template summaries.

and the CDK side: :mod:`infra.tables`, :mod:`infra.monitoring`, :mod:`infra.detector`,
:mod:`infra.fis`, :mod:`infra.iam` (one construct each, keyword-only props),
:mod:`infra.stacks` (the stack layout), :mod:`infra.nag` and :mod:`infra.app`
(the entry point of ``cdk.json`` and of ``regionkit infra synth``).
"""
