"""The subject fence: one tombstone that refuses every later write of an erased subject.

An item fence (:mod:`regions.tombstones`) refuses writes to the key it sits on. A
pinned class with a sort key has no key to fence for items that do not exist yet: a
process whose directory cache still holds an erased user could write a *new* sort key
for them after the erasure said ``done``.

So each such class keeps, per subject, one reserved item, ``(user ID,
SUBJECT_FENCE_SK)``, absent until the subject is erased. The erasure writes it as an
``erased`` fence in every region of the subject's jurisdictions, and every write of
the class goes in a transaction that also checks it (``ConditionCheck``:
no tombstone there). DynamoDB evaluates both at once, in the region written, so no
cache, no stall and no clock lets a write through once the fence has reached that
region; the erasure reaches every region before it reports ``done``.

The price: a write of such a class is a two-item transaction, and DynamoDB charges a
transaction two write units per item (the check included): about four times a plain
put's units, and a little more latency.
Classes without a sort key need none of this: their one item per subject carries the
fence itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from regions.tombstones import DEL_ATTR
from regions.transport import error_code
from residency.errors import ConfigError
from residency.policy import PinnedDataClass

__all__ = [
    "SUBJECT_FENCE_SK",
    "fence_check",
    "fence_key",
    "fenced_call",
    "is_fence",
    "refuse_reserved",
]

#: The sort key of a subject's fence item (refused as a service's own sort key).
SUBJECT_FENCE_SK = "rk#subject-fence"

_CCF = "ConditionalCheckFailedException"
Call = Callable[[Any, Any], Any]


def fence_key(dc: PinnedDataClass, subject: str) -> dict[str, str]:
    """The key of ``subject``'s fence item in a pinned class with a sort key."""
    if dc.sort_key is None:
        raise ValueError("a class without a sort key fences its one item instead")
    return {dc.partition_key: subject, dc.sort_key: SUBJECT_FENCE_SK}


def is_fence(dc: Any, key: dict[str, Any]) -> bool:
    return bool(getattr(dc, "sort_key", None)) and key.get(dc.sort_key) == SUBJECT_FENCE_SK


def refuse_reserved(data_class: str, dc: Any, key: dict[str, Any]) -> None:
    if is_fence(dc, key):
        raise ConfigError(
            message=f"{data_class}.{dc.sort_key} {SUBJECT_FENCE_SK!r} is reserved by regionkit "
            "(the subject's erasure fence); choose another sort key"
        )


def fence_check(table: str, ddb_fence_key: dict[str, Any]) -> dict[str, Any]:
    """The transaction item that refuses the write once the subject's fence is there."""
    return {
        "ConditionCheck": {
            "TableName": table,
            "Key": ddb_fence_key,
            "ConditionExpression": "attribute_not_exists(#fence)",
            "ExpressionAttributeNames": {"#fence": DEL_ATTR},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def fenced_call(call: Call, ddb_fence_key: dict[str, Any]) -> Call:
    """``call`` with its put or update sent as a transaction that also checks the fence."""

    def send(route: Any, client: Any) -> Any:
        return call(route, _FencedClient(client, route.table_name, ddb_fence_key))

    return send


class _FencedClient:
    """A client whose ``put_item``/``update_item`` is a transaction with the fence check.

    A failed condition, on the item or on the fence, is answered as the plain request's
    would be (``ConditionalCheckFailedException`` with the ``Item`` met), so the writer
    handles both alike: the fence's ``erased`` tombstone refuses the write.
    """

    def __init__(self, client: Any, table: str, fence: dict[str, Any]) -> None:
        self._client = client
        self._check = fence_check(table, fence)

    def put_item(self, **request: Any) -> Any:
        return self._send("Put", request)

    def update_item(self, **request: Any) -> Any:
        return self._send("Update", request)

    def _send(self, op: str, request: dict[str, Any]) -> Any:
        from botocore.exceptions import ClientError

        try:
            return self._client.transact_write_items(TransactItems=[self._check, {op: request}])
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or []
            met = next((r for r in reasons if r.get("Code") == "ConditionalCheckFailed"), None)
            if met is None:
                raise  # a conflicting transaction or throttling: the caller's to retry
            answer: dict[str, Any] = {"Error": {"Code": _CCF, "Message": "a condition failed"}}
            if met.get("Item"):
                answer["Item"] = met["Item"]
        # Raised outside the except block: the cancelled request (with its item) is
        # neither the cause nor the context of what the writer sees.
        raise ClientError(answer, "TransactWriteItems")  # type: ignore[arg-type]
