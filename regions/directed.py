"""Region-directed writes: the move and erasure protocols' copies and fences.

A move copies a user's pinned items into the new home and fences the old regions; an
erasure fences every replica. Each of these writes goes to one named region (no
routing, no failover: the protocol chooses the region), uses the same stamps and
tombstones as the routed writes of :mod:`regions.writes`, and carries the move's
*epoch* (``rk_mv``) so that a stalled move never overwrites what a later move or an
erasure wrote (:mod:`regions.moves` has the protocol). A class with a sort key also
checks the subject fence (:mod:`regions.subject_fence`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from regions.codec import AT_ATTR, EPOCH_ATTR, VERSION_ATTR, from_ddb
from regions.routing import Route
from regions.subject_fence import fence_key, fenced_call, refuse_reserved
from regions.tombstones import (
    DEL_ATTR,
    DELETED,
    ERASED,
    MOVED,
    TO_ATTR,
    tombstone_body,
    tombstone_kind,
)
from regions.transport import error_code
from regions.versioned import VersionedStore
from residency.errors import BackendError
from residency.policy import PinnedDataClass

__all__ = ["DirectedWriter", "MoveSuperseded"]

_CCF = "ConditionalCheckFailedException"
Call = Callable[[Route, Any], Any]


class DirectedWriter:
    """The writes a protocol sends to one region it names; :class:`regions.writes.Writer`
    adds the routed writes."""

    def __init__(self, store: VersionedStore) -> None:
        self.s = store

    def _fenced(
        self, data_class: str, key: dict[str, Any], subject: str | None, call: Call
    ) -> Call:
        """A pinned class with a sort key: the write also checks the subject's fence
        (:mod:`regions.subject_fence`), atomically."""
        dc = self.s.policy.data_classes[data_class]
        if not isinstance(dc, PinnedDataClass) or dc.sort_key is None or subject is None:
            return call
        refuse_reserved(data_class, dc, key)
        return fenced_call(call, self.s.serialize(data_class, fence_key(dc, subject)))

    def copy_at(
        self,
        route: Route,
        item: dict[str, Any],
        *,
        epoch: str,
        before_send: Callable[[], None] | None = None,
    ) -> bool:
        """Write a pinned item (or a ``deleted`` tombstone) for the move of ``epoch``,
        keeping its version, unless the region holds a newer one.

        What an *earlier* move or the original write left (the same version, or a
        ``moved`` fence whatever its stamp: a user moving back) is written again with
        this move's epoch and a new write time, so that last-writer-wins keeps it over
        anything older still replicating into the region; only this path can. What
        *this* move already wrote there is not rewritten (a late retry must not win over
        a newer write another replica holds). Returns True if it wrote. Raises
        :class:`MoveSuperseded` when the region holds what a later move wrote (its
        epoch is in ``rk_mv``) or an erasure's fence. ``before_send`` runs right before
        each attempt is sent (the move checks there that it still owns the user).
        """
        s = self.s
        drop = (TO_ATTR, EPOCH_ATTR) + (() if tombstone_kind(item) == DELETED else (DEL_ATTR,))
        body = {k: v for k, v in item.items() if k not in drop}
        body[EPOCH_ATTR] = epoch
        ddb_item = s.serialize(route.data_class, body)
        cond = (
            "(attribute_not_exists(#v) OR #v < :v OR ((#v = :v OR #d = :moved) AND "
            f"{_EARLIER_MOVE})) AND {_NO_LATER_MOVE}"
        )

        def call(r: Route, client: Any) -> Any:
            if before_send is not None:
                before_send()
            return client.put_item(
                TableName=r.table_name,
                Item=ddb_item,
                ConditionExpression=cond,
                ExpressionAttributeNames={"#v": VERSION_ATTR, "#d": DEL_ATTR, "#mv": EPOCH_ATTR},
                ExpressionAttributeValues={
                    ":v": {"S": str(item[VERSION_ATTR])},
                    ":moved": {"S": MOVED},
                    ":erased": {"S": ERASED},
                    ":e": {"S": epoch},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

        # A class with a sort key: the copy also checks the subject fence, so a stalled
        # move cannot copy an erased user's item into a region the erasure never saw it in.
        dc_key = s.key_of(route.data_class, item)
        subject = str(dc_key[s.pk[route.data_class]])
        return (
            self._directed(route, self._fenced(route.data_class, dc_key, subject, call), epoch)
            is None
        )

    def fence_at(
        self,
        route: Route,
        key: dict[str, Any],
        *,
        kind: str,
        newest: str,
        to_region: str | None = None,
        epoch: str | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> bool:
        """Replace the item with a fence tombstone unless it changed past ``newest``.

        ``newest`` is the newest version the caller has secured (copied or erased);
        a write that landed after it makes this return False, and the caller starts
        its round again. An erasure (no ``epoch``) re-fences an item it fenced before.

        A move's fence (``epoch``) replaces data or a ``deleted`` tombstone up to
        ``newest``, and an earlier move's ``moved`` fence whatever its stamp (rewritten
        with a new write time, so that data still replicating into the region from
        before this move cannot win over it). A fence of this move counts as fenced
        and is not rewritten. It raises :class:`MoveSuperseded` when the item is an
        erasure's fence or was written by a later move.
        """
        s = self.s
        body = tombstone_body(key, kind=kind, expires_at=s.expires_at(), to_region=to_region)
        body[VERSION_ATTR] = s.clock.now_text()
        body[AT_ATTR] = route.region
        names = {"#v": VERSION_ATTR, "#d": DEL_ATTR}
        values = {":newest": {"S": newest or "0"}, ":kind": {"S": kind}}
        cond = "attribute_not_exists(#v) OR #v <= :newest OR #d = :kind"
        if epoch is not None:
            body[EPOCH_ATTR] = epoch
            cond = (
                "(attribute_not_exists(#v) "
                "OR (#v <= :newest AND (attribute_not_exists(#d) OR #d = :deleted)) "
                f"OR (#d = :moved AND {_EARLIER_MOVE})) AND {_NO_LATER_MOVE}"
            )
            names["#mv"] = EPOCH_ATTR
            values = {
                ":newest": {"S": newest or "0"},
                ":deleted": {"S": DELETED},
                ":moved": {"S": MOVED},
                ":erased": {"S": ERASED},
                ":e": {"S": epoch},
            }
        ddb_item = s.serialize(route.data_class, body)

        def call(r: Route, client: Any) -> Any:
            if before_send is not None:
                before_send()
            return client.put_item(
                TableName=r.table_name,
                Item=ddb_item,
                ConditionExpression=cond,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                **({"ReturnValuesOnConditionCheckFailure": "ALL_OLD"} if epoch else {}),
            )

        met = self._directed(route, call, epoch)
        # A move's condition admits every fence but its own: meeting a ``moved`` fence
        # means this move fenced the item already.
        return met is None or (epoch is not None and tombstone_kind(met) == MOVED)

    def _directed(
        self, route: Route, call: Call, epoch: str | None = None
    ) -> dict[str, Any] | None:
        """Send a region-directed write: None if it was written, else the item its
        condition met (``{}`` when the answer did not include it). For a move's write
        (``epoch``) meeting an erasure's fence or a later move's write, raises
        :class:`MoveSuperseded` (the request asked for the item back)."""
        from botocore.exceptions import ClientError

        try:
            self.s.transport.call_at(route, call)
        except ClientError as exc:
            if error_code(exc) != _CCF:
                raise BackendError(
                    operation="write", region=route.region, code=error_code(exc), reason="refused"
                ) from exc
            met = from_ddb(cast("dict[str, Any] | None", exc.response.get("Item"))) or {}
            if epoch is not None and (
                tombstone_kind(met) == ERASED or str(met.get(EPOCH_ATTR, "")) > epoch
            ):
                raise MoveSuperseded(route.region) from None
            return met
        return None


class MoveSuperseded(Exception):
    """A move's write met an erasure's fence or a later move's write (in ``region``)."""

    def __init__(self, region: str) -> None:
        super().__init__(region)
        self.region = region


# What a move may write over again (with its own epoch and a new write time).
_EARLIER_MOVE = "(attribute_not_exists(#mv) OR #mv < :e)"
# A move's writes never replace an erasure's fence or what a later move wrote.
_NO_LATER_MOVE = (
    "(attribute_not_exists(#d) OR #d <> :erased) AND (attribute_not_exists(#mv) OR #mv <= :e)"
)
