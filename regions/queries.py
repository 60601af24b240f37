"""Queries a service actually makes: sort-key ranges, indexes, pages with cursors, batches.

* :meth:`Queries.query` sends **one** request and returns one :class:`Page` (a list
  of items with a ``cursor`` for the next page): a key condition on the partition (of
  the table or of a policy-declared index), an optional sort-key condition
  (:class:`Sort`), order, limit and projection. Every name and value goes through a
  placeholder, as real DynamoDB requires.
* The cursor is opaque: DynamoDB's ``LastEvaluatedKey`` sealed with AES-GCM under a key
  derived from the deployment's pseudonym secret, bound to the data class, the index and
  (for pinned data) the subject. A client cannot forge or replay it against another
  query, and no key value (perhaps an e-mail address) travels in clear.
* :meth:`Queries.batch_get` routes each key on its own (pinned: by its own subject, the
  guard applied per key), groups them per region, sends ``BatchGetItem`` and retries
  ``UnprocessedKeys`` with backoff until a deadline; keys still unread are returned,
  never dropped.
* :meth:`Queries.batch_write` stamps each write like a single one. ``BatchWriteItem``
  cannot carry a condition, and without one a batch could overwrite a newer version or
  walk through a move fence, so the writes go as conditional single requests,
  concurrently, one worker per region.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from regions.codec import VERSION_ATTR, from_ddb, to_ddb
from regions.codec import to_ddb_value as _value
from regions.routing import Route
from regions.tombstones import DEL_ATTR, EXP_ATTR, MOVED, is_live, tombstone_kind
from regions.versioned import MAX_HOPS, VersionedStore, Written
from regions.writes import Writer
from residency.errors import ConfigError, RegionkitError
from residency.policy import Index, PinnedDataClass

__all__ = ["BatchGetResult", "BatchWriteResult", "Page", "Queries", "Sort"]

SortOp = Literal["=", "<", "<=", ">", ">=", "between", "begins_with"]


@dataclass(frozen=True)
class Sort:
    """A condition on the sort key: ``Sort.ge("2026-")``, ``Sort.between(a, b)`` …"""

    op: SortOp
    values: tuple[Any, ...]

    @classmethod
    def eq(cls, v: Any) -> Sort:
        return cls("=", (v,))

    @classmethod
    def lt(cls, v: Any) -> Sort:
        return cls("<", (v,))

    @classmethod
    def le(cls, v: Any) -> Sort:
        return cls("<=", (v,))

    @classmethod
    def gt(cls, v: Any) -> Sort:
        return cls(">", (v,))

    @classmethod
    def ge(cls, v: Any) -> Sort:
        return cls(">=", (v,))

    @classmethod
    def between(cls, low: Any, high: Any) -> Sort:
        return cls("between", (low, high))

    @classmethod
    def begins_with(cls, prefix: str) -> Sort:
        return cls("begins_with", (prefix,))

    def expression(self, values: dict[str, Any]) -> str:
        for i, v in enumerate(self.values):
            values[f":s{i}"] = _value(v)
        if self.op == "between":
            return "#sk BETWEEN :s0 AND :s1"
        if self.op == "begins_with":
            return "begins_with(#sk, :s0)"
        return f"#sk {self.op} :s0"


class Page(list[dict[str, Any]]):
    """One page of items; ``cursor`` resumes after it (None: there is no more)."""

    cursor: str | None = None


@dataclass
class BatchGetResult:
    items: list[dict[str, Any]] = field(default_factory=list)
    unread: list[dict[str, Any]] = field(default_factory=list)  # keys not read by the deadline


@dataclass
class BatchWriteResult:
    written: list[Written] = field(default_factory=list)
    failed: list[tuple[dict[str, Any], RegionkitError]] = field(default_factory=list)


class Cursors:
    """Seal and open query cursors (AES-GCM, bound to the query they came from)."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    def seal(self, last_key: dict[str, Any], bound_to: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, json.dumps(last_key).encode(), bound_to.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, cursor: str, bound_to: str) -> dict[str, Any]:
        from cryptography.exceptions import InvalidTag

        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], bound_to.encode())
            out = json.loads(plain)
        except (ValueError, InvalidTag, TypeError):
            out = None
        if not isinstance(out, dict):
            raise ConfigError(
                message="the cursor is invalid, or was made for another query (data class, "
                "index or subject); start from the first page"
            )
        return out


class Queries:
    def __init__(self, store: VersionedStore, writer: Writer) -> None:
        self.store = store
        self.writer = writer
        self.cursors = Cursors(store.pseudonymize.derive_key("regionkit query cursor"))

    # --- query: one page per call ---

    def _index(self, data_class: str, index: str | None) -> Index | None:
        if index is None:
            return None
        dc = self.store.policy.data_class(data_class)
        for ix in dc.indexes:
            if ix.name == index:
                return ix
        known = ", ".join(ix.name for ix in dc.indexes) or "none"
        raise ConfigError(message=f"{data_class} declares no index {index!r} (declared: {known})")

    def query(
        self,
        data_class: str,
        partition_value: Any,
        subject: str | None,
        *,
        sort: Sort | None = None,
        descending: bool = False,
        limit: int | None = None,
        cursor: str | None = None,
        index: str | None = None,
        projection: Sequence[str] | None = None,
        consistent: bool = False,
    ) -> Page:
        ix = self._index(data_class, index)
        subject = self._query_subject(data_class, ix, partition_value, subject)
        if ix is not None and ix.kind == "gsi" and consistent:
            raise ConfigError(message="a global secondary index has no consistent reads")
        req = self._key_condition(data_class, ix, partition_value, sort)
        req["ScanIndexForward"] = not descending
        req["ConsistentRead"] = consistent
        if ix is not None:
            req["IndexName"] = ix.name
        if limit is not None:
            if limit < 1:
                raise ConfigError(message=f"limit must be at least 1, got {limit}")
            req["Limit"] = limit
        if projection:
            self._project(req, data_class, ix, projection)
        bound = f"{data_class}|{index or ''}|{subject or ''}|{partition_value}"
        if cursor is not None:
            req["ExclusiveStartKey"] = to_ddb(self.cursors.open(cursor, bound))
        return self._query_page(data_class, subject, ix, req, bound)

    def _query_subject(
        self, data_class: str, ix: Index | None, partition_value: Any, subject: str | None
    ) -> str | None:
        """Whose data a query reads: the key's subject, or (an index query) the given one."""
        s = self.store
        pinned = isinstance(s.policy.data_class(data_class), PinnedDataClass)
        if ix is None:
            return s.subject_of(data_class, {s.pk[data_class]: partition_value}, subject)
        if pinned and subject is None:
            raise ConfigError(
                message=f"an index query of pinned {data_class} needs subject= (whose "
                "jurisdiction's replica to read)"
            )
        return subject

    def _key_names(self, data_class: str, ix: Index | None) -> tuple[str, str | None]:
        """The partition and sort key names the query's table or index is keyed by."""
        s = self.store
        pk_name = (ix.partition_key if ix and ix.kind == "gsi" else None) or s.pk[data_class]
        sk_name = ix.sort_key if ix else s.sk[data_class]
        return pk_name, sk_name

    def _key_condition(
        self, data_class: str, ix: Index | None, partition_value: Any, sort: Sort | None
    ) -> dict[str, Any]:
        """The request's key condition, with its attribute names and values."""
        s = self.store
        pk_name, sk_name = self._key_names(data_class, ix)
        names: dict[str, str] = {"#pk": pk_name}
        values: dict[str, Any] = {
            ":pk": s.serialize_value(data_class, "partition", partition_value)
        }
        cond = "#pk = :pk"
        if sort is not None:
            if sk_name is None:
                raise ConfigError(message=f"{data_class} has no sort key to put a condition on")
            names["#sk"] = sk_name
            for i, v in enumerate(sort.values):  # refused by type before any request
                s.serialize_value(data_class, f"sort value {i}", v)
            cond += " AND " + sort.expression(values)
        return {
            "KeyConditionExpression": cond,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def _project(
        self, req: dict[str, Any], data_class: str, ix: Index | None, projection: Sequence[str]
    ) -> None:
        """Read only ``projection``, and what regionkit needs: keys, version, markers."""
        s = self.store
        pk_name, sk_name = self._key_names(data_class, ix)
        names: dict[str, str] = req["ExpressionAttributeNames"]
        keep = [*projection, s.pk[data_class], VERSION_ATTR, DEL_ATTR, EXP_ATTR]
        keep += [k for k in (s.sk[data_class], pk_name, sk_name) if k]
        for i, name in enumerate(dict.fromkeys(keep)):
            names[f"#p{i}"] = name
        req["ProjectionExpression"] = ", ".join(k for k in names if k.startswith("#p"))

    def _query_page(
        self,
        data_class: str,
        subject: str | None,
        ix: Index | None,
        req: dict[str, Any],
        bound: str,
    ) -> Page:
        """One page of the query, following a moved subject (base table queries only)."""
        s = self.store

        def call(route: Route, client: Any) -> dict[str, Any]:
            return dict(client.query(TableName=route.table_name, **req))

        for _ in range(MAX_HOPS):
            answer, _route = s.transport.call(s.decider(data_class, subject, "read"), "read", call)
            items = [from_ddb(i) or {} for i in answer.get("Items", [])]
            s.observe_many(items)
            moved = next((i for i in items if tombstone_kind(i) == MOVED), None)
            if ix is None and s._follow(data_class, subject, moved):
                continue
            now = s.wall()
            page = Page(i for i in items if is_live(i, now))
            last = answer.get("LastEvaluatedKey")
            page.cursor = self.cursors.seal(from_ddb(last) or {}, bound) if last else None
            return page
        raise s._too_many_hops(data_class, "read")

    # --- batches ---

    def _group(
        self, data_class: str, keys: Iterable[dict[str, Any]], op: Literal["read", "write"]
    ) -> dict[str, list[dict[str, Any]]]:
        """Keys per region, each routed by its own subject (the guard applies per key)."""
        s = self.store
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for key in keys:
            subject = s.subject_of(data_class, key, None)
            groups[s.decider(data_class, subject, op)(()).region].append(key)
        return groups

    def batch_get(
        self,
        data_class: str,
        keys: Sequence[dict[str, Any]],
        *,
        consistent: bool = False,
        deadline_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> BatchGetResult:
        s = self.store
        table = s.routes.tables[data_class]
        result = BatchGetResult()
        groups = self._group(data_class, keys, "read")

        def read(region: str, wanted: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
            # Through the transport (breaker, throttle retries, typed errors); the keys were
            # routed, guard included, by _group.
            route = Route(region, table, "batch read", False, data_class)
            found: list[dict[str, Any]] = []
            pending = [s.serialize(data_class, s.key_of(data_class, k)) for k in wanted]
            end, delay = clock() + deadline_s, 0.02
            while pending and clock() < end:
                chunk, pending = pending[:100], pending[100:]
                request = {table: {"Keys": chunk, "ConsistentRead": consistent}}
                answer: dict[str, Any] = s.transport.call_at(route, _batch_get(request))
                found += answer.get("Responses", {}).get(table, [])
                again = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
                if again:
                    pending = again + pending
                    time.sleep(delay * random.random())  # jittered backoff between retries
                    delay = min(delay * 2, 1.0)
            return found, pending

        if len(groups) == 1:  # one region: no thread to start
            outcomes = [read(*next(iter(groups.items())))]
        else:
            with ThreadPoolExecutor(max_workers=len(groups)) as pool:
                outcomes = list(pool.map(lambda kv: read(*kv), groups.items()))
        now = s.wall()
        for found, unread in outcomes:
            items = [from_ddb(raw) or {} for raw in found]
            s.observe_many(items)
            for item in items:
                kind = tombstone_kind(item)
                if kind == MOVED:  # a stale cache: this key follows its fence on its own
                    key = s.key_of(data_class, item)
                    got = s.get(data_class, key, s.subject_of(data_class, key, None), consistent)
                    if got is not None:
                        result.items.append(got)
                elif is_live(item, now):
                    result.items.append(item)
            result.unread += [from_ddb(k) or {} for k in unread]
        return result

    def batch_write(
        self,
        data_class: str,
        *,
        puts: Sequence[dict[str, Any]] = (),
        deletes: Sequence[dict[str, Any]] = (),
    ) -> BatchWriteResult:
        s = self.store
        jobs: list[tuple[str, dict[str, Any]]] = [("put", i) for i in puts]
        jobs += [("delete", k) for k in deletes]
        by_region: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for op, body in jobs:
            key = s.key_of(data_class, body)
            subject = s.subject_of(data_class, key, None)
            by_region[s.decider(data_class, subject, "write")(()).region].append((op, body))
        result = BatchWriteResult()

        def run(batch: list[tuple[str, dict[str, Any]]]) -> None:
            for op, body in batch:
                try:
                    if op == "put":
                        w = self.writer.put(data_class, body, None, None, False)
                    else:
                        w = self.writer.delete(data_class, s.key_of(data_class, body), None, None)
                    result.written.append(w)
                except RegionkitError as exc:
                    result.failed.append((s.key_of(data_class, body), exc))

        if len(by_region) <= 1:
            for batch in by_region.values():
                run(batch)
        else:
            with ThreadPoolExecutor(max_workers=len(by_region)) as pool:
                list(pool.map(run, by_region.values()))
        return result


def _batch_get(request: dict[str, Any]) -> Callable[[Route, Any], dict[str, Any]]:
    def send(_route: Route, client: Any) -> dict[str, Any]:
        return dict(client.batch_get_item(RequestItems=request))

    return send
