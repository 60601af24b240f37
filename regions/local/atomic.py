"""moto's DynamoDB writes made atomic, as DynamoDB's are.

moto serves requests on several threads (the local servers run a pool of eight) but
its DynamoDB backend takes no lock. Two things then go wrong under concurrent writes,
both measured (``tests/test_moto_atomic.py``):

* **a stream shard hands out one sequence number twice.** ``StreamShard.add``
  computes ``len(items) + start`` and appends later, after building the record; a
  thread switch in between gives two records one number. Every later record's
  number is then one below its position, and a reader that resumes after the last
  number it read is handed that record again on every poll, for ever. The
  replication emulator took each re-delivery for a new write and sent it round
  the regions: the replicas were identical, yet never quiet (the intermittent
  "did not converge" of the demo and the drills).
* **a conditional write is checked and applied in two steps**, so two writers
  can both pass ``attribute_not_exists`` (the residency fences rely on conditions).

:func:`install` runs every DynamoDB write of the backend (and every stream append)
under one re-entrant lock per process. Reads stay concurrent. Only the standard
library and moto are imported: the server process loads this module by path.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["WRITES", "install"]

WRITES = (
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "execute_statement",
    "execute_transaction",
    "batch_execute_statement",
)
"""The ``DynamoDBBackend`` methods that write (``batch_write_item`` calls
``put_item`` and ``delete_item`` per item, which is what DynamoDB guarantees too)."""

_MARK = "_regionkit_atomic"
_LOCK = threading.RLock()


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    setattr(run, _MARK, True)
    run.lock = _LOCK  # type: ignore[attr-defined]  # for code that must hold it too
    return run


def _condition_failures(backend: Any, transact_items: list[dict[str, Any]]) -> list[Any] | None:
    """The cancellation reasons of a transaction whose conditions do not all hold, judged
    on the current state before anything is written; None when they all hold."""
    from moto.dynamodb.comparisons import get_filter_expression

    reasons: list[Any] = []
    seen: set[str] = set()
    try:
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            table = backend.get_table(op["TableName"])
            if op_type == "Put":
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            one = f"{op['TableName']}\0{sorted(key.items())}"
            if one in seen:
                return None  # two ops on one item: a ValidationException, moto's to answer
            seen.add(one)
            current = backend.get_item(op["TableName"], key)
            expr = op.get("ConditionExpression")
            holds = expr is None or get_filter_expression(
                expr, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            ).expr(current)
            if holds:
                reasons.append((None, None, None))
                continue
            old = None
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                old = current.to_json()["Attributes"]
            reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
    except Exception:  # a malformed request: moto's own path answers it
        return None
    return reasons if any(code is not None for code, _, _ in reasons) else None


def _transact(method: Callable[..., Any]) -> Callable[..., Any]:
    """moto applies a transaction's writes one by one, and when one fails swaps in a deep
    copy of each table taken before: the stream records of the writes it undid stay in
    the stream the replication emulator reads (a refused write replicated to every other
    region), and the emulator keeps reading a stream the table no longer writes to. So
    the conditions are judged first (nothing is written unless all hold, as in
    DynamoDB), and any other failure (an item too large, a bad update) has its records
    dropped and the stream object kept."""

    @functools.wraps(method)
    def run(backend: Any, transact_items: list[dict[str, Any]], *args: Any, **kw: Any) -> Any:
        with _LOCK:
            reasons = _condition_failures(backend, transact_items)
            if reasons is not None:
                from moto.dynamodb.exceptions import TransactionCanceledException

                raise TransactionCanceledException(reasons)
            streams = _stream_marks(backend, transact_items)
            try:
                return method(backend, transact_items, *args, **kw)
            except Exception:
                _roll_back_streams(backend, streams)
                raise

    setattr(run, _MARK, True)
    run.lock = _LOCK  # type: ignore[attr-defined]
    return run


def _stream_marks(backend: Any, transact_items: list[dict[str, Any]]) -> dict[str, Any]:
    """Each table a transaction touches, with its stream's length before it runs."""
    marks: dict[str, Any] = {}
    for entry in transact_items:
        op: dict[str, Any] = next(iter(entry.values()), {})
        name = str(op.get("TableName", ""))
        table = backend.tables.get(name)
        if table is not None and name not in marks:
            shard = table.stream_shard
            marks[name] = (table, shard, len(shard.items) if shard is not None else 0)
    return marks


def _roll_back_streams(backend: Any, marks: dict[str, Any]) -> None:
    """After moto undid a failed transaction (swapping in copies of its tables, taken
    before): drop the stream records of the writes it undid, and keep the stream object
    readers already follow (the copy's own stream would leave them reading the old one)."""
    for name, (table, shard, length) in marks.items():
        if shard is None:
            continue
        del shard.items[length:]
        now = backend.tables.get(name)
        if now is not None and now is not table:
            now.stream_shard = shard
            shard.table = now


def install() -> threading.RLock:
    """Serialise moto's DynamoDB writes and stream appends (idempotent); the lock.

    Raises AttributeError if moto no longer has a method this relies on, so that a
    moto upgrade fails loudly (the contract test) instead of racing again quietly.
    """
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard

    targets: list[tuple[type, str]] = [(DynamoDBBackend, name) for name in WRITES]
    targets.append((StreamShard, "add"))
    with _LOCK:
        for cls, name in targets:
            method = getattr(cls, name)
            if not getattr(method, _MARK, False):
                wrap = _transact if name == "transact_write_items" else _locked
                setattr(cls, name, wrap(method))
    return _LOCK
