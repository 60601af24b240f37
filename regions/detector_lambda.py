"""AWS Lambda entry point: the conflict detector on a DynamoDB Streams event source.

Deployed by the CDK app (``infra/``) on every replica's stream with handler
``regions.detector_lambda.handler``. Configuration comes from the environment:

* ``REGIONKIT_POLICY``: path of the policy file inside the deployment package;
* ``REGIONKIT_TABLE_PREFIX``: the table-name prefix, if any;
* ``AWS_REGION``: set by Lambda; the region whose stream this is.

The function returns ``batchItemFailures`` (partial batch responses; the event
source mapping has ``ReportBatchItemFailures``): a record whose conflict could not
be logged is retried by Lambda, never dropped.

Each region's detector sees only its own region's streams, so it shares parents
through the lineage table (:mod:`regions.lineage`, ``REGIONKIT_LINEAGE_TABLE``):

1. the parents of the batch's writes that originated in this region are learned and
   written to the lineage table first (a failure fails the invocation: Lambda
   retries the whole batch);
2. the parents the batch's replicated blind writes need are looked up, 100 keys a
   ``BatchGetItem``;
3. a record whose entry has not replicated yet waits: the handler looks again, with
   backoff, for up to ``REGIONKIT_LINEAGE_WAIT_S`` seconds (default 45, never past
   the invocation's last 10 s), then reports it in ``batchItemFailures``, so Lambda
   retries from it. Once the record is ``REGIONKIT_LINEAGE_MAX_AGE_S`` old (default
   240 s, under the iterator-age alarm's 300 s) it is counted and logged as
   ``undetermined``, never as a conflict.
"""

from __future__ import annotations

import os
import time
from typing import Any

from regions.conflicts import LINEAGE_MAX_AGE_S, ConflictDetector
from regions.lineage import LineagePending
from residency.logs import get_logger

__all__ = ["build_detector", "handler", "table_from_arn"]

log = get_logger("regionkit.detector")

_detector: ConflictDetector | None = None
LINEAGE_WAIT_S = 45.0  # within one invocation (the function's timeout is 60 s)
_MARGIN_S = 10.0  # an invocation never waits into its last seconds


def table_from_arn(arn: str) -> str:
    """``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`` → ``NAME``."""
    try:
        return arn.split(":", 5)[5].split("/")[1]
    except IndexError:
        raise ValueError(f"not a DynamoDB stream ARN: {arn!r}") from None


def build_detector() -> ConflictDetector:
    from regions.lineage import SharedLineage
    from regions.pool import ClientPool
    from residency.policy import load_policy
    from residency.settings import load_settings

    settings = load_settings(mode=os.environ.get("REGIONKIT_MODE", "aws"))
    policy = load_policy(
        os.environ.get("REGIONKIT_POLICY", settings.policy),
        max_bytes=settings.policy_max_bytes,
        merge_modules=settings.merge_modules,
    )
    clients = ClientPool(settings)
    table = os.environ.get(
        "REGIONKIT_LINEAGE_TABLE", settings.table_prefix + policy.system.lineage_table
    )
    detector = ConflictDetector(
        policy,
        clients,
        table_prefix=settings.table_prefix,
        shared=SharedLineage(clients, table),
        lineage_max_age_s=float(os.environ.get("REGIONKIT_LINEAGE_MAX_AGE_S", LINEAGE_MAX_AGE_S)),
    )
    detector.lineage_wait_s = float(os.environ.get("REGIONKIT_LINEAGE_WAIT_S", LINEAGE_WAIT_S))
    return detector


def _remaining_s(context: Any) -> float:
    get = getattr(context, "get_remaining_time_in_millis", None)
    return float(get()) / 1000 if callable(get) else float("inf")


def handler(
    event: dict[str, Any], context: Any = None, detector: ConflictDetector | None = None
) -> dict[str, Any]:
    global _detector
    if detector is None:
        if _detector is None:
            _detector = build_detector()
        detector = _detector
    started = time.monotonic()
    budget = min(detector.lineage_wait_s, _remaining_s(context) - _MARGIN_S)
    failures: list[dict[str, str]] = []
    conflicts = 0
    items: list[tuple[str, str, dict[str, Any]] | None] = []
    for record in event.get("Records", []):
        region = record.get("awsRegion") or os.environ.get("AWS_REGION", "")
        try:
            items.append((region, table_from_arn(record["eventSourceARN"]), record))
        except (KeyError, ValueError):
            items.append(None)
    known = [i for i in items if i is not None]
    detector.learn_landings(known)
    detector.publish_lineage()  # raises: the whole batch is retried
    detector.prefetch_lineage(known)
    pause = 0.05
    for n, item in enumerate(items):
        record = event["Records"][n]
        try:
            if item is None:
                raise ValueError("not a DynamoDB stream record")
            region, table, _ = item
            while True:
                try:
                    found = detector.process(region, table, record)
                    break
                except LineagePending:
                    if time.monotonic() - started + pause > budget:
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    detector.prefetch_lineage([i for i in items[n:] if i is not None])
            if found is not None:
                conflicts += 1
        except Exception as exc:  # report the record; Lambda retries it (no silent loss)
            seq = record.get("dynamodb", {}).get("SequenceNumber", "")
            failures.append({"itemIdentifier": seq})
            # By kind and sequence number only: an error's text may quote an item value.
            # The number goes as an int (the redactor takes a digit string for a phone).
            # Waiting for a lineage entry is expected (Lambda retries); anything else warns.
            (log.info if isinstance(exc, LineagePending) else log.warning)(
                "record retried",
                sequence=int(seq) if str(seq).isdigit() else None,
                error=type(exc).__name__,
            )
    detector.publish_lineage()
    return {"batchItemFailures": failures, "conflicts": conflicts}
