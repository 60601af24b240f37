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
                setattr(cls, name, _locked(method))
    return _LOCK
