"""Data-subject checks: erased subjects stay erased.

An erased subject is known by its directory entry: an ``erased`` tombstone
(``rk_del``), stamped with the HLC version of the erasure. For every erased subject
the check reads every replica of every table the policy says can hold the subject's
items (pinned tables by key, global classes by their ``by-subject`` index) and
reports:

* an item of the subject still live after the grace period: the erasure did not
  finish (high);
* a live item whose version is newer than the erasure: it came back (high), whatever
  the grace period.

Items are named by keyed pseudonym; nothing read from an item reaches a finding.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from residency.audit.context import AuditContext
from residency.audit.model import Finding
from residency.audit.registry import check
from residency.policy import GlobalDataClass, PinnedDataClass

GRACE = timedelta(hours=24)
_INDEX = "by-subject"


def _stamp_time(stamp: str) -> datetime | None:
    """The wall time inside an HLC stamp (``<12 hex ms>.…``)."""
    try:
        return datetime.fromtimestamp(int(stamp.split(".", 1)[0], 16) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _pages(client: Any, op: str, **req: Any) -> Iterator[dict[str, Any]]:
    while True:
        page = getattr(client, op)(**req)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        req["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _erased_subjects(ctx: AuditContext, region: str, table: str) -> dict[str, str]:
    """user ID → erasure stamp, from one directory replica (keys and rk_* only)."""
    client = ctx.clients.client("dynamodb", region)
    out: dict[str, str] = {}
    for raw in _pages(
        client,
        "scan",
        TableName=table,
        FilterExpression="#d = :e",
        ProjectionExpression="#pk, #v",
        ExpressionAttributeNames={"#d": "rk_del", "#pk": "pk", "#v": "rk_v"},
        ExpressionAttributeValues={":e": {"S": "erased"}},
    ):
        uid = raw.get("pk", {}).get("S")
        if uid:
            out[uid] = raw.get("rk_v", {}).get("S", "")
    return out


def _live_versions(
    ctx: AuditContext, region: str, table: str, attr: str, uid: str, index: str | None
) -> list[tuple[dict[str, Any], str]]:
    """(key, version) of the subject's live items in one table replica."""
    client = ctx.clients.client("dynamodb", region)
    req: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "#s = :s",
        "ExpressionAttributeNames": {"#s": attr},
        "ExpressionAttributeValues": {":s": {"S": uid}},
    }
    if index:
        req["IndexName"] = index
    else:
        req["ConsistentRead"] = True
    out = []
    for raw in _pages(client, "query", **req):
        if "rk_del" not in raw:
            out.append((raw, raw.get("rk_v", {}).get("S", "")))
    return out


@check(
    id="subjects.erasures",
    title="Erased subjects stay erased",
    severity="high",
    rationale="An erasure that left an item behind, or an item that came back after it, "
    "is personal data held without a basis (GDPR Art. 17, DPDP s.12, LGPD Art. 18 VI).",
    remediation="Run `regionkit subject erase USER --resume` for the subject; a resurrected "
    "item means a writer bypassed the router or a fence expired: find the writer.",
    permissions=["dynamodb:Scan", "dynamodb:Query"],
)
def erasures(ctx: AuditContext) -> Iterator[Finding]:
    """Reads every replica for the items of each erased subject.

    Example::

        regionkit audit run --checks subjects.erasures
    """
    me = erasures
    policy = ctx.policy
    directory = policy.data_classes[policy.system.directory]
    assert isinstance(directory, GlobalDataClass)
    dir_table = ctx.options.table_prefix + directory.table
    erased: dict[str, str] = {}
    for region in directory.replicas:
        if region not in ctx.options.regions:
            continue
        try:
            erased.update(_erased_subjects(ctx, region, dir_table))
        except Exception as exc:
            ctx.note_failure(region, exc)
            yield me.error(
                region=region,
                resource=ctx.arn(region, dir_table),
                reason="the directory could not be read, so erased subjects are unknown here",
            )
    now = ctx.options.now.astimezone(UTC)
    for uid, stamp in sorted(erased.items()):
        when = _stamp_time(stamp)
        yield from _check_subject(ctx, me, uid, stamp, when, now)


def _targets(ctx: AuditContext) -> Iterator[tuple[str, str, str, str | None, str]]:
    """(region, table, attribute, index, partition key) of every replica that can hold a
    subject's items: pinned tables everywhere (a copy abroad counts too), global classes
    that name a subject attribute in their replicas."""
    for dc in ctx.policy.data_classes.values():
        table = ctx.options.table_prefix + dc.table
        if isinstance(dc, PinnedDataClass):
            for region in ctx.policy.regions:
                yield region, table, dc.partition_key, None, dc.partition_key
        elif dc.subject_attribute:
            for region in dc.replicas:
                yield region, table, dc.subject_attribute, _INDEX, dc.partition_key


def _check_subject(
    ctx: AuditContext,
    me: Any,
    uid: str,
    stamp: str,
    when: datetime | None,
    now: datetime,
) -> Iterator[Finding]:
    subject = ctx.subject(uid)
    left = 0
    for region, table, attr, index, pk_name in _targets(ctx):
        if region not in ctx.options.regions:
            continue
        try:
            live = _live_versions(ctx, region, table, attr, uid, index)
        except Exception as exc:
            ctx.note_failure(region, exc)
            yield me.error(
                region=region,
                resource=ctx.arn(region, table),
                reason=f"subject {subject} could not be checked here (the table is unreadable)",
            )
            continue
        for key, version in live:
            left += 1
            resource = ctx.arn(region, table)
            item = ctx.item(table, next(iter(key.get(pk_name, {}).values()), ""))
            if version and stamp and version > stamp:
                yield me.failed(
                    region=region,
                    resource=resource,
                    severity="high",
                    reason=f"item {item} of erased subject {subject} came back after the "
                    "erasure (its version is newer than the erasure's)",
                )
            elif when is None or now - when > GRACE:
                yield me.failed(
                    region=region,
                    resource=resource,
                    severity="high",
                    reason=f"item {item} of subject {subject}, erased more than "
                    f"{GRACE.total_seconds() / 3600:g} h ago, is still held",
                )
    if not left:
        yield me.passed(
            region="global",
            resource=f"subject/{subject}",
            reason=f"erased subject {subject} holds nothing in any readable replica",
        )
