"""Transactions inside one region: all or nothing, with the same stamps and fences as writes.

DynamoDB transactions are ACID only in the region where they run; their items replicate
one by one. So every item of a :meth:`Transactions.transact` must route to the same
region (pinned items by their own subjects, the guard applied to each); items that
would route to different regions are refused before anything is sent. Each put or
delete carries the single write's condition (stamp, and no move or erasure fence), and
a ``condition_check`` lets the caller require an item's version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

from regions.codec import (
    AT_ATTR,
    RESERVED,
    TOKEN_ATTR,
    VERSION_ATTR,
    VV_ATTR,
    from_ddb,
    item_size,
)
from regions.conditions import condition, keep_reserved, vv_value
from regions.routing import Route
from regions.subject_fence import fence_check, fence_key, refuse_reserved
from regions.tombstones import DELETED, tombstone_body
from regions.transport import error_code
from regions.versioned import VersionedStore, Written
from residency.errors import BackendError, ConfigError, StaleWrite
from residency.policy import PinnedDataClass

__all__ = ["Transactions"]

Op = tuple[Literal["put", "delete", "check"], str, dict[str, Any]]
MAX_ITEMS = 100
MAX_BYTES = 4 * 1024 * 1024


class Transactions:
    def __init__(self, store: VersionedStore) -> None:
        self.store = store

    def transact(self, ops: Sequence[Op], *, based_on: dict[int, str] | None = None) -> Written:
        """Run ``ops`` (``("put", class, item)``, ``("delete", class, key)``,
        ``("check", class, key)``) atomically; ``based_on`` maps an op's index to the
        version it requires (a compare-and-set inside the transaction)."""
        s = self.store
        if not ops or len(ops) > MAX_ITEMS:
            raise ConfigError(message=f"a transaction takes 1 to {MAX_ITEMS} items, got {len(ops)}")
        based_on = based_on or {}
        stamp = s.clock.now_text()
        seen: set[tuple[str, str]] = set()
        regions: dict[str, list[int]] = {}
        keys: list[dict[str, Any]] = []
        for i, (op, data_class, body) in enumerate(ops):
            key = s.key_of(data_class, body)
            named = (data_class, s.named(data_class, key))
            if named in seen:
                raise ConfigError(message=f"item #{i} appears twice in the transaction")
            seen.add(named)
            if op == "put" and data_class not in s.pinned:
                s.guard.check_no_pii(op="write", data_class=data_class, item=body)
            if op == "put" and RESERVED & body.keys():
                raise ConfigError(message=f"attributes {sorted(RESERVED)} are managed by regionkit")
            subject = s.subject_of(data_class, key, None)
            op_kind: Literal["read", "write"] = "read" if op == "check" else "write"
            region = s.decider(data_class, subject, op_kind)(()).region
            regions.setdefault(region, []).append(i)
            keys.append(key)
        if len(regions) > 1:
            where = "; ".join(f"{r}: items {v}" for r, v in sorted(regions.items()))
            raise ConfigError(
                message=f"the items route to different regions ({where}); DynamoDB "
                "transactions are atomic only inside one region: split the transaction"
            )
        region = next(iter(regions))
        items = [self._item(i, op, stamp, based_on.get(i), region) for i, op in enumerate(ops)]
        fences = self._subject_fences(ops, keys)
        if len(items) + len(fences) > MAX_ITEMS:
            raise ConfigError(
                message=f"{len(ops)} items and {len(fences)} subject fence checks exceed "
                f"DynamoDB's {MAX_ITEMS} per transaction: split it"
            )
        items += [check for _, _, check in fences]
        bodies = [action for item in items for action in item.values()]
        size = sum(item_size(a.get("Item") or a.get("Key") or {}) for a in bodies)
        if size > MAX_BYTES:
            raise ConfigError(
                message=f"the transaction's items total {size} bytes; DynamoDB takes at most "
                f"{MAX_BYTES} (4 MB) in one transaction: split it"
            )
        route = Route(region, "", "transaction", False, "")
        try:
            s.transport.call_at(route, lambda r, c: c.transact_write_items(TransactItems=items))
        except Exception as exc:
            failed = self._cancelled(exc, ops, keys)
            if failed is None:
                raise
        else:
            return Written(stamp, route)
        i, current = failed
        raise self._stale(i, current, ops, keys, fences, region, based_on)

    def _stale(
        self,
        i: int,
        current: dict[str, Any],
        ops: Sequence[Op],
        keys: list[dict[str, Any]],
        fences: list[tuple[str, dict[str, Any], dict[str, Any]]],
        region: str,
        based_on: dict[int, str],
    ) -> StaleWrite:
        """The error of the transaction's failed condition ``i`` (an op, or a fence after them)."""
        s = self.store
        if i >= len(ops):  # a subject fence: the subject was erased
            data_class, fence = fences[i - len(ops)][:2]
            return StaleWrite(
                data_class=data_class,
                key=s.named(data_class, fence),
                region=region,
                based_on="(blind write)",
                current=f"{current.get(VERSION_ATTR, '?')} (erased)",
            )
        return StaleWrite(
            data_class=ops[i][1],
            key=s.named(ops[i][1], keys[i]),
            region=region,
            based_on=based_on.get(i, "(blind write)"),
            current=str(current.get(VERSION_ATTR, "(missing)")),
        )

    def _subject_fences(
        self, ops: Sequence[Op], keys: list[dict[str, Any]]
    ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(class, fence key, ConditionCheck) for each subject written in a pinned class
        with a sort key: the write must not land once the subject is erased
        (:mod:`regions.subject_fence`)."""
        s = self.store
        out: dict[tuple[str, str], tuple[str, dict[str, Any], dict[str, Any]]] = {}
        for (kind, data_class, _), key in zip(ops, keys, strict=True):
            dc = s.policy.data_classes[data_class]
            if kind == "check" or not isinstance(dc, PinnedDataClass) or dc.sort_key is None:
                continue
            refuse_reserved(data_class, dc, key)
            subject = str(key[dc.partition_key])
            fence = fence_key(dc, subject)
            out[(data_class, subject)] = (
                data_class,
                fence,
                fence_check(s.routes.tables[data_class], s.serialize(data_class, fence)),
            )
        return list(out.values())

    def _item(self, i: int, op: Op, stamp: str, base: str | None, region: str) -> dict[str, Any]:
        s = self.store
        kind, data_class, body = op
        table = s.routes.tables[data_class]
        if kind == "check":
            if base is None:
                raise ConfigError(message=f"check #{i} needs based_on={{{i}: version}}")
            return {
                "ConditionCheck": {
                    "TableName": table,
                    "Key": s.serialize(data_class, s.key_of(data_class, body)),
                    "ConditionExpression": "#v = :base",
                    "ExpressionAttributeNames": {"#v": VERSION_ATTR},
                    "ExpressionAttributeValues": {":base": {"S": base}},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        if kind == "delete":
            body = tombstone_body(
                s.key_of(data_class, body), kind=DELETED, expires_at=s.expires_at()
            )
        # A token as single writes carry: a conflict this write loses is then named by
        # unguessable parts (residency.records.conflict_id).
        item = s.serialize(data_class, {**body, VERSION_ATTR: stamp, TOKEN_ATTR: s.new_token()})
        item[AT_ATTR] = {"S": region}
        item[VV_ATTR] = vv_value({base.rsplit(".", 1)[-1]: base} if base else {})
        cond, names, values = condition(base, False, stamp)
        return {
            "Put": {
                "TableName": table,
                "Item": item,
                "ConditionExpression": cond,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _cancelled(
        self, exc: BaseException, ops: Sequence[Op], keys: list[dict[str, Any]]
    ) -> tuple[int, dict[str, Any]] | None:
        """(index, regionkit's own attributes of the item) of the failed condition, if any."""
        if error_code(exc) != "TransactionCanceledException":
            if error_code(exc) in ("ValidationException",):
                raise BackendError(
                    operation="transaction", region="?", code=error_code(exc), reason="refused"
                ) from exc
            return None
        reasons = cast(dict[str, Any], getattr(exc, "response", {})).get("CancellationReasons", [])
        for i, reason in enumerate(reasons):
            if reason.get("Code") == "ConditionalCheckFailed":
                old = from_ddb(reason.get("Item"))
                return i, keep_reserved(old, keys[i] if i < len(keys) else {})
        return None
