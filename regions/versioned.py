"""The versioned, conditional read/write protocol of every data class.

Every write is stamped with an HLC version and is conditional, evaluated by
DynamoDB in the region it lands in:

* a blind write succeeds unless the item holds a newer version;
* a write ``based_on`` a version read earlier is a compare-and-set;
* ``create_only`` succeeds only on a missing item (or over an older delete);
* every form also accepts its own earlier attempt, by request token (``rk_tok``),
  so a write retried in another region after a timeout is idempotent;
* every form is refused by a ``moved`` or ``erased`` fence (:mod:`regions.tombstones`).

A delete writes a tombstone, never a bare ``DeleteItem``. Reads hide tombstones;
a pinned read or write that meets a ``moved`` fence asks the directory
(:class:`Homes`) to learn the new home from it and retries there.

Nothing a failed request returns is kept in an exception: a condition failure's
old item is reduced to regionkit's own attributes before the ``except`` block
ends, and the error is raised outside it, so ``__context__`` is empty too.
Items are named in errors by keyed pseudonym.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from regions.codec import (
    AT_ATTR,
    RESERVED,
    TOKEN_ATTR,
    VERSION_ATTR,
    VV_ATTR,
    from_ddb,
    to_ddb,
)
from regions.codec import to_ddb_value as _to_value
from regions.directory import DirectoryEntry
from regions.hlc import HLC, ClockDriftError, Stamp
from regions.ids import parse_user_id
from regions.routing import Op, Route, RouteTable
from regions.tombstones import (
    DEL_ATTR,
    DELETED,
    FENCE,
    MOVED,
    TO_ATTR,
    is_live,
    tombstone_kind,
)
from regions.transport import Decide, Transport
from residency.errors import (
    BackendError,
    ConfigError,
    MalformedId,
    RegionUnavailable,
    describe_value,
)
from residency.guard import ResidencyGuard
from residency.logs import get_logger
from residency.policy import GlobalDataClass, MergeConflicts, Policy
from residency.pseudonym import Pseudonymizer

__all__ = [
    "Homes",
    "VersionedStore",
    "Written",
    "condition",
    "directed",
    "keep_reserved",
    "vv_value",
]

log = get_logger("regionkit.router")

MAX_HOPS = 3  # a moved fence is followed at most this often per request
Merge = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Written:
    version: str
    route: Route
    merged: bool = False


class Homes(Protocol):
    """Where a pinned subject lives (implemented by :class:`regions.users.Users`)."""

    def home_for(self, user_id: str, op: Op) -> DirectoryEntry: ...

    def learn_moved(self, user_id: str, to_region: str) -> DirectoryEntry: ...


class VersionedStore:
    """get/put/update/delete/query with HLC stamps, conditions and tombstones."""

    def __init__(
        self,
        policy: Policy,
        routes: RouteTable,
        transport: Transport,
        clock: HLC,
        guard: ResidencyGuard,
        homes: Homes,
        pseudonymize: Pseudonymizer,
        *,
        region: str | None,
        merge_resolver: Callable[[str, str], Merge],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.routes = routes
        self.transport = transport
        self.clock = clock
        self.guard = guard
        self.homes = homes
        self.pseudonymize = pseudonymize
        self.region = region
        self.merge_resolver = merge_resolver
        self.wall = wall
        self.retention_s = policy.system.tombstone_retention_days * 86_400
        dcs = policy.data_classes
        self.pk = {n: dc.partition_key for n, dc in dcs.items()}
        self.sk = {n: dc.sort_key for n, dc in dcs.items()}
        self.pinned = frozenset(n for n, dc in dcs.items() if dc.kind == "pinned")
        self.merges = {
            n: dc.conflicts.merge
            for n, dc in dcs.items()
            if isinstance(dc, GlobalDataClass) and isinstance(dc.conflicts, MergeConflicts)
        }
        self.drift_flags = 0
        # Write request tokens (rk_tok); the simulation replaces this with a seeded source.
        self.new_token: Callable[[], str] = _random_token
        self._lock = threading.Lock()
        self._vv_cache: dict[str, dict[str, str]] = {}

    # --- deciding where a request goes ---

    def decider(self, data_class: str, subject: str | None, op: Op) -> Decide:
        kind = self.routes.kinds.get(data_class)
        if kind is None:
            self.policy.data_class(data_class)  # raises UnknownDataClass naming the known ones
        routes = self.routes
        if kind == "pinned":
            if subject is None:
                raise MalformedId(
                    kind="subject", value="none", reason=f"{data_class} is pinned: pass its key"
                )
            entry = self.homes.home_for(subject, op)
            home, jid = entry.home_region, entry.jurisdiction
            return lambda ex: routes.pick(data_class, home, jid, op, ex)
        origin = self.region
        if origin is None:
            origin = (
                self.homes.home_for(subject, "read").home_region
                if subject
                else self.policy.regions[0]
            )
        return lambda ex: routes.pick(data_class, origin, None, op, ex)

    def subject_of(self, data_class: str, key: dict[str, Any], subject: str | None) -> str | None:
        """For a pinned class the item's own key is the subject; a disagreeing claim is refused."""
        if data_class not in self.pinned:
            self.policy.data_class(data_class)  # an unknown class fails here, by name
            return subject
        pk = self.pk[data_class]
        value = key.get(pk)
        if not isinstance(value, str):
            raise MalformedId(
                kind="key",
                value=describe_value(value),
                reason=f"{data_class}.{pk} must be the subject's user ID",
            )
        parse_user_id(value)
        if subject is not None and subject != value:
            raise ConfigError(
                message=f"subject= names another user than the {data_class} item's key "
                f"{pk!r}; a pinned item belongs to the user its key names, so drop subject="
            )
        return value

    def key_of(self, data_class: str, item: dict[str, Any]) -> dict[str, Any]:
        pk, sk = self.pk[data_class], self.sk[data_class]
        if pk not in item:
            raise ConfigError(message=f"{data_class} items need the partition key {pk!r}")
        key = {pk: item[pk]}
        if sk is not None:
            if sk not in item:
                raise ConfigError(message=f"{data_class} items need the sort key {sk!r}")
            key[sk] = item[sk]
        return key

    def named(self, data_class: str, key: dict[str, Any]) -> str:
        """The item's keyed pseudonym, for messages."""
        return self.pseudonymize(
            "\0".join(str(v) for v in key.values()), scope=self.routes.tables[data_class]
        )

    def serialize(self, data_class: str, item: Mapping[str, Any]) -> dict[str, Any]:
        """DynamoDB JSON of ``item``; an unsupported value is named by attribute and type only.

        The error is raised outside the ``except`` block: boto3's own message quotes the
        value, and botocore's parameter validation would quote a non-string map key.
        """
        bad: tuple[str, str] | None = _bad_map_key(item)
        if bad is None:
            try:
                return to_ddb(dict(item))
            except (TypeError, ValueError, ArithmeticError):
                bad = _first_unserializable(item)
        raise ConfigError(
            message=f"{data_class}: attribute {bad[0]!r} holds a {bad[1]} value, which DynamoDB "
            "cannot store; use str, int, Decimal, bool, bytes, list, dict or set "
            "(dates as ISO strings, map keys as strings)"
        )

    def serialize_value(self, data_class: str, what: str, value: Any) -> Any:
        """One value (a partition or sort-key value) as DynamoDB JSON, named by type only."""
        return self.serialize(data_class, {what: value})[what]

    # --- reads ---

    def get(
        self,
        data_class: str,
        key: dict[str, Any],
        subject: str | None,
        consistent: bool,
        *,
        decide: Decide | None = None,
    ) -> dict[str, Any] | None:
        ddb_key = self.serialize(data_class, key)

        def call(route: Route, client: Any) -> Any:
            return client.get_item(
                TableName=route.table_name, Key=ddb_key, ConsistentRead=consistent
            ).get("Item")

        for _ in range(MAX_HOPS):
            raw, _route = self.transport.call(
                decide or self.decider(data_class, subject, "read"),
                "read",
                call,
                # hedging hook (issue 15 item 3; the transport's): an eventually consistent
                # read may be answered by another replica; a strongly consistent one may not
                hedge=not consistent,
            )
            item = from_ddb(raw)
            self.observe(item)
            if decide is not None or not self._follow(data_class, subject, item):
                return item if is_live(item, self.wall()) else None
        raise self._too_many_hops(data_class, "read")

    def query(
        self,
        data_class: str,
        partition_value: Any,
        subject: str | None,
        *,
        limit: int | None,
        consistent: bool,
    ) -> list[dict[str, Any]]:
        pk = self.pk[data_class]
        value = _to_value(partition_value)

        def call(route: Route, client: Any) -> list[dict[str, Any]]:
            return self._query_pages(client, route.table_name, pk, value, limit, consistent)

        for _ in range(MAX_HOPS):
            decide = self.decider(data_class, subject, "read")
            raw, _route = self.transport.call(decide, "read", call)
            items = [from_ddb(i) or {} for i in raw]
            for item in items:
                self.observe(item)
            moved = next((i for i in items if tombstone_kind(i) == MOVED), None)
            if not self._follow(data_class, subject, moved):
                now = self.wall()
                live = [i for i in items if is_live(i, now)]
                return live[:limit] if limit is not None else live
        raise self._too_many_hops(data_class, "read")

    def _query_pages(
        self,
        client: Any,
        table: str,
        pk: str,
        value: Any,
        limit: int | None,
        consistent: bool,
    ) -> list[dict[str, Any]]:
        """Pages until ``limit`` live items (tombstones do not count) or the end."""
        out: list[dict[str, Any]] = []
        live = 0
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": pk},
            "ExpressionAttributeValues": {":pk": value},
            "ConsistentRead": consistent,
        }
        while True:
            if limit is not None:
                kwargs["Limit"] = max(1, limit - live)
            page = client.query(**kwargs)
            got = page.get("Items", [])
            out.extend(got)
            now = self.wall()
            live += sum(1 for i in got if is_live(from_ddb(i), now))
            start = page.get("LastEvaluatedKey")
            if not start or (limit is not None and live >= limit):
                return out
            kwargs["ExclusiveStartKey"] = start

    def read_at(
        self, data_class: str, subject: str, region: str, jurisdiction: str
    ) -> list[dict[str, Any]]:
        """Every item (tombstones included) of a pinned subject in one region, consistently."""
        route = self.routes.at(data_class, region, jurisdiction, "read")
        pk, value = self.pk[data_class], _to_value(subject)

        def call(r: Route, client: Any) -> list[dict[str, Any]]:
            return self._query_pages(client, r.table_name, pk, value, None, True)

        items = [from_ddb(i) or {} for i in self.transport.call_at(route, call)]
        for item in items:
            self.observe(item)  # a fence written next is stamped after all of them
        return items

    def _follow(self, data_class: str, subject: str | None, item: dict[str, Any] | None) -> bool:
        """A pinned request met a ``moved`` fence: learn the new home; True to retry there."""
        if subject is None or data_class not in self.pinned or tombstone_kind(item) != MOVED:
            return False
        assert item is not None
        self.homes.learn_moved(subject, str(item[TO_ATTR]))
        log.info("followed a move fence", data_class=data_class)
        return True

    def _too_many_hops(self, data_class: str, op: str) -> BackendError:
        return BackendError(
            operation=op,
            region="several",
            code="MoveLoop",
            reason=f"{data_class}: {MAX_HOPS} move fences in a row; run `regionkit users "
            "move --resume` for this user",
        )

    # --- clocks and causal history ---

    def observe(self, item: dict[str, Any] | None) -> None:
        """Merge a read item's stamp into our clock, flagging (not adopting) a drifted one."""
        if not item or VERSION_ATTR not in item:
            return
        vv = item.get(VV_ATTR)
        if isinstance(vv, dict):
            own = dict(vv)
            at = item.get(AT_ATTR)
            if isinstance(at, str):
                own[at] = max(str(item[VERSION_ATTR]), str(own.get(at, "")))
            with self._lock:
                self._vv_cache[str(item[VERSION_ATTR])] = own
                if len(self._vv_cache) > 10_000:
                    self._vv_cache.pop(next(iter(self._vv_cache)))
        try:
            self.clock.observe(Stamp.parse(str(item[VERSION_ATTR])))
        except ClockDriftError as exc:
            with self._lock:
                self.drift_flags += 1
            log.warning(
                "clock drift flagged",
                stamp_region=getattr(exc, "region", None),
                ahead_ms=getattr(exc, "ahead_ms", None),
            )
        except MalformedId:
            log.warning("unparseable version stamp ignored")

    def observe_many(self, items: list[dict[str, Any]]) -> None:
        """The clock learns the newest stamp of a page or batch (one parse, not one per item).

        (Callers that write back ``based_on=item`` carry the item's own version vector.)
        """
        newest = max((str(i[VERSION_ATTR]) for i in items if VERSION_ATTR in i), default=None)
        if newest is not None:
            self.observe({VERSION_ATTR: newest})

    def causal_past(
        self, based_on: str | dict[str, Any] | None, stamp: str
    ) -> tuple[str | None, dict[str, str]]:
        """The base version and the version vector of a new write stamped ``stamp``."""
        if isinstance(based_on, dict):
            base = based_on.get(VERSION_ATTR)
            vv = dict(based_on.get(VV_ATTR) or {})
            if base:
                at = str(based_on.get(AT_ATTR) or str(base).rsplit(".", 1)[-1])
                vv[at] = max(str(base), vv.get(at, ""))
            based_on = str(base) if base else None
        elif based_on:
            with self._lock:
                vv = dict(self._vv_cache.get(based_on, {}))
            if not vv:  # never read here: its landing region is unknown, assume its writer's
                vv[based_on.rsplit(".", 1)[-1]] = based_on
        else:
            vv = {}
        if based_on and Stamp.parse(based_on) >= Stamp.parse(stamp):
            # The version we read is ahead of our clock by more than the allowed offset
            # (observe() refused to adopt it). Writing now would order our write before
            # the one it is based on: refuse instead.
            base_stamp = Stamp.parse(based_on)
            raise ClockDriftError(
                stamp=based_on,
                region=base_stamp.region,
                ahead_ms=base_stamp.l - Stamp.parse(stamp).l,
                max_offset_ms=self.clock.max_offset_ms,
            )
        return based_on, vv

    def expires_at(self) -> int:
        """The TTL (epoch seconds) of a tombstone written now."""
        return int(self.wall()) + self.retention_s


def _random_token() -> str:
    """A write request's idempotency token: 64 random bits, kept across its retries."""
    import secrets

    return secrets.token_hex(8)


def directed(route: Route) -> Decide:
    """A decision that is always ``route``, with no failover (the caller named the region)."""

    def decide(exclude: tuple[str, ...]) -> Route:
        if exclude:
            raise RegionUnavailable(
                data_class=route.data_class, scope=route.region, reason="the named region failed"
            )
        return route

    return decide


def condition(
    based_on: str | None, create_only: bool, stamp: str, token: str | None = None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The write condition, its names and values.

    Each form accepts the write's own earlier attempt, recognised by its request
    ``token`` (``rk_tok``), never by stamp equality: a retry after a timeout, in
    the same or another region, is idempotent, and another writer's item is never
    taken for ours. Only names and values the expression uses are returned (real
    DynamoDB rejects unused ones). Without a token (older callers) the write's
    own stamp stands in for it; stamps are unique per writer (:mod:`regions.hlc`).
    """
    names = {"#v": VERSION_ATTR, "#d": DEL_ATTR}
    values: dict[str, Any] = {":deleted": {"S": DELETED}}
    if token is not None:
        names["#t"] = TOKEN_ATTR
        values[":t"] = {"S": token}
        mine = "#t = :t"
    else:
        values[":v"] = {"S": stamp}
        mine = "#v = :v"
    if create_only:  # a missing item, our own retry, or an older delete
        values[":v"] = {"S": stamp}
        return (
            f"attribute_not_exists(#v) OR {mine} OR (#d = :deleted AND #v < :v)",
            names,
            values,
        )
    if based_on:
        values[":base"] = {"S": based_on}
        return f"(#v = :base OR {mine}) AND {FENCE}", names, values
    values[":v"] = {"S": stamp}
    return f"(attribute_not_exists(#v) OR #v < :v OR {mine}) AND {FENCE}", names, values


def vv_value(vv: dict[str, str]) -> dict[str, Any]:
    """A version vector as DynamoDB JSON: the write's ancestors only, not itself."""
    return {"M": {r: {"S": v} for r, v in vv.items()}}


def _bad_map_key(item: Mapping[str, Any]) -> tuple[str, str] | None:
    """(top-level attribute, "map key of type T") for a non-string key at any depth."""

    def walk(v: Any, depth: int) -> str | None:
        if depth > 40:
            return None
        if isinstance(v, Mapping):
            for k, x in v.items():
                if not isinstance(k, str):
                    return f"map key of type {type(k).__name__}"
                found = walk(x, depth + 1)
                if found:
                    return found
        elif isinstance(v, (list, tuple)):
            for x in v:
                found = walk(x, depth + 1)
                if found:
                    return found
        return None

    for name, value in item.items():
        found = walk(value, 0)
        if found:
            return name, found
    return None


def _first_unserializable(item: Mapping[str, Any]) -> tuple[str, str]:
    for name, value in item.items():
        try:
            to_ddb({name: value})
        except (TypeError, ValueError, ArithmeticError):
            return name, type(value).__name__
    return "?", "unknown"


def keep_reserved(item: dict[str, Any] | None, key: dict[str, Any]) -> dict[str, Any]:
    """Only regionkit's own attributes (and the key) of ``item``: never a profile's values."""
    if not item:
        return {}
    out = {k: v for k, v in item.items() if k in RESERVED}
    out.update(key)
    return out
