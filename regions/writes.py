"""Writes: stamped, conditional puts, updates and tombstone deletes, and merges.

The conditions are :func:`regions.conditions.condition`; this module sends them,
reads a failed condition's answer without keeping any value from it, follows a
``moved`` fence to the subject's new home, and merges where the data class names
a merge function. The region-directed writes of the move and erasure protocols
(:meth:`Writer.copy_at`, :meth:`Writer.fence_at`) are its base class's
(:mod:`regions.directed`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from regions.codec import (
    AT_ATTR,
    BASE_ATTR,
    RESERVED,
    TOKEN_ATTR,
    VERSION_ATTR,
    VV_ATTR,
    from_ddb,
)
from regions.codec import to_ddb_value as _to_value
from regions.conditions import condition, keep_reserved, vv_value
from regions.directed import DirectedWriter
from regions.routing import Route
from regions.tombstones import (
    DELETED,
    EXP_ATTR,
    TO_ATTR,
    tombstone_body,
    tombstone_kind,
)
from regions.transport import Decide, backend_error, error_code, region_of
from regions.versioned import MAX_HOPS, Written
from residency.errors import ConfigError, StaleWrite

__all__ = ["Writer"]

_CCF = "ConditionalCheckFailedException"
Call = Callable[[Route, Any], Any]


class Writer(DirectedWriter):
    """The write half of the protocol, over a :class:`VersionedStore`."""

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
        # Its stamp, unique to this writer (regions.hlc), is what its retry recognises;
        # the token keeps a conflict it loses from being named by guessable parts alone.
        body[TOKEN_ATTR] = s.new_token()
        if base:
            body[BASE_ATTR] = base
        ddb_body = s.serialize(data_class, body)
        cond, names, values = condition(base, False, stamp)

        call = self._fenced(
            data_class, key, subject, _conditional_put(ddb_body, vv, cond, names, values)
        )
        return self._write(data_class, key, subject, stamp, base, call, None, None)

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
