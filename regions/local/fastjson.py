"""moto's response serializer, skipped where it provably changes nothing; and moto's
per-request listing of a handler's methods, memoised.

moto 5.2 serializes every response by walking the operation's output shape in
botocore's service model, value by value (``moto.core.serialize``). For the
results that carry items (DynamoDB's item operations, DynamoDB Streams'
``GetRecords``) that walk is most of a call's CPU: a scan of 200 small items
spends about 80 ms in it, against 20 ms for everything else. Those results are
already wire-shaped (moto builds them in DynamoDB JSON), so ``json.dumps`` with
two conversions (bytes as base64, datetimes as epoch seconds, the JSON
protocol's own rules) writes the same document.

"The same" is checked, not assumed: with ``FastResults.check`` set, it runs
both serializers on every result and records each operation whose documents
differ (``tests/test_local_server_contract.py`` drives every item operation with
every attribute type through it and requires no difference). Any other result,
and every error, goes through moto's serializer as before.

Standard library and moto only: the server process loads this file by path.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ITEM_OPERATIONS", "FastResults", "install", "memoise_method_names"]

ITEM_OPERATIONS: dict[str, frozenset[str]] = {
    "dynamodb": frozenset(
        {
            "BatchGetItem",
            "BatchWriteItem",
            "DeleteItem",
            "GetItem",
            "PutItem",
            "Query",
            "Scan",
            "TransactGetItems",
            "TransactWriteItems",
            "UpdateItem",
        }
    ),
    "dynamodbstreams": frozenset({"GetRecords"}),
}
"""Service (boto3 name) → the operations whose results skip moto's serializer."""


@dataclass
class FastResults:
    """What the fast path did, for the contract test and the benchmark."""

    hits: int = 0
    operations: set[str] = field(default_factory=set)  # those that took the fast path
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)  # operation names only, no values
    check: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _wire(value: object) -> object:
    """The two types moto's results hold that JSON does not: as moto's serializer writes them."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.datetime):  # truncated to the millisecond, as the Smithy
        base = calendar.timegm(value.timetuple())  # spec (and moto) say
        return base + (value.microsecond // 1000) / 1000.0 if value.microsecond else base
    raise TypeError(f"no wire form for {type(value).__name__}")


_LOCK = threading.Lock()
_MARK = "regionkit_fast_results"  # on the installed function: one install per process,
# even when this file is loaded twice (by path in the server, by name in the simulation)


def memoise_method_names() -> Callable[..., Any]:
    """Memoise ``moto.core.responses.method_names_from_class``, which moto calls on
    every request to list a response class's methods (``inspect.getmembers``: a
    quarter of a put's CPU). The names of a class's methods do not change at run
    time. Idempotent; returns the memoised function (the contract test checks it is hit)."""
    from moto.core import responses
    from moto.core.utils import method_names_from_class

    current: Any = getattr(responses, "method_names_from_class", None)
    if hasattr(current, "cache_info"):
        return current  # type: ignore[no-any-return]
    cached = functools.lru_cache(maxsize=None)(method_names_from_class)
    responses.method_names_from_class = cached  # type: ignore[attr-defined]
    return cached


def install() -> FastResults:
    """Install both speed-ups, once per process (idempotent): item results around moto's
    serializer, and :func:`memoise_method_names`.

    Returns the shared counters; set their ``check`` to run moto's serializer beside
    the fast path and record every operation whose documents differ."""
    from moto.core.responses import ActionResult

    memoise_method_names()
    with _LOCK:
        installed = getattr(ActionResult.execute_result, _MARK, None)
        if installed is not None:
            return installed  # type: ignore[no-any-return]
        stats = FastResults()
        original: Callable[..., Any] = ActionResult.execute_result

        def execute_result(self: Any, context: Any) -> Any:
            ops = ITEM_OPERATIONS.get(context.service_model.service_name)
            result = self.result
            if ops is None or context.operation_model.name not in ops:
                return original(self, context)
            if not isinstance(result, dict):  # an error, or an unexpected shape: moto's way
                return original(self, context)
            status = context.operation_model.http.get("responseCode", 200)
            version = context.service_model.metadata.get("jsonVersion", "1.0")
            headers = {"Content-Type": f"application/x-amz-json-{version}"}
            members = context.operation_model.output_shape.members
            if not result.keys() <= members.keys() or None in result.values():
                # moto's serializer writes the shape's members only, and no nulls
                result = {k: v for k, v in result.items() if k in members and v is not None}
            body = json.dumps(result, default=_wire)
            with stats._lock:
                stats.hits += 1
                stats.operations.add(context.operation_model.name)
            if stats.check:
                _compare(stats, original(self, context), (status, headers, body), context)
            return status, headers, body

        setattr(execute_result, _MARK, stats)
        ActionResult.execute_result = execute_result  # type: ignore[method-assign]
        return stats


def _compare(stats: FastResults, slow: Any, fast: Any, context: Any) -> None:
    same = slow[0] == fast[0] and slow[1] == fast[1] and json.loads(slow[2]) == json.loads(fast[2])
    with stats._lock:
        stats.checked += 1
        if not same:
            stats.mismatches.append(str(context.operation_model.name))
