"""Time to Live for the emulator: what DynamoDB's TTL process does, which moto never does.

moto stores a table's TTL setting and never deletes an expired item. Tombstones
(of deletes, moves and erasures) and content with ``expires_at`` rely on TTL, so
the emulator expires items itself, the way DynamoDB documents it:

* an item expires when its TTL attribute is a Number of epoch seconds **less than
  now**; an attribute of another type, or a table whose TTL is not enabled, is left
  alone. DynamoDB also skips values more than five years in the past (they are
  taken for mistakes, not expiries), and so does this;
* the deletion is an ordinary delete of the item **in one region's replica**. Its
  stream record is a ``REMOVE`` with the old image and
  ``userIdentity = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}``,
  the mark by which stream consumers tell a TTL deletion from an application's;
* the deletion **replicates** like any other change (the replication emulator reads
  the record from the stream and applies a delete in every other replica). As in
  AWS, the replicated deletes carry no ``userIdentity``: "TTL deletions that are
  replicated to global table regions are not identifiable in DynamoDB streams in
  the regions the deletion is replicated to" (the DynamoDB Developer Guide, working
  with expired items).

:func:`expire_backends` runs **inside the process that holds moto's data**: the
region's server process, on its ``expire`` command, or the test process itself
under ``mock_aws`` (:class:`regions.local.sim.Simulation`). It deletes through
moto's own table model, so indexes and the stream see exactly what a delete does.
When it runs is the caller's choice: :meth:`regions.local.cluster.LocalCluster.expire`
on demand (tests pass a ``now`` far enough ahead), and ``regionkit local up``
every ``--ttl-sweep`` seconds. DynamoDB's own process is slower (typically within
two days); nothing in regionkit relies on an expiry happening promptly, only on an
expired item eventually going, and on a read hiding what is expired but not yet gone.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["FIVE_YEARS_S", "TTL_IDENTITY", "Expired", "expire_backends", "is_expired"]

TTL_IDENTITY = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
"""The ``userIdentity`` of a stream record that DynamoDB's TTL process wrote, as the
Streams API (``GetRecords``) has it; a Lambda event spells the same fields
``type`` and ``principalId``."""

FIVE_YEARS_S = 5 * 365 * 24 * 3600
"""Older expiry times than this before now are not processed (as in DynamoDB)."""


@dataclass(frozen=True)
class Expired:
    """What one sweep deleted in one table of one region (counts, never keys)."""

    region: str
    table: str
    count: int


def is_expired(value: Any, now: float) -> bool:
    """Whether a TTL attribute (in DynamoDB JSON, ``{"N": "..."}``) has expired by ``now``."""
    if not isinstance(value, dict) or set(value) != {"N"}:
        return False
    try:
        at = Decimal(value["N"])
    except (InvalidOperation, TypeError, ValueError):
        return False
    if not at.is_finite():
        return False
    return Decimal(repr(now - FIVE_YEARS_S)) <= at < Decimal(repr(now))


def _ttl_attribute(table: Any) -> str | None:
    ttl = getattr(table, "ttl", None) or {}
    if ttl.get("TimeToLiveStatus") != "ENABLED":
        return None
    name = ttl.get("AttributeName")
    return name if isinstance(name, str) and name else None


def _snapshot(table: Any) -> list[Any]:
    """The table's items, copied out. The server's request threads may change the
    table meanwhile; a walk that loses that race is retried (moto takes no lock)."""
    for _ in range(100):
        try:
            return list(table.all_items())
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return []


def _expire_table(table: Any, attribute: str, now: float) -> int:
    doomed = []
    for item in _snapshot(table):
        attrs = item.to_json()["Attributes"]
        if is_expired(attrs.get(attribute), now):
            doomed.append((item.hash_key, item.range_key))
    count = 0
    # The delete and the mark on its stream record, with no other write in between
    # (regions.local.atomic's lock, where installed: the mark goes on the last record).
    lock = getattr(getattr(table.stream_shard, "add", None), "lock", None) or nullcontext()
    for hash_key, range_key in doomed:
        with lock:
            before = len(table.stream_shard.items) if table.stream_shard is not None else 0
            if table.delete_item(hash_key, range_key) is None:
                continue  # deleted by a request in the meantime
            count += 1
            shard = table.stream_shard
            if shard is not None and len(shard.items) > before:
                shard.items[-1].record["userIdentity"] = dict(TTL_IDENTITY)
    return count


def expire_backends(now: float, *, region: str | None = None) -> list[Expired]:
    """Delete every expired item held by this process's moto DynamoDB backends.

    ``region`` limits the sweep to that region's backends (a server process serves
    one region; in-process moto holds them all). Returns what was deleted, per
    region and table, in a stable order.
    """
    from moto.dynamodb.models import dynamodb_backends

    out: list[Expired] = []
    for _account, by_region in sorted(dynamodb_backends.items()):
        for name, backend in sorted(by_region.items()):
            if region is not None and name != region:
                continue
            for table_name, table in sorted(backend.tables.items()):
                attribute = _ttl_attribute(table)
                if attribute is None:
                    continue
                count = _expire_table(table, attribute, now)
                if count:
                    out.append(Expired(name, table_name, count))
    return out
