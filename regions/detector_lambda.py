"""AWS Lambda entry point: the conflict detector on a DynamoDB Streams event source.

Deployed by the CDK app (``infra/``) on every replica's stream with handler
``regions.detector_lambda.handler``. Configuration comes from the environment:

* ``REGIONKIT_POLICY``: path of the policy file inside the deployment package;
* ``REGIONKIT_TABLE_PREFIX``: the table-name prefix, if any;
* ``AWS_REGION``: set by Lambda; the region whose stream this is.

The function returns ``batchItemFailures`` (partial batch responses): a record
whose conflict could not be logged is retried by Lambda, never dropped.
"""

from __future__ import annotations

import os
from typing import Any

from regions.conflicts import ConflictDetector

__all__ = ["build_detector", "handler", "table_from_arn"]

_detector: ConflictDetector | None = None


def table_from_arn(arn: str) -> str:
    """``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`` → ``NAME``."""
    try:
        return arn.split(":", 5)[5].split("/")[1]
    except IndexError:
        raise ValueError(f"not a DynamoDB stream ARN: {arn!r}") from None


def build_detector() -> ConflictDetector:
    from regions.pool import ClientPool
    from residency.policy import load_policy
    from residency.settings import load_settings

    settings = load_settings(mode=os.environ.get("REGIONKIT_MODE", "aws"))
    policy = load_policy(
        os.environ.get("REGIONKIT_POLICY", settings.policy),
        max_bytes=settings.policy_max_bytes,
        merge_modules=settings.merge_modules,
    )
    return ConflictDetector(policy, ClientPool(settings), table_prefix=settings.table_prefix)


def handler(
    event: dict[str, Any], context: Any = None, detector: ConflictDetector | None = None
) -> dict[str, Any]:
    global _detector
    if detector is None:
        if _detector is None:
            _detector = build_detector()
        detector = _detector
    failures: list[dict[str, str]] = []
    conflicts = 0
    for record in event.get("Records", []):
        region = record.get("awsRegion") or os.environ.get("AWS_REGION", "")
        try:
            table = table_from_arn(record["eventSourceARN"])
            if detector.process(region, table, record) is not None:
                conflicts += 1
        except Exception:  # report the record; Lambda retries it (no silent loss)
            seq = record.get("dynamodb", {}).get("SequenceNumber", "")
            failures.append({"itemIdentifier": seq})
    return {"batchItemFailures": failures, "conflicts": conflicts}
