"""Writes: stamped, conditional puts, updates and tombstone deletes, and merges.

The conditions are :func:`regions.conditions.condition`; this module sends them,
reads a failed condition's answer without keeping any value from it, follows a
``moved`` fence to the subject's new home, and merges where the data class names
a merge function. It also holds the region-directed writes of the move and
erasure protocols (:meth:`Writer.copy_at`, :meth:`Writer.fence_at`), which use
the same stamps and tombstones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from regions.codec import (
    AT_ATTR,
    BASE_ATTR,
    EPOCH_ATTR,
    RESERVED,
    TOKEN_ATTR,
    VERSION_ATTR,
    VV_ATTR,
    from_ddb,
)
from regions.codec import to_ddb_value as _to_value
from regions.conditions import condition, keep_reserved, vv_value
from regions.routing import Route
from regions.subject_fence import fence_key, fenced_call, refuse_reserved
from regions.tombstones import (
    DEL_ATTR,
    DELETED,
    ERASED,
    EXP_ATTR,
    MOVED,
    TO_ATTR,
    tombstone_body,
    tombstone_kind,
)
from regions.transport import Decide, backend_error, error_code, region_of
from regions.versioned import MAX_HOPS, VersionedStore, Written
from residency.errors import BackendError, ConfigError, StaleWrite
from residency.policy import PinnedDataClass

__all__ = ["MoveSuperseded", "Writer"]

_CCF = "ConditionalCheckFailedException"
Call = Callable[[Route, Any], Any]


class Writer:
    """The write half of the protocol, over a :class:`VersionedStore`."""

    def __init__(self, store: VersionedStore) -> None:
        self.s = store

    # --- the public writes ---

    def put(
        self,
        data_class: str,
        item: dict[str, Any],
        subject: str | None,
        based_on: str | dict[str, Any] | None,
        create_only: bool,
        *,
        decide: Decide | None = None,
    ) -> Written:
        s = self.s
        if not RESERVED.isdisjoint(item):
            bad = sorted(RESERVED & item.keys())
            raise ConfigError(message=f"attributes {bad} are managed by regionkit")
        key = s.key_of(data_class, item)
        subject = s.subject_of(data_class, key, subject)
        if data_class not in s.pinned:
            s.guard.check_no_pii(op="write", data_class=data_class, item=item)
        stamp = s.clock.now_text()
        base, vv = s.causal_past(based_on, stamp)
        token = self.s.new_token()
        body = dict(item)
        body[VERSION_ATTR] = stamp
        body[TOKEN_ATTR] = token
        if base:
            body[BASE_ATTR] = base
        ddb_body = s.serialize(data_class, body)
        cond, names, values = condition(base, create_only, stamp, token)

        call = self._fenced(
            data_class, key, subject, _conditional_put(ddb_body, vv, cond, names, values)
        )
        return self._write(data_class, key, subject, stamp, base, call, item, decide)

    def update(
        self,
        data_class: str,
        key: dict[str, Any],
        changes: dict[str, Any],
        subject: str | None,
        based_on: str | dict[str, Any] | None,
    ) -> Written:
        s = self.s
        if not changes or RESERVED & changes.keys():
            raise ConfigError(message=f"update needs attributes to set, none of {sorted(RESERVED)}")
        subject = s.subject_of(data_class, key, subject)
        if data_class not in s.pinned:
            s.guard.check_no_pii(op="write", data_class=data_class, item=changes)
        stamp = s.clock.now_text()
        base, vv = s.causal_past(based_on, stamp)
        token = self.s.new_token()
        cond, names, values = condition(base, False, stamp, token)
        names.update({"#vv": VV_ATTR, "#at": AT_ATTR, "#exp": EXP_ATTR, "#to": TO_ATTR})
        names["#t"] = TOKEN_ATTR
        values[":v"] = {"S": stamp}
        values[":t"] = {"S": token}
        sets = ["#v = :v", "#t = :t", "#vv = :vv", "#at = :at"]
        ddb_changes = s.serialize(data_class, changes)
        for i, (k, v) in enumerate(ddb_changes.items()):
            names[f"#a{i}"] = k
            values[f":a{i}"] = v
            sets.append(f"#a{i} = :a{i}")
        if base:
            names["#b"] = BASE_ATTR
            values[":b"] = _to_value(base)
            sets.append("#b = :b")
        ddb_key = s.serialize(data_class, key)
        # An update over an older delete recreates the item: the tombstone marks go
        # (the expiry too, unless this update sets one itself).
        removes = ["#d", "#to"]
        if EXP_ATTR in changes:
            del names["#exp"]
        else:
            removes.append("#exp")
        expr = "SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes)

        def call(route: Route, client: Any) -> Any:
            attempt = dict(values)
            attempt[":at"] = {"S": route.region}
            attempt[":vv"] = vv_value(vv)
            return client.update_item(
                TableName=route.table_name,
                Key=ddb_key,
                UpdateExpression=expr,
                ConditionExpression=cond,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=attempt,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

        fenced = self._fenced(data_class, key, subject, call)
        return self._write(data_class, key, subject, stamp, base, fenced, None, None)

    def delete(
        self,
        data_class: str,
        key: dict[str, Any],
        subject: str | None,
        based_on: str | dict[str, Any] | None,
    ) -> Written:
        """A versioned delete: a ``deleted`` tombstone, conditional like a put."""
        s = self.s
        key = s.key_of(data_class, key)  # only the key goes into the tombstone
        subject = s.subject_of(data_class, key, subject)
        stamp = s.clock.now_text()
        base, vv = s.causal_past(based_on, stamp)
        body = tombstone_body(key, kind=DELETED, expires_at=s.expires_at())
        body[VERSION_ATTR] = stamp
        if base:
            body[BASE_ATTR] = base
        ddb_body = s.serialize(data_class, body)
        # A tombstone carries no token: its stamp, unique to this writer (regions.hlc),
        # is what its retry recognises.
        cond, names, values = condition(base, False, stamp)

        call = self._fenced(
            data_class, key, subject, _conditional_put(ddb_body, vv, cond, names, values)
        )
        return self._write(data_class, key, subject, stamp, base, call, None, None)

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

    # --- the common path: send, read a failed condition, follow, merge ---

    def _write(
        self,
        data_class: str,
        key: dict[str, Any],
        subject: str | None,
        stamp: str,
        based_on: str | None,
        call: Call,
        item: dict[str, Any] | None,
        decide: Decide | None,
    ) -> Written:
        s = self.s
        current: dict[str, Any] = {}
        region = "?"
        for _ in range(MAX_HOPS):
            route, current, region = self._attempt(
                decide or s.decider(data_class, subject, "write"), call, data_class, key
            )
            if route is not None:
                return Written(stamp, route)
            s.observe(current)
            if decide is None and s._follow(data_class, subject, current):
                continue
            merge = s.merges.get(data_class)
            if item is not None and merge and current and not tombstone_kind(current):
                return self._merge_write(data_class, merge, item, current, subject)
            break
        raise StaleWrite(
            data_class=data_class,
            key=s.named(data_class, key),
            region=region,
            based_on=based_on or "(blind write)",
            current=_describe_current(current),
        )

    def _attempt(
        self, decide: Decide, call: Call, data_class: str, key: dict[str, Any]
    ) -> tuple[Route | None, dict[str, Any], str]:
        """(route, {}, region) on success; (None, what the item holds, region) on a lost condition.

        For a pinned class only regionkit's own attributes of the old item survive
        this function; nothing of it is chained to any exception.
        """
        s = self.s
        try:
            _, route = s.transport.call(decide, "write", call)
            return route, {}, route.region
        except Exception as exc:
            # botocore is imported only here, off the path every successful write takes.
            from botocore.exceptions import ClientError

            if not isinstance(exc, ClientError):
                raise
            code = error_code(exc)
            region = region_of(exc, s.region or "?")
            if code != _CCF:
                reason = str(exc.response.get("Error", {}).get("Message", ""))[:200]
                raise backend_error("write", region, exc, reason) from exc
            old = from_ddb(cast(dict[str, Any] | None, exc.response.get("Item")))
        current = keep_reserved(old, key) if data_class in s.pinned or not old else old
        return None, current, region

    def _merge_write(
        self,
        data_class: str,
        ref: str,
        ours: dict[str, Any],
        theirs: dict[str, Any],
        subject: str | None,
    ) -> Written:
        s = self.s
        merge = s.merge_resolver(data_class, ref)
        for _ in range(5):
            merged = merge(
                {k: v for k, v in ours.items() if k not in RESERVED},
                {k: v for k, v in theirs.items() if k not in RESERVED},
            )
            try:
                w = self.put(
                    data_class,
                    {k: v for k, v in merged.items() if k not in RESERVED},
                    subject,
                    str(theirs.get(VERSION_ATTR)),
                    False,
                )
            except StaleWrite:
                theirs = s.get(data_class, s.key_of(data_class, ours), subject, True) or {}
                continue
            return Written(w.version, w.route, merged=True)
        raise StaleWrite(
            data_class=data_class,
            key=s.named(data_class, s.key_of(data_class, ours)),
            region=s.region or "?",
            based_on="(merge)",
            current=_describe_current(theirs),
        )

    # --- region-directed writes of the move and erasure protocols ---

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


def _conditional_put(
    ddb_body: dict[str, Any],
    vv: dict[str, str],
    cond: str,
    names: dict[str, str],
    values: dict[str, Any],
) -> Call:
    """The request of a stamped put (data or tombstone), sent to whichever route is decided."""

    vv_ddb = vv_value(vv)

    def call(route: Route, client: Any) -> Any:
        # The landing region is known only now (a retry may fail over). The body is this
        # write's own, and each attempt sets both attributes, so it is filled in place.
        ddb_body[AT_ATTR] = {"S": route.region}
        ddb_body[VV_ATTR] = vv_ddb
        return client.put_item(
            TableName=route.table_name,
            Item=ddb_body,
            ConditionExpression=cond,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    return call


def _describe_current(current: dict[str, Any]) -> str:
    kind = tombstone_kind(current)
    version = str(current.get(VERSION_ATTR, "(unknown)"))
    return f"{version} ({kind})" if kind else version
